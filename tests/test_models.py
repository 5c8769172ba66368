"""The model: MMPose 0.x state_dict keys/shapes/counts for W48/W32/HRNetV2-W18, tiny variants train, head, loss,
flip test, and the in-place forward equals the out-of-place one bit for bit."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from out_of_place_hrnet import out_of_place  # tests/ is on sys.path under pytest
from torch import nn

from posecli.datasets.meta import load_builtin
from posecli.models import (
    HRNET_SPECS,
    HRNet,
    JointsMSELoss,
    TopDown,
    TopdownHeatmapSimpleHead,
    build_model,
    count_parameters,
    hrnet_extra,
)
from posecli.models.hrnet import BasicBlock, HRModule
from posecli.settings import ModelSettings, list_presets, load_settings

torch.set_num_threads(1)

REFERENCE_MODELS = [  # preset -> MMPose's key manifest
    ("hrnet_w48_coco_384x288_dark", "hrnet_w48_coco17.keys.tsv"),
    ("hrnet_w48_coco_wholebody_384x288_dark_plus", "hrnet_w48_wholebody133.keys.tsv"),
    ("hrnet_w32_coco_256x192", "hrnet_w32_coco17.keys.tsv"),
    ("hrnetv2_w18_onehand10k_256x256_dark", "hrnetv2_w18_onehand10k.keys.tsv"),
]


@cache
def meta_model(preset: str) -> TopDown:
    """A preset's real module structure with shape-only (meta) tensors: no memory, no init cost; eval mode
    because training-mode BN on meta tensors is slow."""
    with torch.device("meta"):
        return build_model(load_settings(preset).model).eval()


def tiny_settings(
    out_channels: int = 5, num_deconv_layers: int = 0, kernels: tuple[int, ...] = (4, 4, 4), final_conv_kernel: int = 1
) -> ModelSettings:
    """Model settings of the tiny variant with a configurable head."""
    extra = hrnet_extra("tiny")
    return ModelSettings.model_validate(
        {
            "backbone": {"extra": extra.model_dump()},
            "head": {
                "in_channels": extra.stage4.num_channels[0],
                "out_channels": out_channels,
                "num_deconv_layers": num_deconv_layers,
                "num_deconv_filters": [8, 8, 8],
                "num_deconv_kernels": list(kernels),
                "final_conv_kernel": final_conv_kernel,
            },
        }
    )


def tiny_v2_settings(out_channels: int = 5, upsample: str = "bilinear", align_corners: bool = False) -> ModelSettings:
    """The tiny variant as HRNetV2: all four stage4 branches, concatenated by the head, one conv layer before it."""
    extra = hrnet_extra("tiny").model_dump()
    extra["stage4"]["multiscale_output"] = True
    extra["upsample"] = {"mode": upsample, "align_corners": None if upsample == "nearest" else False}
    widths = extra["stage4"]["num_channels"]
    return ModelSettings.model_validate(
        {
            "backbone": {"extra": extra},
            "head": {
                "in_channels": widths,
                "in_index": list(range(len(widths))),
                "input_transform": "resize_concat",
                "align_corners": align_corners,
                "out_channels": out_channels,
                "num_deconv_layers": 0,
                "num_conv_layers": 1,
                "num_conv_kernels": [1],
            },
        }
    )


def reference_counts(reference_dir: Path, manifest: str) -> dict:
    """MMPose's counts for a key manifest: its own .manifest.json, else the entry in manifests.json."""
    own = reference_dir / manifest.replace(".keys.tsv", ".manifest.json")
    if own.is_file():
        return json.loads(own.read_text())
    return json.loads((reference_dir / "manifests.json").read_text())[manifest]


def read_manifest(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """MMPose's key manifest: (key, shape, dtype) per state_dict entry, in order."""
    rows = []
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.split(",")) if shape else (), dtype))
    return rows


