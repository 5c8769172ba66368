"""Scoring: MMPose 0.x rescoring and OKS NMS, COCO keypoint AP/AR (pycocotools, xtcocotools-equal), COCO-WholeBody
per-part AP/AR, PCK/AUC/EPE and per-keypoint AP, and the results-file loader behind `evaluate --predictions`.

Keypoint arrays are `(K, 3)` = x, y, score (predictions) or x, y, visibility (ground truth); the COCO files hold
them flat, `[x, y, s] * K`. Every AP/AR number is computed by pycocotools' COCOeval; what MMPose does differently
through xtcocotools is reproduced by preparing the ground truth and detections fed to it (see `_coco_eval`).
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posecli.datasets.meta import BUILTIN, DatasetMeta, load_builtin, resolve_meta
from posecli.datasets.wholebody import WHOLEBODY_FIELDS, WHOLEBODY_PARTS, is_wholebody, merge_wholebody
from posecli.errors import PoseCliError
from posecli.files import is_finite_number, load_json_file

STAT_NAMES = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
EXTRA_NAMES = ("PCK@0.05", "PCK@0.1", "PCK@0.2", "AUC", "EPE")  # extra_metrics; WholeBody adds <part>_AP/_AR
WHOLEBODY_EVAL_PARTS = ("body", "foot", "face", "lefthand", "righthand", "wholebody")
PCK_THRESHOLDS = (0.05, 0.1, 0.2)
AUC_MAX_THRESHOLD = 0.5
AUC_STEPS = 50  # thresholds 0, 0.01, ..., 0.5


# ----------------------------------------------------------------------------------------- rescoring and NMS
def rescore(people: list[dict[str, Any]], vis_thr: float) -> list[dict[str, Any]]:
    """MMPose 0.x rescoring: score = box score x mean of the keypoint scores above vis_thr (0 if none is)."""
    out = []
    for person in people:
        scores = np.asarray(person["keypoints"])[:, 2]  # (K,)
        valid = scores[scores > vis_thr]
        # MMPose adds the scores one by one in their own dtype (float32 from the model): cumsum is that sum.
        kpt_score = np.cumsum(valid)[-1] / valid.size if valid.size else 0
        box_score = scores.dtype.type(person["score"])
        out.append({**person, "score": float(kpt_score * box_score)})
    return out


def oks_iou(
    g: np.ndarray,
    d: np.ndarray,
    area_g: float,
    area_d: np.ndarray,
    sigmas: np.ndarray | list[float],
    vis_thr: float | None = None,
) -> np.ndarray:
    """OKS of one person g (3K,) against candidates d (N, 3K), with the mean of the two areas (MMPose 0.x oks_iou)."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    variances = (sigmas * 2) ** 2
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(len(d), dtype=np.float32)  # float32 as in MMPose, so `<= thr` ties break the same way
    for n in range(len(d)):
        dx = d[n, 0::3] - xg
        dy = d[n, 1::3] - yg
        e = (dx**2 + dy**2) / variances / ((area_g + area_d[n]) / 2 + np.spacing(1)) / 2
        if vis_thr is not None:
            # MMPose writes `list(vg > thr) and list(vd > thr)`: Python's `and` returns the second list, so
            # only the candidate's own scores select keypoints. Kept for identical NMS decisions.
            e = e[d[n, 2::3] > vis_thr]
        ious[n] = np.sum(np.exp(-e)) / len(e) if len(e) != 0 else 0.0
    return ious


def _nms_arrays(people: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.array([p["score"] for p in people])  # (N,)
    kpts = np.array([np.asarray(p["keypoints"]).reshape(-1) for p in people])  # (N, 3K)
    areas = np.array([p["area"] for p in people])  # (N,)
    return scores, kpts, areas


def oks_nms(
    people: list[dict[str, Any]], oks_thr: float, sigmas: np.ndarray | list[float], vis_thr: float | None = None
) -> list[int]:
    """Greedy OKS NMS of one image's people (`keypoints` (K,3), `area`, `score`): indices kept, best first."""
    if not people:
        return []
    scores, kpts, areas = _nms_arrays(people)
    order = scores.argsort()[::-1]  # same (unstable) sort as MMPose, so ties resolve identically
    keep: list[int] = []
    while len(order) > 0:
        i = order[0]
        keep.append(int(i))
        overlap = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas, vis_thr)
        order = order[np.where(overlap <= oks_thr)[0] + 1]
    return keep


