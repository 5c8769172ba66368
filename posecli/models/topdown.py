"""Top-down pose model: HRNet backbone + heatmap head, with MMPose 0.x state_dict keys, and flip test in one pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from posecli.codec import flip_back
from posecli.models.head import TopdownHeatmapSimpleHead
from posecli.models.hrnet import HRNet
from posecli.settings import ModelSettings


class TopDown(nn.Module):
    """images (B, 3, H, W) -> heatmaps (B, K, h, w); state_dict keys are MMPose's backbone.* and keypoint_head.*"""

    def __init__(self, backbone: nn.Module, keypoint_head: TopdownHeatmapSimpleHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.keypoint_head = keypoint_head

    @property
    def num_keypoints(self) -> int:
        """K, the number of heatmaps the head predicts."""
        return self.keypoint_head.out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> heatmaps (B, K, h, w)."""
        return self.keypoint_head(self.backbone(images))

    def loss(self, heatmaps: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None) -> torch.Tensor:
        """The head's JointsMSELoss of predicted heatmaps against targets (B, K, h, w) and weights (B, K, 1)."""
        return self.keypoint_head.loss(heatmaps, target, target_weight)

    def forward_flip_test(
        self, images: torch.Tensor, flip_index: Sequence[int], shift_heatmap: bool = True
    ) -> torch.Tensor:
        """MMPose 0.x flip test: average heatmaps of the images and (flipped back) of their mirror images.

        Both go through ONE forward pass of batch 2B; BN must be in eval mode for this to equal two passes.
        """
        if len(flip_index) != self.num_keypoints:
            raise ValueError(f"flip_index has {len(flip_index)} entries, the model predicts {self.num_keypoints}")
        batch = images.shape[0]
        heatmaps = self(torch.cat([images, images.flip(3)]))  # (2B, K, h, w)
        flipped = flip_back(heatmaps[batch:], flip_index, shift_heatmap)  # mirror back, swap sides, shift
        return (heatmaps[:batch] + flipped) * 0.5


def build_model(model_settings: ModelSettings) -> TopDown:
    """The top-down model described by a preset's ``model`` section (weights initialised as MMPose does)."""
    backbone = model_settings.backbone
    hrnet = HRNet(backbone.extra, in_channels=backbone.in_channels, frozen_stages=backbone.frozen_stages)
    head = TopdownHeatmapSimpleHead.from_settings(model_settings.head)
    return TopDown(hrnet, head)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (only those with requires_grad when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
