"""HRNet backbone laid out exactly like MMPose 0.x, so its state_dict keys and shapes match MMPose checkpoints.

Structure (MMPose's ``extra`` dict drives everything):
    stem      conv1/bn1/conv2/bn2, 64 channels, stride 2 each            -> 1/4 resolution
    layer1    stage1 residual blocks on one branch
    transitionN, stageN+1 (N = 1..3)
              a transition adapts channels of existing branches and adds a new, half-resolution branch;
              a stage stacks HRModules: per-branch residual blocks, then fuse layers that sum every branch
              into every output branch (1x1 conv + BN + upsample, or strided 3x3 convs to go down)
The last module of stage4 outputs only the highest-resolution branch (MMPose's default multiscale_output=False),
or every branch with ``stage4.multiscale_output=True`` (HRNetV2, MMPose's hand and face models).
Variants are data: ``HRNET_SPECS`` holds stage specs, ``HRNet(extra)`` builds any of them.

Sums and ReLUs run in place where MMPose's do (same numbers, fewer allocations); a tensor is only written
in place when this module created it and autograd does not need it (BN outputs, sums).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from posecli.settings import HRNetExtra

STEM_CHANNELS = 64  # fixed in MMPose's HRNet, whatever the width


def _stage(num_modules: int, block: str, num_blocks: list[int], num_channels: list[int]) -> dict[str, Any]:
    """One stage spec in MMPose's ``extra`` format (num_branches follows from the lists)."""
    return {
        "num_modules": num_modules,
        "num_branches": len(num_channels),
        "block": block,
        "num_blocks": num_blocks,
        "num_channels": num_channels,
    }


# Stage specs in MMPose's `extra` format. w32/w48 are MMPose's configs; tiny is the CPU test/demo size.
HRNET_SPECS: dict[str, dict[str, dict[str, Any]]] = {
    "w32": {
        "stage1": _stage(1, "BOTTLENECK", [4], [64]),
        "stage2": _stage(1, "BASIC", [4, 4], [32, 64]),
        "stage3": _stage(4, "BASIC", [4, 4, 4], [32, 64, 128]),
        "stage4": _stage(3, "BASIC", [4, 4, 4, 4], [32, 64, 128, 256]),
    },
    "w48": {
        "stage1": _stage(1, "BOTTLENECK", [4], [64]),
        "stage2": _stage(1, "BASIC", [4, 4], [48, 96]),
        "stage3": _stage(4, "BASIC", [4, 4, 4], [48, 96, 192]),
        "stage4": _stage(3, "BASIC", [4, 4, 4, 4], [48, 96, 192, 384]),
    },
    "tiny": {
        "stage1": _stage(1, "BOTTLENECK", [1], [16]),
        "stage2": _stage(1, "BASIC", [1, 1], [8, 16]),
        "stage3": _stage(2, "BASIC", [1, 1, 1], [8, 16, 32]),
        "stage4": _stage(2, "BASIC", [1, 1, 1, 1], [8, 16, 32, 64]),
    },
}


def hrnet_extra(name: str) -> HRNetExtra:
    """The validated stage specs of a named variant (``w32``, ``w48``, ``tiny``)."""
    if name not in HRNET_SPECS:
        raise KeyError(f"unknown HRNet variant '{name}' (known: {', '.join(HRNET_SPECS)})")
    return HRNetExtra.model_validate(HRNET_SPECS[name])