# ------------------------------------------------------------------------------------ MMPose compatibility
@pytest.mark.parametrize(("preset", "manifest"), REFERENCE_MODELS)
def test_state_dict_matches_mmpose_manifest(preset: str, manifest: str, reference_dir: Path) -> None:
    expected = read_manifest(reference_dir / manifest)
    model = meta_model(preset)
    got = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]

    got_shapes, expected_shapes = {k: s for k, s, _ in got}, {k: s for k, s, _ in expected}
    assert set(got_shapes) - set(expected_shapes) == set(), "keys MMPose does not have"
    assert set(expected_shapes) - set(got_shapes) == set(), "MMPose keys we lack"
    assert got_shapes == expected_shapes
    assert got == expected  # same order and dtypes too (float32 tensors, int64 num_batches_tracked)


@pytest.mark.parametrize(("preset", "manifest"), REFERENCE_MODELS)
def test_parameter_counts_match_mmpose(preset: str, manifest: str, reference_dir: Path) -> None:
    counts = reference_counts(reference_dir, manifest)
    model = meta_model(preset)
    state = model.state_dict()
    assert count_parameters(model) == counts["all_params"]
    assert count_parameters(model, trainable_only=True) == counts["trainable_params"]
    assert sum(v.numel() for v in state.values()) == counts["state_dict_elements"]
    assert len(list(model.buffers())) == counts["num_buffers"]
    assert len(state) == counts["entries"]


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_outputs_its_heatmap_size(preset: str) -> None:
    settings = load_settings(preset)
    model = meta_model(preset)
    (w, h), (hw, hh) = settings.data.image_size, settings.data.heatmap_size
    with torch.no_grad():
        heatmaps = model(torch.empty(2, 3, h, w, device="meta"))  # shapes only: W48 at 384x288 costs no FLOPs
    assert tuple(heatmaps.shape) == (2, settings.model.head.out_channels, hh, hw)
    assert model.num_keypoints == settings.model.head.out_channels


def test_named_variants_equal_the_presets() -> None:
    """The variant table holds the same stage specs as MMPose's configs in the presets."""
    assert hrnet_extra("w48") == load_settings("hrnet_w48_coco_384x288_dark").model.backbone.extra
    assert hrnet_extra("w32") == load_settings("hrnet_w32_coco_256x192").model.backbone.extra
    with pytest.raises(KeyError, match="unknown HRNet variant"):
        hrnet_extra("w99")


# ------------------------------------------------------------------------------------------ tiny models run
@pytest.mark.parametrize("variant", sorted(HRNET_SPECS))
def test_every_variant_builds_with_the_expected_width(variant: str) -> None:
    extra = hrnet_extra(variant)
    with torch.device("meta"):
        backbone = HRNet(extra)
    assert backbone.out_channels == [extra.stage4.num_channels[0]]
    assert [len(stage) for stage in (backbone.stage2, backbone.stage3, backbone.stage4)] == [
        s.num_modules for s in extra.stages[1:]
    ]
    # multiscale_output=False on the last module of stage4 only: one fused output, the highest resolution
    assert len(backbone.stage4[-1].fuse_layers) == 1
    assert len(backbone.stage3[-1].fuse_layers) == extra.stage3.num_branches


@pytest.mark.parametrize("preset_or_variant", ["demo", "tiny"])
def test_tiny_model_trains_every_parameter(preset_or_variant: str) -> None:
    torch.manual_seed(0)
    settings = load_settings("demo").model if preset_or_variant == "demo" else tiny_settings(out_channels=5)
    model = build_model(settings).train()
    k = settings.head.out_channels
    images = torch.randn(2, 3, 64, 48)
    heatmaps = model(images)
    assert heatmaps.shape == (2, k, 16, 12)
    assert torch.isfinite(heatmaps).all()

    target = torch.rand_like(heatmaps)
    weight = torch.ones(2, k, 1)
    loss = model.loss(heatmaps, target, weight)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not (p.grad != 0).any()]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_odd_input_sizes_work() -> None:
    """MMPose's fixed x2 upsampling breaks when a branch size is odd; resizing to the target does not."""
    model = build_model(tiny_settings()).eval()
    with torch.no_grad():
        heatmaps = model(torch.randn(1, 3, 100, 76))
    assert heatmaps.shape == (1, 5, 25, 19)