def soft_oks_nms_decayed(
    people: list[dict[str, Any]],
    oks_thr: float,
    sigmas: np.ndarray | list[float],
    vis_thr: float | None = None,
    max_dets: int = 20,
) -> tuple[list[int], list[float]]:
    """Soft OKS NMS (MMPose 0.x, gaussian): kept indices in pick order and each one's decayed score when picked."""
    if not people:
        return [], []
    scores, kpts, areas = _nms_arrays(people)
    order = scores.argsort()[::-1]
    scores = scores[order]
    keep: list[int] = []
    decayed: list[float] = []
    while len(order) > 0 and len(keep) < max_dets:
        i = order[0]
        keep.append(int(i))
        decayed.append(float(scores[0]))
        overlap = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas, vis_thr)
        order = order[1:]
        scores = scores[1:] * np.exp(-(overlap**2) / oks_thr)  # gaussian decay; nobody is dropped, only reordered
        resort = scores.argsort()[::-1]
        order, scores = order[resort], scores[resort]
    return keep, decayed


def soft_oks_nms(
    people: list[dict[str, Any]],
    oks_thr: float,
    sigmas: np.ndarray | list[float],
    vis_thr: float | None = None,
    max_dets: int = 20,
) -> list[int]:
    """Soft OKS NMS as MMPose 0.x uses it: indices kept (at most max_dets); the people keep their own scores."""
    return soft_oks_nms_decayed(people, oks_thr, sigmas, vis_thr, max_dets)[0]


# ----------------------------------------------------------------------------------------- inputs
@dataclass
class _GtPerson:
    image_id: Any
    category_id: Any
    iscrowd: int
    area: float
    bbox: list[float]
    kpts: np.ndarray  # (K, 3) x, y, visibility


@dataclass
class _Prediction:
    index: int  # position in the results list (pycocotools' loadRes numbers results 1.. in this order)
    image_id: Any
    category_id: Any
    kpts: np.ndarray  # (K, 3) x, y, score
    score: float
    area: float  # what loadRes would compute: keypoint extent (body part for WholeBody) or the bbox
    part_scores: dict[str, float] = field(default_factory=dict)  # e.g. face_score, used by that part's eval


@dataclass
class _GroundTruth:
    images: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    people: list[_GtPerson]
    warnings: list[str]


def _flat_keypoints(entry: dict[str, Any], k: int, label: str, source: str) -> list[float]:
    """The entry's [x, y, s] * K, from `keypoints` or from the WholeBody split fields."""
    kpts = entry.get("keypoints")
    if isinstance(kpts, list) and len(kpts) == 3 * k:
        values = kpts
    elif k == 133 and "foot_kpts" in entry:
        try:
            values = merge_wholebody(entry)
        except PoseCliError as exc:
            raise PoseCliError(f"{label}: {exc.message}", source) from None
    else:
        got = f"{len(kpts)} values" if isinstance(kpts, list) else "no list"
        raise PoseCliError(f"{label}: 'keypoints' has {got}, expected {3 * k} ({k} keypoints x 3)", source)
    if not all(is_finite_number(v) for v in values):
        raise PoseCliError(f"{label}: keypoints contain a non-number or non-finite value", source)
    return values


