"""COCO-WholeBody's layout: the five keypoint fields of an annotation or result and their place in the flat 133.

MMPose 0.x concatenates ``keypoints`` (body, 17), ``foot_kpts`` (6), ``face_kpts`` (68), ``lefthand_kpts`` (21) and
``righthand_kpts`` (21) in this order; its results files keep them split, as the annotations do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from posecli.errors import PoseCliError

if TYPE_CHECKING:
    from posecli.datasets.meta import DatasetMeta

# part -> annotation/result field, in the order the 133 keypoints are concatenated
WHOLEBODY_FIELDS = {
    "body": "keypoints",
    "foot": "foot_kpts",
    "face": "face_kpts",
    "lefthand": "lefthand_kpts",
    "righthand": "righthand_kpts",
}
# part -> [start, end) in the flat 133-keypoint order
WHOLEBODY_PARTS = {"body": (0, 17), "foot": (17, 23), "face": (23, 91), "lefthand": (91, 112), "righthand": (112, 133)}
KEYPOINT_FIELDS = tuple(WHOLEBODY_FIELDS.values())  # MMPose order


def split_wholebody(kpts: np.ndarray | list[float]) -> dict[str, list[float]]:
    """Flat 133x3 keypoints -> MMPose's split result fields (keypoints, foot_kpts, face_kpts, lefthand/righthand)."""
    flat = np.asarray(kpts, dtype=np.float64).reshape(-1)
    if flat.size != 133 * 3:
        raise PoseCliError(f"COCO-WholeBody keypoints need 399 values (133 x 3), got {flat.size}")
    return {
        WHOLEBODY_FIELDS[part]: flat[3 * start : 3 * end].tolist() for part, (start, end) in WHOLEBODY_PARTS.items()
    }


def merge_wholebody(result: dict[str, Any]) -> list[float]:
    """MMPose's split WholeBody fields of one result or annotation -> flat [x, y, s] * 133."""
    flat: list[float] = []
    for part, (start, end) in WHOLEBODY_PARTS.items():
        name = WHOLEBODY_FIELDS[part]
        values = result.get(name)
        if not isinstance(values, list) or len(values) != 3 * (end - start):
            got = f"{len(values)} values" if isinstance(values, list) else "nothing"
            raise PoseCliError(f"'{name}' has {got}, expected {3 * (end - start)} ({end - start} keypoints x 3)")
        flat.extend(values)
    return flat


def is_wholebody(meta: DatasetMeta) -> bool:
    """True for the 133-keypoint COCO-WholeBody layout (evaluated per part like MMPose)."""
    return meta.num_keypoints == 133 and dict(meta.parts) == WHOLEBODY_PARTS
