"""posecli's previous HRNet forwards (every residual and fuse sum a new tensor), kept as the reference the
in-place forwards are tested against (tests/test_models.py) and timed against (benchmarks/hrnet_forward.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from posecli.models.hrnet import BasicBlock, Bottleneck, HRModule


def _basic_out_of_place(self: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(out)) + identity)


def _bottleneck_out_of_place(self: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    return F.relu(self.bn3(self.conv3(out)) + identity)


def _hrmodule_out_of_place(self: HRModule, x: list[torch.Tensor]) -> list[torch.Tensor]:
    x = [branch(xi) for branch, xi in zip(self.branches, x, strict=True)]
    if self.fuse_layers is None:
        return x
    fused = []
    for i, row in enumerate(self.fuse_layers):
        y = None
        for j, layer in enumerate(row):
            if j == i:
                term = x[j]
            elif j > i:
                term = F.interpolate(
                    layer(x[j]), size=x[i].shape[-2:], mode=self.upsample_mode, align_corners=self.align_corners
                )
            else:
                term = layer(x[j])
            y = term if y is None else y + term
        fused.append(F.relu(y))
    return fused


@contextlib.contextmanager
def out_of_place() -> Iterator[None]:
    """Run the previous, out-of-place forwards inside the block."""
    saved = (BasicBlock.forward, Bottleneck.forward, HRModule.forward)
    BasicBlock.forward, Bottleneck.forward, HRModule.forward = (  # type: ignore[method-assign]
        _basic_out_of_place,
        _bottleneck_out_of_place,
        _hrmodule_out_of_place,
    )
    try:
        yield
    finally:
        BasicBlock.forward, Bottleneck.forward, HRModule.forward = saved  # type: ignore[method-assign]