def test_channels_last_gives_the_same_heatmaps() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_settings()).eval()
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        ref = model(images)
        out = model.to(memory_format=torch.channels_last)(images.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-9)


def test_init_follows_mmpose() -> None:
    torch.manual_seed(0)
    model = build_model(load_settings("demo").model)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    weights = torch.cat([w.flatten() for w in convs])
    assert weights.mean().abs() < 1e-4 and 0.0009 < weights.std() < 0.0011
    assert torch.count_nonzero(model.keypoint_head.final_layer.bias) == 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_frozen_stages_stay_frozen_in_train_mode() -> None:
    settings = tiny_settings()
    settings.backbone.frozen_stages = 1
    model = build_model(settings).train()
    backbone = model.backbone
    frozen = [backbone.conv1, backbone.bn1, backbone.conv2, backbone.bn2, backbone.layer1, backbone.transition1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert not backbone.bn1.training and not backbone.layer1[0].bn1.training
    assert all(p.requires_grad for p in backbone.stage2.parameters())
    assert backbone.stage2.training
    trainable = count_parameters(model, trainable_only=True)
    assert trainable == count_parameters(model) - sum(p.numel() for m in frozen for p in m.parameters())


# ------------------------------------------------------------------------------------------------- the head
@pytest.mark.parametrize(
    ("kernels", "final_conv_kernel"), [((4, 4), 1), ((4, 3, 2), 1), ((3, 2), 3), ((2,), 3), ((), 3)]
)
def test_head_deconvs_double_the_size(kernels: tuple[int, ...], final_conv_kernel: int) -> None:
    head = TopdownHeatmapSimpleHead(
        in_channels=6,
        out_channels=4,
        num_deconv_layers=len(kernels),
        num_deconv_filters=[8] * len(kernels),
        num_deconv_kernels=kernels,
        final_conv_kernel=final_conv_kernel,
    )
    out = head(torch.randn(2, 6, 5, 3))
    up = 2 ** len(kernels)
    assert out.shape == (2, 4, 5 * up, 3 * up)
    # MMPose's keys: deconv_layers.{0,3,6}.weight (ConvTranspose, no bias), .{1,4,7}.* (BN), final_layer.*
    expected = []
    in_c = 6
    for i, k in enumerate(kernels):
        expected += [(f"deconv_layers.{3 * i}.weight", (in_c, 8, k, k))]
        expected += [
            (f"deconv_layers.{3 * i + 1}.{n}", (8,)) for n in ("weight", "bias", "running_mean", "running_var")
        ]
        expected += [(f"deconv_layers.{3 * i + 1}.num_batches_tracked", ())]
        in_c = 8
    expected += [("final_layer.weight", (4, in_c, final_conv_kernel, final_conv_kernel)), ("final_layer.bias", (4,))]
    assert [(k, tuple(v.shape)) for k, v in head.state_dict().items()] == expected


def test_model_with_deconv_head_matches_settings() -> None:
    settings = tiny_settings(num_deconv_layers=2, kernels=(4, 3, 2), final_conv_kernel=3)
    model = build_model(settings)
    keys = model.state_dict().keys()
    assert "keypoint_head.deconv_layers.0.weight" in keys and "keypoint_head.deconv_layers.4.running_var" in keys
    assert "keypoint_head.deconv_layers.6.weight" not in keys
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5, 32, 32)


# ------------------------------------------------------------------------------------------------- the loss
def mmpose_joints_mse(output, target, weight, use_target_weight, loss_weight):  # noqa: ANN001, ANN201
    """MMPose 0.x's formula written out as a per-keypoint loop over nn.MSELoss (the reference)."""
    b, k = output.shape[:2]
    pred, gt = output.reshape(b, k, -1), target.reshape(b, k, -1)
    loss = 0.0
    for j in range(k):
        if use_target_weight:
            loss += nn.functional.mse_loss(pred[:, j] * weight[:, j], gt[:, j] * weight[:, j])
        else:
            loss += nn.functional.mse_loss(pred[:, j], gt[:, j])
    return loss / k * loss_weight