def _load_gt(
    gt: dict[str, Any] | str | Path, meta: DatasetMeta, allow_outside_img_dir: bool = True, report: Any = None
) -> _GroundTruth:
    """Validate a COCO keypoint ground truth (dict or file) with posecli's COCO rules; every person as (K, 3).

    The rules are posecli.datasets.coco_format's (the verdict of `convert-dataset --check`); image paths matter
    only where images are read, so ``allow_outside_img_dir`` is on unless a command that reads none says otherwise.
    A person without ``area`` gets 0.53 x box area for OKS (MMPose's rule), as everywhere. ``report``: the
    coco_format report of a caller that has already validated ``gt`` (not validated twice).
    """
    from posecli.datasets.coco_format import effective_area, require_valid_coco

    source = "ground truth" if isinstance(gt, dict) else str(gt)
    data = gt if isinstance(gt, dict) else load_json_file(gt, "annotation file")
    if report is None:
        report = require_valid_coco(data, source, allow_outside_img_dir=allow_outside_img_dir)
    k = meta.num_keypoints
    people: list[_GtPerson] = []
    for i, ann in enumerate(data["annotations"]):
        label = f"annotations[{i}] (id {ann['id']})"
        kpts = np.asarray(_flat_keypoints(ann, k, label, source), dtype=np.float64).reshape(k, 3)
        people.append(
            _GtPerson(
                image_id=ann["image_id"],
                category_id=ann["category_id"],
                iscrowd=int(bool(ann.get("iscrowd", 0))),
                area=effective_area(ann),
                bbox=[float(v) for v in ann["bbox"]],
                kpts=kpts,
            )
        )
    warnings = sigma_warnings(meta) + [w for w in report.warnings if "'area'" in w]
    return _GroundTruth(images=data["images"], categories=data["categories"], people=people, warnings=warnings)


def sigma_warnings(meta: DatasetMeta) -> list[str]:
    """Warnings to show when the meta's OKS sigmas were defaulted rather than given (AP then is not comparable)."""
    return [f"{note} (AP/AR are not comparable with published numbers)" for note in meta.notes if "sigma" in note]


def _normalize_results(results: list[Any], meta: DatasetMeta, source: str) -> list[_Prediction]:
    """Validate results (flat or WholeBody split fields) and compute each one's loadRes area."""
    if not isinstance(results, list):
        raise PoseCliError("results must be a JSON list of {image_id, category_id, keypoints, score}", source)
    k = meta.num_keypoints
    wholebody = is_wholebody(meta)
    # pycocotools/xtcocotools loadRes take the detection area from `bbox` when the first result has one.
    use_bbox = bool(results) and isinstance(results[0], dict) and bool(results[0].get("bbox"))
    out = []
    for i, res in enumerate(results):
        label = f"results[{i}]"
        if not isinstance(res, dict):
            raise PoseCliError(f"{label} is not an object", source)
        for key in ("image_id", "category_id", "score"):
            if key not in res:
                raise PoseCliError(f"{label} has no '{key}'", source)
        if not is_finite_number(res["score"]):
            raise PoseCliError(f"{label}: 'score' is not a finite number", source)
        kpts = np.asarray(_flat_keypoints(res, k, label, source), dtype=np.float64).reshape(k, 3)
        if use_bbox:
            bbox = res.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
                raise PoseCliError(f"{label}: 'bbox' must be [x, y, w, h] (the first result has one)", source)
            area = float(bbox[2] * bbox[3])
        else:
            # MMPose writes WholeBody results split, so loadRes sees only the 17 body keypoints in `keypoints`.
            xy = kpts[:17, :2] if wholebody else kpts[:, :2]
            area = float((xy[:, 0].max() - xy[:, 0].min()) * (xy[:, 1].max() - xy[:, 1].min()))
        part_scores = {key: float(v) for key, v in res.items() if key.endswith("_score") and is_finite_number(v)}
        out.append(
            _Prediction(
                index=i,
                image_id=res["image_id"],
                category_id=res["category_id"],
                kpts=kpts,
                score=float(res["score"]),
                area=area,
                part_scores=part_scores,
            )
        )
    return out


