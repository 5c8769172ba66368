"""An MMPose 0.x ``dataset_info`` dict as a posecli DatasetMeta, and which built-in keypoint set (if any) it is."""

from __future__ import annotations

import math
from typing import Any

from posecli.datasets.meta import BUILTIN, DatasetMeta, load_builtin
from posecli.errors import PoseCliError


def close_lists(a: list[float], b: list[float]) -> bool:
    """Same length and every value equal within float noise (rel 1e-6, abs 1e-9)."""
    return len(a) == len(b) and all(
        math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(a, b, strict=True)
    )


def meta_from_dataset_info(info: dict[str, Any], source: str, where: str = "dataset_info") -> DatasetMeta:
    """An MMPose 0.x ``dataset_info`` dict (keypoint_info, skeleton_info, joint_weights, sigmas) -> DatasetMeta."""
    if not isinstance(info, dict) or not isinstance(info.get("keypoint_info"), dict):
        raise PoseCliError(f"{where} has no keypoint_info dict", source)
    kinfo = info["keypoint_info"]
    try:
        ids = sorted(int(k) for k in kinfo)
    except (TypeError, ValueError):
        raise PoseCliError(f"{where}.keypoint_info keys must be keypoint ids 0..K-1", source) from None
    if ids != list(range(len(ids))):
        raise PoseCliError(f"{where}.keypoint_info keys must be keypoint ids 0..K-1", source)
    entries = {int(k): v for k, v in kinfo.items()}
    names, colors, upper, lower = [], [], [], []
    for i in ids:
        kp = entries[i]
        if not isinstance(kp, dict) or not isinstance(kp.get("name"), str):
            raise PoseCliError(f"{where}.keypoint_info[{i}] needs a name", source)
        names.append(kp["name"])
        colors.append(list(kp.get("color", [255, 128, 0])))
        kind = kp.get("type", "")
        (upper if kind == "upper" else lower if kind == "lower" else []).append(i)
    index = {n: i for i, n in enumerate(names)}
    pairs: list[tuple[int, int]] = []
    for i in ids:
        swap = entries[i].get("swap", "")
        if swap:
            if swap not in index:
                raise PoseCliError(f"{where}.keypoint_info[{i}].swap '{swap}' is not a keypoint name", source)
            pair = (min(i, index[swap]), max(i, index[swap]))
            if pair not in pairs:
                pairs.append(pair)
    skeleton, skeleton_color = [], []
    sinfo = info.get("skeleton_info") or {}
    if not isinstance(sinfo, dict):
        raise PoseCliError(f"{where}.skeleton_info must be a dict", source)
    for key in sorted(sinfo, key=lambda k: int(k) if isinstance(k, int) or str(k).isdigit() else 0):
        link = sinfo[key].get("link") if isinstance(sinfo[key], dict) else None
        if not isinstance(link, (list, tuple)) or len(link) != 2 or any(n not in index for n in link):
            raise PoseCliError(f"{where}.skeleton_info[{key}].link must name two keypoints", source)
        skeleton.append((index[link[0]], index[link[1]]))
        skeleton_color.append(list(sinfo[key].get("color", [255, 128, 0])))
    meta = DatasetMeta.from_dict(
        {
            "name": str(info.get("dataset_name", "custom")),
            "keypoint_names": names,
            "flip_pairs": [list(p) for p in pairs],
            "sigmas": list(info.get("sigmas") or []),
            "joint_weights": list(info.get("joint_weights") or []),
            "skeleton": [list(s) for s in skeleton],
            "upper_body_ids": upper,
            "lower_body_ids": lower,
            "keypoint_color": colors,
            "skeleton_color": skeleton_color,
        },
        source=source,
    )
    meta.notes.clear()
    return meta


def same_keypoint_set(a: DatasetMeta, b: DatasetMeta) -> bool:
    """Whether two metas train and score the same (names, flip pairs, OKS sigmas, joint weights, body halves)."""
    return (
        a.keypoint_names == b.keypoint_names
        and sorted(a.flip_pairs) == sorted(b.flip_pairs)
        and close_lists(a.sigmas, b.sigmas)
        and close_lists(a.joint_weights, b.joint_weights)
        and sorted(a.upper_body_ids) == sorted(b.upper_body_ids)
        and sorted(a.lower_body_ids) == sorted(b.lower_body_ids)
        and {frozenset(s) for s in a.skeleton} == {frozenset(s) for s in b.skeleton}
    )


def builtin_name_of(meta: DatasetMeta) -> str | None:
    """The built-in dataset whose keypoint set equals ``meta``, if any."""
    for name in BUILTIN:
        if same_keypoint_set(meta, load_builtin(name)):
            return name
    return None