@pytest.mark.parametrize(("use_target_weight", "loss_weight"), [(True, 1.0), (False, 1.0), (True, 2.5)])
def test_loss_equals_mmpose_formula(use_target_weight: bool, loss_weight: float) -> None:
    torch.manual_seed(0)
    output, target = torch.randn(3, 7, 8, 6), torch.rand(3, 7, 8, 6)
    weight = (torch.rand(3, 7, 1) > 0.3).float()
    loss = JointsMSELoss(use_target_weight, loss_weight)(output, target, weight)
    ref = mmpose_joints_mse(output, target, weight, use_target_weight, loss_weight)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)


def test_loss_by_hand() -> None:
    """Keypoint 0 is all wrong by 1 (MSE 1), keypoint 1 is weighted out: loss = (1 + 0) / 2 * loss_weight."""
    output, target = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    weight = torch.tensor([[[1.0], [0.0]]])
    assert JointsMSELoss(True, 1.0)(output, target, weight).item() == pytest.approx(0.5)
    assert JointsMSELoss(True, 3.0)(output, target, weight).item() == pytest.approx(1.5)
    assert JointsMSELoss(False, 1.0)(output, target, weight).item() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ flip test
def identity_model(channels: int) -> TopDown:
    """A model whose heatmaps are its input (identity backbone, 1x1 identity conv): outputs are predictable."""
    head = TopdownHeatmapSimpleHead(channels, channels, num_deconv_layers=0)
    with torch.no_grad():
        head.final_layer.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
    return TopDown(nn.Identity(), head)


def test_flip_test_on_a_predictable_model() -> None:
    model = identity_model(3)
    row = torch.tensor([0.0, 1.0, 2.0, 3.0])
    images = torch.stack([row, 10 * row, 100 * row]).reshape(1, 3, 1, 4)  # channel c holds 10^c * [0 1 2 3]
    flip_index = [0, 2, 1]  # keypoints 1 and 2 are a left/right pair

    # mirrored then flipped back = the input with channels 1 and 2 swapped; the shift repeats column 0
    out = model.forward_flip_test(images, flip_index, shift_heatmap=True)
    expected_flipped = torch.tensor([[0, 0, 1, 2], [0, 0, 100, 200], [0, 0, 10, 20]], dtype=torch.float32)
    torch.testing.assert_close(out[0, :, 0], (images[0, :, 0] + expected_flipped) * 0.5)
    assert out[0, 0, 0].tolist() == [0.0, 0.5, 1.5, 2.5]

    out = model.forward_flip_test(images, flip_index, shift_heatmap=False)
    assert out[0, 1, 0].tolist() == [0.0, 55.0, 110.0, 165.0]  # (10 * row + 100 * row) / 2


def numpy_flip_test(heatmaps: np.ndarray, heatmaps_of_mirror: np.ndarray, flip_pairs, shift: bool) -> np.ndarray:  # noqa: ANN001
    """MMPose 0.x's recipe on numpy arrays: swap pair channels, mirror W, shift by slice assignment, average."""
    flipped = heatmaps_of_mirror.copy()
    for left, right in flip_pairs:
        flipped[:, [left, right]] = flipped[:, [right, left]]
    flipped = flipped[..., ::-1].copy()
    if shift:
        flipped[:, :, :, 1:] = flipped[:, :, :, :-1]  # numpy copes with the overlap: a one-pixel shift right
    return (heatmaps + flipped) * 0.5


@pytest.mark.parametrize("shift", [True, False])
def test_flip_test_equals_two_pass_mmpose_recipe(shift: bool) -> None:
    torch.manual_seed(0)
    meta = load_builtin("coco")
    model = build_model(tiny_settings(out_channels=17)).eval()
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        ref = numpy_flip_test(model(images).numpy(), model(images.flip(3)).numpy(), meta.flip_pairs, shift)
        out = model.forward_flip_test(images, meta.flip_index, shift_heatmap=shift)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-9)