# ------------------------------------------------------------------------------------------------ blocks
def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BN [+ ReLU]; state_dict keys ``0.*`` (conv) and ``1.*`` (BN)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection."""

    expansion = 1

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place on the BN output (its backward needs only BN's input)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand to ``out_channels`` (= 4x the middle width)."""

    expansion = 4

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        mid = out_channels // self.expansion
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def make_blocks(
    block: type[BasicBlock] | type[Bottleneck], in_channels: int, out_channels: int, num_blocks: int, stride: int = 1
) -> nn.Sequential:
    """``num_blocks`` residual blocks; the first gets a 1x1 conv + BN shortcut when the shape changes."""
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = conv_bn(in_channels, out_channels, 1, stride, relu=False)
    layers = [block(in_channels, out_channels, stride, downsample)]
    layers += [block(out_channels, out_channels) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def make_transition(pre_channels: list[int], cur_channels: list[int]) -> nn.ModuleList:
    """Between stages: a 3x3 conv where an existing branch changes width, strided 3x3 convs for each new branch.

    Entries are None where a branch passes through unchanged (MMPose keeps the None to keep its indices).
    """
    layers: list[nn.Module | None] = []
    for i, out_c in enumerate(cur_channels):
        if i < len(pre_channels):
            layers.append(conv_bn(pre_channels[i], out_c, 3) if pre_channels[i] != out_c else None)
            continue
        # a new branch comes from the lowest-resolution existing one, halving once per missing level
        steps = i + 1 - len(pre_channels)
        in_c = pre_channels[-1]
        downs = [conv_bn(in_c, out_c if s == steps - 1 else in_c, 3, stride=2) for s in range(steps)]
        layers.append(nn.Sequential(*downs))
    return nn.ModuleList(layers)


# ------------------------------------------------------------------------------------------------ modules
class HRModule(nn.Module):
    """Parallel branches of residual blocks, then a fuse: output i = ReLU(sum over branches j of x_j brought to i)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: list[int],
        in_channels: list[int],
        num_channels: list[int],
        multiscale_output: bool = True,
        upsample_mode: str = "nearest",
        align_corners: bool | None = None,
    ) -> None:
        super().__init__()
        self.num_branches = len(num_blocks)
        self.upsample_mode = upsample_mode  # MMPose's extra.upsample: nearest (HRNet) or bilinear (HRNetV2 configs)
        self.align_corners = align_corners if upsample_mode != "nearest" else None
        self.out_channels = [c * block.expansion for c in num_channels]  # also the fused width of each branch
        self.branches = nn.ModuleList(
            make_blocks(block, in_c, out_c, n)
            for in_c, out_c, n in zip(in_channels, self.out_channels, num_blocks, strict=True)
        )
        self.fuse_layers = self._make_fuse_layers(multiscale_output) if self.num_branches > 1 else None
        self.relu = nn.ReLU(inplace=True)
        if not multiscale_output:
            self.out_channels = self.out_channels[:1]

    def _make_fuse_layers(self, multiscale_output: bool) -> nn.ModuleList:
        """fuse_layers[i][j] brings branch j to branch i's resolution and width (None on the diagonal)."""
        channels = self.out_channels
        fuse_layers = []
        for i in range(self.num_branches if multiscale_output else 1):
            row: list[nn.Module | None] = []
            for j in range(self.num_branches):
                if j > i:  # lower resolution: 1x1 conv + BN here, upsample in forward()
                    row.append(conv_bn(channels[j], channels[i], 1, relu=False))
                elif j == i:
                    row.append(None)
                else:  # higher resolution: i - j strided 3x3 convs, ReLU between them but not after the last
                    steps = i - j
                    downs = [
                        conv_bn(channels[j], channels[i], 3, stride=2, relu=False)
                        if s == steps - 1
                        else conv_bn(channels[j], channels[j], 3, stride=2)
                        for s in range(steps)
                    ]
                    row.append(nn.Sequential(*downs))
            fuse_layers.append(nn.ModuleList(row))
        return nn.ModuleList(fuse_layers)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        x = [branch(xi) for branch, xi in zip(self.branches, x, strict=True)]
        if self.fuse_layers is None:
            return x
        fused = []
        for i, row in enumerate(self.fuse_layers):
            # Summed in branch order, as MMPose does. ``y`` is written in place only once it is a tensor this
            # loop owns: x[i] is read by the other rows, so the first sum with it is out of place.
            y: torch.Tensor | None = None
            owned = False
            for j, layer in enumerate(row):
                if j == i:
                    term = x[j]
                elif j > i:
                    # MMPose upsamples by 2**(j-i); resizing to the target size is the same when sizes divide
                    # evenly and also works for odd sizes, where MMPose would fail
                    term = F.interpolate(
                        layer(x[j]), size=x[i].shape[-2:], mode=self.upsample_mode, align_corners=self.align_corners
                    )
                else:
                    term = layer(x[j])  # ends with BN: a fresh tensor this loop may own
                if y is None:
                    y, owned = term, j != i
                elif owned:
                    y += term
                else:
                    y, owned = y + term, True
            fused.append(self.relu(y))
        return fused


class HRNet(nn.Module):
    """HRNet backbone from MMPose's ``extra`` stage specs; returns a list of features, highest resolution first.

    [(B, C, H/4, W/4)] by default; with ``stage4.multiscale_output`` every branch (HRNetV2): [H/4, H/8, H/16, H/32].
    """

    def __init__(self, extra: HRNetExtra | dict[str, Any], in_channels: int = 3, frozen_stages: int = -1) -> None:
        super().__init__()
        extra = extra if isinstance(extra, HRNetExtra) else HRNetExtra.model_validate(extra)
        self.extra = extra
        self.frozen_stages = frozen_stages

        # stem: two stride-2 3x3 convs -> 1/4 resolution
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, 3, 2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, 3, 2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)

        # stage 1: one branch of residual blocks
        s1 = extra.stage1
        block = BLOCKS[s1.block]
        channels = [s1.num_channels[0] * block.expansion]
        self.layer1 = make_blocks(block, STEM_CHANNELS, channels[0], s1.num_blocks[0])

        # stages 2..4, each preceded by its transition (registration order = MMPose's state_dict order)
        for index, spec in enumerate(extra.stages[1:], start=2):
            block = BLOCKS[spec.block]
            cur = [c * block.expansion for c in spec.num_channels]
            self.add_module(f"transition{index - 1}", make_transition(channels, cur))
            hr_modules = []
            # MMPose reads multiscale_output for stage4 only (default False): it applies to its last module
            single_output = index == 4 and not extra.stage4_multiscale
            for m in range(spec.num_modules):
                module = HRModule(
                    block,
                    spec.num_blocks,
                    cur,
                    spec.num_channels,
                    multiscale_output=not (single_output and m == spec.num_modules - 1),
                    upsample_mode=extra.upsample.mode,
                    align_corners=extra.upsample.align_corners,
                )
                hr_modules.append(module)
                cur = module.out_channels
            self.add_module(f"stage{index}", nn.Sequential(*hr_modules))
            channels = cur
        self.out_channels: list[int] = channels  # one width per output: [C] (HRNet) or all branches (HRNetV2)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """MMPose's init without a checkpoint: convs ~ N(0, 0.001), BN weight 1 and bias 0."""
        for m in self.modules():
            if any(p.is_meta for p in m.parameters(recurse=False)):
                continue  # shape-only model (built under torch.device("meta")): nothing to initialise
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> list[nn.Module]:
        """Modules frozen by ``frozen_stages`` (MMPose: 0 = stem, 1 = + layer1/transition1, k = + stage k ...)."""
        if self.frozen_stages < 0:
            return []
        frozen: list[nn.Module] = [self.conv1, self.bn1, self.conv2, self.bn2]
        for i in range(1, self.frozen_stages + 1):
            frozen.append(self.layer1 if i == 1 else getattr(self, f"stage{i}"))
            if i < 4:
                frozen.append(getattr(self, f"transition{i}"))
        return frozen

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> HRNet:
        """Switch mode but keep frozen stages (and their BN statistics) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 64, H/2, W/2)
        x = self.relu(self.bn2(self.conv2(x)))  # (B, 64, H/4, W/4)
        feats = [self.layer1(x)]
        for transition, stage in (
            (self.transition1, self.stage2),
            (self.transition2, self.stage3),
            (self.transition3, self.stage4),
        ):
            # branch i starts from branch i of the previous stage; a new branch from its lowest resolution
            inputs = [feats[min(i, len(feats) - 1)] for i in range(len(transition))]
            feats = stage([f if t is None else t(f) for t, f in zip(transition, inputs, strict=True)])
        return feats  # [(B, C, H/4, W/4)] (+ the lower resolutions with multiscale_output)
