"""Converters from other keypoint formats to COCO keypoints: one module per format, shared parts in ``common``."""

from posecli.datasets.converters.coco_wholebody import convert_coco_wholebody, parse_parts, wholebody_subset_meta
from posecli.datasets.converters.common import ConvertResult, box_from_points, meta_path_for, person_annotation
from posecli.datasets.converters.deeplabcut import convert_deeplabcut
from posecli.datasets.converters.labelme import convert_labelme
from posecli.datasets.converters.yolo_pose import convert_yolo_pose

__all__ = [
    "ConvertResult",
    "box_from_points",
    "convert_coco_wholebody",
    "convert_deeplabcut",
    "convert_labelme",
    "convert_yolo_pose",
    "meta_path_for",
    "parse_parts",
    "person_annotation",
    "wholebody_subset_meta",
]