def test_flip_test_of_a_symmetric_image_is_symmetric() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_settings(out_channels=4)).eval()
    half = torch.randn(1, 3, 64, 24)
    images = torch.cat([half, half.flip(3)], dim=3)  # horizontally symmetric (1, 3, 64, 48)
    with torch.no_grad():
        plain = model(images)
        out = model.forward_flip_test(images, [0, 1, 2, 3], shift_heatmap=False)
    assert not torch.allclose(plain, plain.flip(3), rtol=1e-3, atol=0)  # the network itself is not symmetric
    torch.testing.assert_close(out, out.flip(3))


def test_flip_test_is_flip_equivariant() -> None:
    """Without the shift, flip-testing the mirror image gives the mirrored, keypoint-swapped result."""
    torch.manual_seed(0)
    meta = load_builtin("coco")
    model = build_model(tiny_settings(out_channels=17)).eval()
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        out = model.forward_flip_test(images, meta.flip_index, shift_heatmap=False)
        out_of_mirror = model.forward_flip_test(images.flip(3), meta.flip_index, shift_heatmap=False)
    torch.testing.assert_close(out_of_mirror, out.flip(3)[:, meta.flip_index], rtol=1e-4, atol=1e-9)


def test_flip_test_rejects_a_wrong_flip_index() -> None:
    model = identity_model(3)
    with pytest.raises(ValueError, match="flip_index has 2 entries"):
        model.forward_flip_test(torch.zeros(1, 3, 2, 2), [1, 0], shift_heatmap=True)


# ------------------------------------------------------------------------------------------------ HRNetV2
def test_hrnetv2_preset_is_mmpose_config() -> None:
    """hrnetv2_w18_onehand10k_256x256_dark: the backbone outputs 4 branches, the head reads their concatenation."""
    settings = load_settings("hrnetv2_w18_onehand10k_256x256_dark")
    model = meta_model("hrnetv2_w18_onehand10k_256x256_dark")
    assert model.backbone.out_channels == [18, 36, 72, 144]
    assert len(model.backbone.stage4[-1].fuse_layers) == 4 and model.backbone.stage4[-1].upsample_mode == "bilinear"
    head = model.keypoint_head
    assert head.in_channels == 270 and head.in_index == [0, 1, 2, 3] and head.input_transform == "resize_concat"
    assert [type(m).__name__ for m in head.final_layer] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert head.final_layer[0].bias is not None  # MMPose's extra conv has a bias, the backbone's convs do not
    with torch.no_grad():
        feats = model.backbone(torch.empty(2, 3, 256, 256, device="meta"))
    assert [tuple(f.shape) for f in feats] == [(2, 18, 64, 64), (2, 36, 32, 32), (2, 72, 16, 16), (2, 144, 8, 8)]
    assert settings.model.head.out_channels == 21 and list(settings.data.heatmap_size) == [64, 64]


@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
def test_tiny_hrnetv2_trains_every_parameter(upsample: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_v2_settings(out_channels=5, upsample=upsample)).train()
    images = torch.randn(2, 3, 64, 64)
    feats = model.backbone(images)
    assert [tuple(f.shape) for f in feats] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    heatmaps = model(images)
    assert heatmaps.shape == (2, 5, 16, 16)
    assert torch.isfinite(heatmaps).all()
    loss = model.loss(heatmaps, torch.rand_like(heatmaps), torch.ones(2, 5, 1))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not (p.grad != 0).any()]
    assert missing == []  # the lower-resolution branches of the last module now reach the loss through the head
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 100, 76)).shape == (1, 5, 25, 19)  # odd sizes: resized, not x2