def _check_ids(gt: _GroundTruth, preds: list[_Prediction], source: str) -> None:
    image_ids = {img["id"] for img in gt.images}
    cat_ids = {cat["id"] for cat in gt.categories} | {p.category_id for p in gt.people}
    for p in preds:
        if p.image_id not in image_ids:
            raise PoseCliError(f"results[{p.index}]: image_id {p.image_id!r} is not in the annotation file", source)
        if p.category_id not in cat_ids:
            raise PoseCliError(
                f"results[{p.index}]: category_id {p.category_id!r} is not in the annotation file", source
            )


def load_results(path: str | Path, meta: DatasetMeta) -> list[dict[str, Any]]:
    """Read a COCO keypoint results file (flat or WholeBody split fields) as flat results of meta's K keypoints."""
    data = load_json_file(path, "results file")
    preds = _normalize_results(data, meta, str(path))
    out = []
    for pred, raw in zip(preds, data, strict=True):
        entry = {key: v for key, v in raw.items() if key not in WHOLEBODY_FIELDS.values()}
        entry["keypoints"] = pred.kpts.reshape(-1).tolist()
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------------- COCO AP / AR
def _coco_eval(
    gt: _GroundTruth, preds: list[_Prediction], index: np.ndarray, sigmas: np.ndarray, score_key: str = "score"
) -> dict[str, float]:
    """COCO keypoint AP/AR over the keypoints `index`, equal to MMPose's xtcocotools COCOeval(use_area=True).

    xtcocotools differs from pycocotools in ways that change numbers; they are reproduced in the inputs:
    - a ground truth is ignored when none of the evaluated keypoints has visibility > 0 (pycocotools reads
      `num_keypoints`, which for a part or a stale field is wrong): num_keypoints is recomputed per subset;
    - a detection whose evaluated keypoints all have score <= 0 is dropped before matching;
    - part evaluations rank detections by `<part>_score` when the results have it, else by `score`;
    - detection areas (which decide whether unmatched detections count in AP (M)/(L)) stay those loadRes
      computes from the `keypoints` field MMPose writes (the body part for WholeBody).
    """
    gt_anns = []
    for n, person in enumerate(gt.people):
        kpts = person.kpts[index]  # (k, 3)
        gt_anns.append(
            {
                "id": n + 1,  # pycocotools treats a match to id 0 as no match: renumber from 1
                "image_id": person.image_id,
                "category_id": person.category_id,
                "iscrowd": person.iscrowd,
                "area": person.area,
                "bbox": person.bbox,
                "keypoints": kpts.reshape(-1).tolist(),
                "num_keypoints": int(np.count_nonzero(kpts[:, 2] > 0)),
            }
        )
    dt_anns = []
    for pred in preds:
        kpts = pred.kpts[index]
        if np.count_nonzero(kpts[:, 2] > 0) == 0:
            continue
        dt_anns.append(
            {
                "id": pred.index + 1,
                "image_id": pred.image_id,
                "category_id": pred.category_id,
                "keypoints": kpts.reshape(-1).tolist(),
                "score": pred.part_scores.get(score_key, pred.score),
                "area": pred.area,
            }
        )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = {"images": gt.images, "categories": gt.categories, "annotations": gt_anns}
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": gt.images, "categories": gt.categories, "annotations": dt_anns}
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)[index]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)}


def _prepare(
    gt: dict[str, Any] | str | Path, results: list[dict[str, Any]], meta: DatasetMeta
) -> tuple[_GroundTruth, list[_Prediction]]:
    truth = _load_gt(gt, meta)
    preds = _normalize_results(results, meta, "results")
    _check_ids(truth, preds, "results")
    return truth, preds


def wholebody_part_stats(
    gt: dict[str, Any] | str | Path, results: list[dict[str, Any]], meta: DatasetMeta
) -> dict[str, dict[str, float]]:
    """The 10 COCO stats for each of body, foot, face, lefthand, righthand, wholebody (MMPose 0.x's six evals)."""
    truth, preds = _prepare(gt, results, meta)
    return _wholebody_stats(truth, preds, meta)


