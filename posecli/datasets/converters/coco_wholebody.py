"""COCO-WholeBody (split fields keypoints/foot_kpts/face_kpts/...) -> flat COCO with 133 or fewer keypoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posecli.datasets.converters.common import ConvertResult, _category, _guard_outputs, _write_outputs, meta_path_for
from posecli.datasets.meta import DatasetMeta, load_builtin
from posecli.datasets.wholebody import WHOLEBODY_FIELDS, WHOLEBODY_PARTS
from posecli.errors import PoseCliError
from posecli.files import is_finite_number, load_json_file

_WHOLEBODY_EXTRA_KEYS = {
    "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts",
    "face_box", "lefthand_box", "righthand_box", "face_valid", "lefthand_valid", "righthand_valid", "foot_valid",
}  # fmt: skip


def parse_parts(parts: str | None) -> list[str]:
    """--parts body,foot -> the COCO-WholeBody parts in flat order (all five when None)."""
    if parts is None:
        return list(WHOLEBODY_PARTS)
    wanted = [p.strip().lower().replace("_", "") for p in parts.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in WHOLEBODY_PARTS]
    if unknown or not wanted:
        raise PoseCliError(f"unknown --parts {unknown or parts!r} (choose from {', '.join(WHOLEBODY_PARTS)})")
    return [p for p in WHOLEBODY_PARTS if p in wanted]  # flat COCO-WholeBody order whatever order was given


def wholebody_subset_meta(parts: list[str]) -> DatasetMeta:
    """The COCO-WholeBody meta restricted to some parts (names, sigmas, flip pairs, skeleton re-indexed)."""
    full = load_builtin("coco_wholebody")
    if parts == list(WHOLEBODY_PARTS):
        return full
    keep: list[int] = []
    new_parts: dict[str, tuple[int, int]] = {}
    for part in parts:
        start, end = full.parts[part]
        new_parts[part] = (len(keep), len(keep) + end - start)
        keep.extend(range(start, end))
    new = {old: i for i, old in enumerate(keep)}

    def pairs(src: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(new[a], new[b]) for a, b in src if a in new and b in new]

    kept_links = [i for i, (a, b) in enumerate(full.skeleton) if a in new and b in new]
    name = "body_foot" if parts == ["body", "foot"] else "coco_wholebody_" + "_".join(parts)
    return DatasetMeta(
        name=name,
        keypoint_names=[full.keypoint_names[i] for i in keep],
        flip_pairs=pairs(full.flip_pairs),
        sigmas=[full.sigmas[i] for i in keep],
        joint_weights=[full.joint_weights[i] for i in keep],
        skeleton=pairs(full.skeleton),
        upper_body_ids=[new[i] for i in full.upper_body_ids if i in new],
        lower_body_ids=[new[i] for i in full.lower_body_ids if i in new],
        parts=new_parts,
        keypoint_color=[full.keypoint_color[i] for i in keep] if full.keypoint_color else [],
        skeleton_color=[full.skeleton_color[i] for i in kept_links] if full.skeleton_color else [],
    )


def _check_top_level(data: Any, path: Path, what: str) -> tuple[list, list, list]:
    if not isinstance(data, dict):
        raise PoseCliError(f"not a {what} file: the top level must be an object with images, annotations", path)
    out = []
    for key in ("images", "annotations", "categories"):
        value = data.get(key)
        if not isinstance(value, list):
            raise PoseCliError(f"not a {what} file: no '{key}' list", path)
        out.append(value)
    return out[0], out[1], out[2]


def convert_coco_wholebody(src: Path, out: Path, parts: str | None = None) -> ConvertResult:
    """COCO-WholeBody (split fields keypoints/foot_kpts/face_kpts/...) -> flat COCO with 133 or fewer keypoints."""
    chosen = parse_parts(parts)
    meta = wholebody_subset_meta(chosen)
    _guard_outputs([out, meta_path_for(out)], [src])
    data = load_json_file(src)
    images, anns, cats = _check_top_level(data, src, "COCO-WholeBody")
    new_anns = []
    labelled = 0
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise PoseCliError(f"annotations[{i}] is not an object", src)
        ann_id = ann.get("id", f"#{i}")
        flat: list[float] = []
        for part in chosen:
            key = WHOLEBODY_FIELDS[part]
            count = WHOLEBODY_PARTS[part][1] - WHOLEBODY_PARTS[part][0]
            values = ann.get(key)
            if values is None:
                raise PoseCliError(
                    f"annotation {ann_id} has no '{key}' (is this a COCO-WholeBody file? --parts picks the parts)",
                    src,
                )
            if not isinstance(values, list) or len(values) != 3 * count or not all(is_finite_number(v) for v in values):
                n = len(values) if isinstance(values, list) else type(values).__name__
                raise PoseCliError(f"annotation {ann_id}: '{key}' must be {3 * count} numbers, got {n}", src)
            if key == "keypoints":
                bad = [v for v in values[2::3] if v not in (0, 1, 2)]
                if bad:
                    raise PoseCliError(
                        f"annotation {ann_id}: visibility values {sorted(set(bad))[:5]} not in 0, 1, 2", src
                    )
            else:
                # Real COCO-WholeBody files store detector confidences (e.g. 0.104, 1.37) as the third value
                # of the foot/face/hand fields; v > 0 means labelled. Flags 0/1/2 are kept, others become 2 or 0.
                values = [v if j % 3 != 2 or v in (0, 1, 2) else (2 if v > 0 else 0) for j, v in enumerate(values)]
            flat.extend(values)
        vis = flat[2::3]
        num = sum(1 for v in vis if v > 0)
        labelled += num
        new = {k: v for k, v in ann.items() if k not in _WHOLEBODY_EXTRA_KEYS}
        new["keypoints"] = [int(v) if j % 3 == 2 else v for j, v in enumerate(flat)]
        new["num_keypoints"] = num
        new_anns.append(new)
    new_cats = []
    for cat in cats:
        if not isinstance(cat, dict):
            raise PoseCliError("a 'categories' entry is not an object", src)
        new_cat = {k: v for k, v in cat.items() if k not in ("keypoints", "skeleton")}
        new_cat.update(_category(meta, cat.get("id", 1), str(cat.get("name", "person"))))
        new_cat["supercategory"] = cat.get("supercategory", new_cat["name"])
        new_cats.append(new_cat)
    coco = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    coco.update(images=images, annotations=new_anns, categories=new_cats)
    meta_file, people, labelled = _write_outputs(out, coco, meta, True, "coco-wholebody", src)
    return ConvertResult(
        out, meta_file, None, len(images), people, labelled, meta.num_keypoints, len(meta.flip_pairs),
        notes=[f"parts: {', '.join(chosen)}"],
    )  # fmt: skip
