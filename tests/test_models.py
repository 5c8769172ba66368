"""The model: MMPose 0.x state_dict keys/shapes/counts for W48/W32, tiny variants train, head, loss, flip test."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
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
from posecli.settings import ModelSettings, list_presets, load_settings

torch.set_num_threads(1)

REFERENCE_MODELS = [  # preset -> MMPose's key manifest
    ("hrnet_w48_coco_384x288_dark", "hrnet_w48_coco17.keys.tsv"),
    ("hrnet_w48_coco_wholebody_384x288_dark_plus", "hrnet_w48_wholebody133.keys.tsv"),
    ("hrnet_w32_coco_256x192", "hrnet_w32_coco17.keys.tsv"),
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
    counts = json.loads((reference_dir / "manifests.json").read_text())[manifest]
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