def _wholebody_stats(truth: _GroundTruth, preds: list[_Prediction], meta: DatasetMeta) -> dict[str, dict[str, float]]:
    sigmas = np.asarray(meta.sigmas, dtype=np.float64)
    stats = {}
    for part in WHOLEBODY_EVAL_PARTS:
        start, end = WHOLEBODY_PARTS.get(part, (0, 133))
        score_key = "score" if part == "body" else f"{part}_score"
        stats[part] = _coco_eval(truth, preds, np.arange(start, end), sigmas, score_key)
    return stats


def wholebody_metrics(
    gt: dict[str, Any] | str | Path,
    results: list[dict[str, Any]],
    meta: DatasetMeta,
    warnings: list[str] | None = None,
) -> dict[str, float]:
    """COCO-WholeBody metrics: the 10 standard names (= wholebody, as MMPose returns) plus <part>_AP/_AR keys.

    Scoring caveats (defaulted sigmas, missing GT areas) are appended to `warnings` when a list is given.
    """
    truth, preds = _prepare(gt, results, meta)
    if warnings is not None:
        warnings.extend(truth.warnings)
    return _wholebody_flat(truth, preds, meta)


def _wholebody_flat(truth: _GroundTruth, preds: list[_Prediction], meta: DatasetMeta) -> dict[str, float]:
    stats = _wholebody_stats(truth, preds, meta)
    out = dict(stats["wholebody"])
    for part in WHOLEBODY_EVAL_PARTS:
        out[f"{part}_AP"] = stats[part]["AP"]
    for part in WHOLEBODY_EVAL_PARTS:
        out[f"{part}_AR"] = stats[part]["AR"]
    return out


def _standard_metrics(truth: _GroundTruth, preds: list[_Prediction], meta: DatasetMeta) -> dict[str, float]:
    if is_wholebody(meta):
        return _wholebody_flat(truth, preds, meta)
    return _coco_eval(truth, preds, np.arange(meta.num_keypoints), np.asarray(meta.sigmas, dtype=np.float64))


def coco_keypoint_metrics(
    gt: dict[str, Any] | str | Path,
    results: list[dict[str, Any]],
    meta: DatasetMeta,
    warnings: list[str] | None = None,
) -> dict[str, float]:
    """COCO keypoint AP/AR with meta's sigmas, as MMPose 0.x reports them (a WholeBody meta: wholebody_metrics).

    Returns the 10 names of STAT_NAMES as floats (-1 where undefined, as COCOeval). Scoring caveats (defaulted
    sigmas, missing GT areas) are appended to `warnings` when a list is given, e.g. to print or save them.
    """
    truth, preds = _prepare(gt, results, meta)
    if warnings is not None:
        warnings.extend(truth.warnings)
    return _standard_metrics(truth, preds, meta)


# ----------------------------------------------------------------------------------------- PCK / AUC / EPE
def _match_people(gt_kpts: np.ndarray, gt_areas: np.ndarray, dt_kpts: np.ndarray, sigmas: np.ndarray) -> list[int]:
    """Best-OKS matching in one image: index of the prediction matched to each GT person, or -1.

    OKS is COCO's (GT area, labelled keypoints); pairs are taken in descending OKS, each side at most once.
    """
    g, d = len(gt_kpts), len(dt_kpts)
    match = [-1] * g
    if g == 0 or d == 0:
        return match
    variances = (sigmas * 2) ** 2  # (K,)
    dist2 = ((dt_kpts[:, None, :, :2] - gt_kpts[None, :, :, :2]) ** 2).sum(-1)  # (D, G, K)
    e = dist2 / variances / (gt_areas[None, :, None] + np.spacing(1)) / 2
    labelled = gt_kpts[None, :, :, 2] > 0  # (1, G, K)
    oks = (np.exp(-e) * labelled).sum(-1) / np.maximum(labelled.sum(-1), 1)  # (D, G)
    used_dt: set[int] = set()
    for flat in np.argsort(-oks, axis=None, kind="stable"):
        di, gi = divmod(int(flat), g)
        if oks[di, gi] <= 0 or match[gi] >= 0 or di in used_dt:
            continue
        match[gi] = di
        used_dt.add(di)
    return match


