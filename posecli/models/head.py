"""MMPose 0.x TopdownHeatmapSimpleHead (input selection, deconvs, convs, final conv to K heatmaps) and JointsMSELoss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from posecli.settings import HeadSettings, LossSettings

# deconv kernel -> (padding, output_padding) so that a stride-2 deconv exactly doubles H and W (MMPose's table)
DECONV_PADDING: dict[int, tuple[int, int]] = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


class JointsMSELoss(nn.Module):
    """MMPose 0.x JointsMSELoss: mean over keypoints of the per-keypoint MSE, optionally weighted, times loss_weight.

    With ``use_target_weight`` each keypoint's prediction and target are multiplied by its weight before the MSE,
    so invisible keypoints (weight 0) cost nothing. No 0.5 factor (that was the original HRNet repository).
    """

    def __init__(self, use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.use_target_weight = use_target_weight
        self.loss_weight = loss_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None) -> torch.Tensor:
        """output, target (B, K, H, W); target_weight (B, K, 1) or (B, K) -> scalar loss."""
        pred = output.flatten(2).float()  # (B, K, H*W); the loss is computed in fp32 even under autocast
        gt = target.flatten(2).float()
        if self.use_target_weight:
            if target_weight is None:
                raise ValueError("JointsMSELoss(use_target_weight=True) needs target_weight")
            w = target_weight.reshape(pred.shape[0], pred.shape[1], 1).float()  # (B, K, 1)
            pred, gt = pred * w, gt * w
        # every keypoint's MSE averages the same B*H*W elements, so their mean over K is the mean of all elements
        per_joint = (pred - gt).pow(2).mean(dim=(0, 2))  # (K,)
        return per_joint.mean() * self.loss_weight

    @classmethod
    def from_settings(cls, settings: LossSettings) -> JointsMSELoss:
        """Build from the preset's ``loss_keypoint`` section."""
        return cls(use_target_weight=settings.use_target_weight, loss_weight=settings.loss_weight)