def test_resize_concat_head_equals_its_definition() -> None:
    """Selected maps upsampled bilinearly (align_corners as set) to the first one's size, concatenated, then
    conv + BN + ReLU and the final conv: written out with torch.nn.functional."""
    torch.manual_seed(0)
    feats = [torch.randn(2, c, 16 // 2**i, 12 // 2**i) for i, c in enumerate((4, 6, 8, 10))]
    for align_corners in (False, True):
        head = TopdownHeatmapSimpleHead(
            [6, 10, 4],
            3,
            num_deconv_layers=0,
            in_index=[1, 3, 0],
            input_transform="resize_concat",
            align_corners=align_corners,
            num_conv_layers=1,
            num_conv_kernels=[3],
        ).eval()
        with torch.no_grad():
            for m in head.modules():
                if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                    for p in (*m.parameters(), *m.buffers()):
                        if p.is_floating_point():
                            p.copy_(torch.rand_like(p) + 0.5)
            size = feats[1].shape[-2:]  # in_index[0] = 1: the head works at branch 1's resolution
            resized = [F.interpolate(feats[i], size=size, mode="bilinear", align_corners=align_corners) for i in (3, 0)]
            x = torch.cat([feats[1], *resized], dim=1)
            conv, bn, _, final = head.final_layer
            x = F.conv2d(x, conv.weight, conv.bias, padding=1)
            x = F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
            expected = F.conv2d(x, final.weight, final.bias)
            out = head(feats)
        assert head.in_channels == 20 and out.shape == (2, 3, 8, 6)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    keys = list(head.state_dict())
    assert keys[:2] == ["final_layer.0.weight", "final_layer.0.bias"] and keys[-2:] == [
        "final_layer.3.weight",
        "final_layer.3.bias",
    ]


@pytest.mark.parametrize(("mode", "align_corners"), [("bilinear", False), ("bilinear", True), ("nearest", None)])
def test_fuse_layers_upsample_as_mmpose(mode: str, align_corners: bool | None) -> None:
    """Fused output 0 = ReLU(x0 + Upsample(scale_factor=2, mode)(BN(conv1x1(x1)))), MMPose's nn.Upsample form."""
    torch.manual_seed(0)
    module = HRModule(BasicBlock, [1, 1], [4, 8], [4, 8], True, upsample_mode=mode, align_corners=align_corners)
    module.eval()
    x = [torch.randn(2, 4, 8, 6), torch.randn(2, 8, 4, 3)]
    with torch.no_grad():
        b0, b1 = module.branches[0](x[0]), module.branches[1](x[1])
        up = nn.Upsample(scale_factor=2, mode=mode, align_corners=align_corners)(module.fuse_layers[0][1](b1))
        expected0 = F.relu(b0 + up)
        expected1 = F.relu(module.fuse_layers[1][0](b0) + b1)
        out = module([t.clone() for t in x])
    assert torch.equal(out[0], expected0) and torch.equal(out[1], expected1)


# ----------------------------------------------------------------------------- in-place sums: same numbers
@pytest.mark.parametrize("variant", ["demo", "tiny_v2", "tiny_v2_nearest"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_in_place_forward_equals_out_of_place_bit_for_bit(variant: str, channels_last: bool) -> None:
    torch.manual_seed(0)
    if variant == "demo":
        settings = load_settings("demo").model
    else:
        settings = tiny_v2_settings(upsample="nearest" if variant.endswith("nearest") else "bilinear")
    model = build_model(settings)
    with torch.no_grad():  # non-trivial BN statistics and weights, so every branch matters in eval mode
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, nn.Conv2d):
                m.weight.normal_(0, 0.2)
    images = torch.randn(2, 3, 64, 64)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    fresh = copy.deepcopy(model)

    with torch.inference_mode():
        fast = model.eval()(images)
    # training mode (batch statistics) with autograd: the in-place sums must keep every gradient intact
    fast_model = copy.deepcopy(fresh).train()
    fast_train = fast_model(images)
    fast_train.square().mean().backward()

    with out_of_place(), torch.inference_mode():
        slow = model(images)
    slow_model = copy.deepcopy(fresh).train()
    with out_of_place():
        slow_train = slow_model(images)
        slow_train.square().mean().backward()

    assert torch.equal(fast, slow)  # eval: bit for bit
    assert torch.equal(fast_train, slow_train)  # training-mode forward: bit for bit too
    slow_grads = dict(slow_model.named_parameters())
    for name, p in fast_model.named_parameters():  # backward sums may run in another order: float rounding
        torch.testing.assert_close(p.grad, slow_grads[name].grad, rtol=1e-5, atol=1e-12, msg=name)