def extra_metrics(
    gt: dict[str, Any] | str | Path,
    results: list[dict[str, Any]],
    meta: DatasetMeta,
    per_keypoint_ap: bool = True,
) -> dict[str, Any]:
    """PCK@0.05/0.1/0.2, AUC (PCK over 0..0.5), EPE (px) and per-keypoint AP/PCK@0.1/EPE, for any keypoint set.

    Definitions (values are null where undefined):
    - people: non-crowd GT people with at least one labelled keypoint (visibility > 0); each is matched to at
      most one prediction of its image by best OKS (see `_match_people`);
    - PCK@t: share of labelled GT keypoints whose matched prediction is closer than t x max(box w, box h)
      (strict `<`, as MMPose's PCK); keypoints of unmatched people count as misses; people with an empty box
      are left out of PCK and AUC;
    - AUC: PCK integrated over t in [0, 0.5] (trapezoids, step 0.01), divided by 0.5, so within [0, 1];
    - EPE: mean pixel distance over labelled keypoints of matched people;
    - per-keypoint AP: COCO AP of keypoint j alone (OKS from that keypoint and its sigma only; people whose
      keypoint j is unlabelled are ignored; predictions with score <= 0 for j are dropped), i.e. the
      xtcocotools part evaluation with a one-keypoint part.
    """
    truth, preds = _prepare(gt, results, meta)
    return _extra_metrics(truth, preds, meta, per_keypoint_ap)


def _extra_metrics(
    truth: _GroundTruth, preds: list[_Prediction], meta: DatasetMeta, per_keypoint_ap: bool
) -> dict[str, Any]:
    sigmas = np.asarray(meta.sigmas, dtype=np.float64)
    k = meta.num_keypoints
    preds_by_image: dict[Any, list[_Prediction]] = defaultdict(list)
    for pred in preds:
        preds_by_image[(pred.image_id, pred.category_id)].append(pred)
    people_by_image: dict[Any, list[_GtPerson]] = defaultdict(list)
    for person in truth.people:
        if not person.iscrowd and np.any(person.kpts[:, 2] > 0):
            people_by_image[(person.image_id, person.category_id)].append(person)

    labelled_rows, dist_rows, norm_rows = [], [], []
    for key, people in people_by_image.items():
        candidates = preds_by_image.get(key, [])
        gt_kpts = np.stack([p.kpts for p in people])  # (G, K, 3)
        dt_kpts = np.stack([c.kpts for c in candidates]) if candidates else np.zeros((0, k, 3))
        match = _match_people(gt_kpts, np.array([p.area for p in people]), dt_kpts, sigmas)
        for person, m in zip(people, match, strict=True):
            labelled_rows.append(person.kpts[:, 2] > 0)
            if m >= 0:
                dist_rows.append(np.linalg.norm(dt_kpts[m, :, :2] - person.kpts[:, :2], axis=-1))
            else:
                dist_rows.append(np.full(k, np.nan))
            norm_rows.append(max(person.bbox[2], person.bbox[3]))
    labelled = np.array(labelled_rows, dtype=bool).reshape(-1, k)  # (P, K)
    dist = np.array(dist_rows, dtype=np.float64).reshape(-1, k)  # (P, K), NaN where unmatched
    norm = np.array(norm_rows, dtype=np.float64).reshape(-1)  # (P,)
    in_pck = labelled & (norm > 0)[:, None]  # (P, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = dist / norm[:, None]
    ratio = np.where(np.isnan(ratio), np.inf, ratio)  # unmatched: never correct

    def pck(t: float, cols: slice | int = slice(None)) -> float | None:
        total = int(in_pck[:, cols].sum())
        return float((in_pck[:, cols] & (ratio[:, cols] < t)).sum() / total) if total else None

    def epe(cols: slice | int = slice(None)) -> float | None:
        d = dist[:, cols][labelled[:, cols] & ~np.isnan(dist[:, cols])]
        return float(d.mean()) if d.size else None

    out: dict[str, Any] = {f"PCK@{t:g}": pck(t) for t in PCK_THRESHOLDS}
    thresholds = np.linspace(0.0, AUC_MAX_THRESHOLD, AUC_STEPS + 1)
    curve = [pck(float(t)) for t in thresholds]
    if curve[0] is None:
        out["AUC"] = None
    else:
        y = np.array(curve, dtype=np.float64)
        out["AUC"] = float(((y[1:] + y[:-1]) / 2 * np.diff(thresholds)).sum() / AUC_MAX_THRESHOLD)
    out["EPE"] = epe()
    per_kpt: dict[str, dict[str, float | None]] = {}
    for j, name in enumerate(meta.keypoint_names):
        entry: dict[str, float | None] = {}
        if per_keypoint_ap:
            ap = _coco_eval(truth, preds, np.array([j]), sigmas)["AP"]
            entry["AP"] = ap if ap >= 0 else None
        entry["PCK@0.1"] = pck(0.1, j)
        entry["EPE"] = epe(j)
        per_kpt[name] = entry
    out["per_keypoint"] = per_kpt
    return out