class TopdownHeatmapSimpleHead(nn.Module):
    """Select backbone output(s), deconvs (each doubles H and W), conv+BN+ReLU layers, a final conv to K heatmaps.

    Input: the backbone's list of feature maps. ``in_index`` picks one (default: 0, the highest resolution); with
    ``input_transform='resize_concat'`` it picks several, upsamples them bilinearly to the first one's size and
    concatenates them (HRNetV2). state_dict keys are MMPose 0.x's: ``deconv_layers.{3i}.weight`` /
    ``deconv_layers.{3i+1}.*`` (BN) when present; ``final_layer.weight`` / ``.bias`` for a lone final conv, or
    ``final_layer.{3i}.*`` (conv), ``final_layer.{3i+1}.*`` (BN) and ``final_layer.{3n}.*`` with conv layers.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        out_channels: int,
        num_deconv_layers: int = 3,
        num_deconv_filters: Sequence[int] = (256, 256, 256),
        num_deconv_kernels: Sequence[int] = (4, 4, 4),
        final_conv_kernel: int = 1,
        loss: JointsMSELoss | None = None,
        in_index: int | Sequence[int] = 0,
        input_transform: str | None = None,
        align_corners: bool = False,
        num_conv_layers: int = 0,
        num_conv_kernels: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if input_transform not in (None, "resize_concat"):
            raise ValueError(f"input_transform must be None or 'resize_concat', got {input_transform!r}")
        if input_transform is None:
            if not isinstance(in_channels, int) or not isinstance(in_index, int):
                raise ValueError("without input_transform, in_channels and in_index must be single numbers")
            total_in = in_channels
        else:
            if isinstance(in_channels, int) or isinstance(in_index, int) or len(in_channels) != len(in_index):
                raise ValueError("resize_concat needs in_channels and in_index as sequences of the same length")
            total_in = sum(in_channels)
        self.in_channels = total_in  # after the input transform (MMPose's self.in_channels)
        self.in_index = in_index if isinstance(in_index, int) else list(in_index)
        self.input_transform = input_transform
        self.align_corners = align_corners
        self.out_channels = out_channels
        self.loss = loss if loss is not None else JointsMSELoss()

        if num_deconv_layers > 0:
            filters = list(num_deconv_filters[:num_deconv_layers])
            kernels = list(num_deconv_kernels[:num_deconv_layers])
            if len(filters) != num_deconv_layers or len(kernels) != num_deconv_layers:
                raise ValueError(f"need {num_deconv_layers} deconv filters and kernels, got {filters} and {kernels}")
            self.deconv_layers: nn.Module = self._make_deconv_layers(total_in, filters, kernels)
            conv_channels = filters[-1]
        else:
            self.deconv_layers = nn.Identity()
            conv_channels = total_in

        if final_conv_kernel not in (1, 3):
            raise ValueError(f"final_conv_kernel must be 1 or 3, got {final_conv_kernel}")
        conv_kernels = list(num_conv_kernels[:num_conv_layers]) or [1] * num_conv_layers
        if len(conv_kernels) != num_conv_layers or any(k < 1 or k % 2 == 0 for k in conv_kernels):
            raise ValueError(f"need {num_conv_layers} odd conv kernel sizes, got {list(num_conv_kernels)}")
        final = nn.Conv2d(conv_channels, out_channels, final_conv_kernel, padding=final_conv_kernel // 2)
        if num_conv_layers:
            layers: list[nn.Module] = []
            for kernel in conv_kernels:  # MMPose's extra.num_conv_layers: conv (with bias) + BN + ReLU, same width
                layers += [
                    nn.Conv2d(conv_channels, conv_channels, kernel, padding=(kernel - 1) // 2),
                    nn.BatchNorm2d(conv_channels),
                    nn.ReLU(inplace=True),
                ]
            self.final_layer: nn.Module = nn.Sequential(*layers, final)
        else:
            self.final_layer = final
        self.init_weights()

    @staticmethod
    def _make_deconv_layers(in_channels: int, filters: list[int], kernels: list[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for planes, kernel in zip(filters, kernels, strict=True):
            if kernel not in DECONV_PADDING:
                raise ValueError(f"deconv kernel {kernel} not supported (use 2, 3 or 4)")
            padding, output_padding = DECONV_PADDING[kernel]
            layers += [
                nn.ConvTranspose2d(in_channels, planes, kernel, 2, padding, output_padding, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
            ]
            in_channels = planes
        return nn.Sequential(*layers)

    def init_weights(self) -> None:
        """MMPose's init: (de)convs ~ N(0, 0.001), conv biases 0, BN weight 1 and bias 0."""
        for m in self.modules():
            if any(p.is_meta for p in m.parameters(recurse=False)):
                continue  # shape-only model (built under torch.device("meta")): nothing to initialise
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def select_inputs(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The feature map the head works on: the selected backbone output, or the resized, concatenated ones."""
        if isinstance(x, torch.Tensor):
            return x
        if self.input_transform is None:
            return x[self.in_index]
        feats = [x[i] for i in self.in_index]
        size = feats[0].shape[-2:]
        # a same-size bilinear resize is the identity (weights 1 and 0), so only smaller maps are resized
        resized = [
            f
            if f.shape[-2:] == size
            else F.interpolate(f, size=size, mode="bilinear", align_corners=self.align_corners)
            for f in feats
        ]
        return torch.cat(resized, dim=1)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features (a list, highest resolution first, or one tensor) -> heatmaps (B, K, h, w)."""
        return self.final_layer(self.deconv_layers(self.select_inputs(x)))

    @classmethod
    def from_settings(cls, settings: HeadSettings) -> TopdownHeatmapSimpleHead:
        """Build from the preset's ``model.head`` section."""
        return cls(
            in_channels=settings.in_channels,
            out_channels=settings.out_channels,
            num_deconv_layers=settings.num_deconv_layers,
            num_deconv_filters=settings.num_deconv_filters,
            num_deconv_kernels=settings.num_deconv_kernels,
            final_conv_kernel=settings.final_conv_kernel,
            loss=JointsMSELoss.from_settings(settings.loss_keypoint),
            in_index=settings.in_index,
            input_transform=settings.input_transform,
            align_corners=settings.align_corners,
            num_conv_layers=settings.num_conv_layers,
            num_conv_kernels=settings.conv_kernels,
        )
