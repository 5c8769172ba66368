"""Heatmap codec (MMPose 0.x maths): targets and batch preparation in ``encode``, decoding and flips in ``decode``.

Pure array maths, no I/O. Every public name is importable from ``posecli.codec``.
"""

from posecli.codec.decode import (
    PostProcess,
    decode_heatmaps,
    flip_back,
    flip_keypoints_xy,
    gaussian_kernel_1d,
    heatmap_to_image,
    keypoints_from_heatmaps,
)
from posecli.codec.encode import HeatmapCodec, normalize_images

__all__ = [
    "HeatmapCodec",
    "PostProcess",
    "decode_heatmaps",
    "flip_back",
    "flip_keypoints_xy",
    "gaussian_kernel_1d",
    "heatmap_to_image",
    "keypoints_from_heatmaps",
    "normalize_images",
]
