"""The tiny HRNet stage specs the CPU tests train (MMPose `extra` format, ~0.1-0.2 M parameters)."""

from __future__ import annotations

import copy
from typing import Any

_TINY_STAGES: dict[str, Any] = {
    "stage1": {"num_modules": 1, "num_branches": 1, "block": "BOTTLENECK", "num_blocks": [1], "num_channels": [8]},
    "stage2": {"num_modules": 1, "num_branches": 2, "block": "BASIC", "num_blocks": [1, 1], "num_channels": [8, 16]},
    "stage3": {
        "num_modules": 1, "num_branches": 3, "block": "BASIC", "num_blocks": [1, 1, 1], "num_channels": [8, 16, 32]
    },
    "stage4": {
        "num_modules": 1, "num_branches": 4, "block": "BASIC", "num_blocks": [1, 1, 1, 1],
        "num_channels": [8, 16, 32, 64],
    },
}  # fmt: skip


def tiny_stages(width: int = 8) -> dict[str, Any]:
    """A fresh copy of the tiny stage specs; ``width`` sets the highest-resolution branch of stage 4."""
    stages = copy.deepcopy(_TINY_STAGES)
    stages["stage4"]["num_channels"][0] = width
    return stages