# ----------------------------------------------------------------------------------------- results files
def infer_meta(results: list[Any], gt_data: dict[str, Any], ann_file: str | Path) -> DatasetMeta:
    """Dataset meta for a results file without --dataset: WholeBody from its shape, else from the GT category."""
    first = next((r for r in results if isinstance(r, dict)), {}) if isinstance(results, list) else {}
    kpts = first.get("keypoints")
    if "foot_kpts" in first or (isinstance(kpts, list) and len(kpts) == 133 * 3):
        return load_builtin("coco_wholebody")
    cats = gt_data.get("categories") or []
    names = cats[0].get("keypoints") if cats and isinstance(cats[0], dict) else None
    for name in BUILTIN:
        builtin = load_builtin(name)
        if names == builtin.keypoint_names:
            return builtin  # known keypoint set: use its real sigmas, not defaults
    return resolve_meta(None, ann_file)


def score_results_file(
    predictions: str | Path,
    ann_file: str | Path,
    dataset: str | None = None,
    extra: bool = True,
    per_keypoint_ap: bool = False,
    allow_outside_img_dir: bool = False,
) -> dict[str, Any]:
    """Score a results file against a COCO annotation file: the metrics.json object.

    MMPose's AP/AR keys (WholeBody: plus <part>_AP/_AR), then with `extra` PCK@0.05/0.1/0.2, AUC, EPE and
    `per_keypoint` (AP only with per_keypoint_ap), and a `warnings` list only when there are caveats.
    """
    from posecli.datasets.coco_format import require_valid_coco

    gt_data = load_json_file(ann_file, "annotation file")
    report = require_valid_coco(gt_data, ann_file, allow_outside_img_dir)  # --check's verdict, before the meta
    raw = load_json_file(predictions, "results file")
    meta = resolve_meta(dataset, ann_file) if dataset is not None else infer_meta(raw, gt_data, ann_file)
    try:
        truth = _load_gt(gt_data, meta, allow_outside_img_dir, report=report)
    except PoseCliError as exc:
        raise PoseCliError(exc.message, ann_file) from None
    try:
        preds = _normalize_results(raw, meta, str(predictions))
    except PoseCliError as exc:
        raise PoseCliError(f"{exc.message} (dataset '{meta.name}', {meta.num_keypoints} keypoints)", exc.path) from None
    _check_ids(truth, preds, str(predictions))
    metrics: dict[str, Any] = dict(_standard_metrics(truth, preds, meta))
    if extra:
        metrics.update(_extra_metrics(truth, preds, meta, per_keypoint_ap))
    if truth.warnings:
        metrics["warnings"] = list(truth.warnings)
    return metrics
