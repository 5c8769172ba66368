"""Device-side batch preparation: torch heatmap targets equal MMPose's, torch normalisation equal to the CPU's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_codec import mmpose_msra_loop

from posecli.codec import HeatmapCodec, normalize_images
from posecli.codec import encode as codec_module
from posecli.transforms import normalize_image

torch.set_num_threads(1)

SETTINGS = ["sigma2_msra", "sigma2_unbiased", "sigma3_unbiased_288x384"]


@pytest.fixture(params=["numpy", "torch"], autouse=True)
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice on the CPU: the NumPy route CPU tensors take, and the torch maths CUDA tensors take."""
    if request.param == "torch":
        monkeypatch.setattr(codec_module, "_on_numpy", lambda t: False)
    return request.param


@pytest.fixture(scope="module")
def target_ref(reference_dir: Path) -> dict:
    """MMPose's targets (npz arrays) plus the json that documents their settings under "settings"."""
    with np.load(reference_dir / "target_ref.npz") as data:
        ref = dict(data)
    ref["settings"] = json.loads((reference_dir / "target_ref.json").read_text())["settings"]
    return ref


def reference_case(target_ref: dict, name: str) -> tuple[HeatmapCodec, torch.Tensor, torch.Tensor]:
    setting = target_ref["settings"][name]
    codec = HeatmapCodec(
        setting["image_size_wh"], setting["heatmap_size_wh"], setting["sigma"], setting["unbiased_encoding"]
    )
    joints = torch.from_numpy(target_ref[setting.get("joints", "joints_3d")][..., :2].copy())  # (4, 17, 2)
    visible = torch.from_numpy(target_ref["joints_3d_visible"][..., 0].copy())  # (4, 17)
    return codec, joints, visible


@pytest.mark.parametrize("name", SETTINGS)
def test_torch_targets_equal_mmpose_reference(target_ref: dict, name: str) -> None:
    """Includes points outside the heatmap, corners, half pixels and the .5-rounding cases (idx 8 and 10)."""
    codec, joints, visible = reference_case(target_ref, name)
    targets, weights = codec.encode_torch(joints, visible)
    assert targets.dtype == torch.float32 and weights.dtype == torch.float32
    assert targets.shape == target_ref[f"target_{name}"].shape and weights.shape == (4, 17)
    np.testing.assert_allclose(targets.numpy(), target_ref[f"target_{name}"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(weights.numpy(), target_ref[f"target_weight_{name}"][..., 0])
    zero = target_ref[f"target_{name}"] == 0  # outside MSRA's patch, dropped keypoints: exactly 0, not tiny
    assert (targets.numpy()[zero] == 0).all()


def test_torch_rounding_edge_cases(target_ref: dict) -> None:
    """idx 8 (x = 214.8) and 10 (y = -28.8): MSRA tests its rounded corners, unbiased its exact ones."""
    joints = torch.from_numpy(target_ref["joints_3d"][:1, :, :2].copy())
    visible = torch.from_numpy(target_ref["joints_3d_visible"][:1, :, 0].copy())
    _, msra = HeatmapCodec((192, 256), (48, 64), 2).encode_torch(joints, visible)
    maps, unbiased = HeatmapCodec((192, 256), (48, 64), 2, unbiased_encoding=True).encode_torch(joints, visible)
    assert (msra[0, 8].item(), unbiased[0, 8].item()) == (0.0, 1.0)
    assert (msra[0, 10].item(), unbiased[0, 10].item()) == (1.0, 0.0)
    assert maps[0, 8].max() > 0 and maps[0, 10].max() == 0


@pytest.mark.parametrize("sigma", [1.5, 2.5, 1.7, 3])
@pytest.mark.parametrize("unbiased", [False, True])
def test_torch_targets_equal_plain_loop(sigma: float, unbiased: bool) -> None:
    """Other sigmas (non-integer patch sizes), half-pixel centres, points far outside, on 3 x 40 keypoints."""
    rng = np.random.default_rng(int(sigma * 10) + unbiased)
    joints = rng.uniform(-40, 230, (3, 40, 2)).astype(np.float32)
    joints[:, :8] = np.round(joints[:, :8] / 4) * 4 + 2  # exact half-pixel centres after the stride 4
    joints[:, 8] = [-2.0, -2.0]  # int(-0.5 + 0.5) = 0 and trunc(-x) towards zero
    visible = (rng.random((3, 40)) < 0.8).astype(np.float32) * 2  # COCO's 2 counts as 1
    codec = HeatmapCodec((192, 256), (48, 64), sigma, unbiased)
    targets, weights = codec.encode_torch(torch.from_numpy(joints), torch.from_numpy(visible))
    for person in range(3):
        expected_maps, expected_weights = mmpose_msra_loop(
            joints[person], np.minimum(visible[person], 1), sigma, (192, 256), (48, 64), unbiased
        )
        np.testing.assert_allclose(targets[person].numpy(), expected_maps, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(weights[person].numpy(), expected_weights)
    cpu_maps, cpu_weights = codec.encode_batch(joints, visible)  # the CPU encoder agrees too
    np.testing.assert_allclose(targets.numpy(), cpu_maps, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(weights.numpy(), cpu_weights)


@pytest.mark.parametrize("unbiased", [False, True])
def test_torch_joint_weights(unbiased: bool) -> None:
    """use_different_joint_weights: weights times joint weights; maps drawn by visibility alone (weight 0.4 draws)."""
    joints = torch.tensor([[[96.0, 128.0], [50.0, 60.0], [100.0, 20.0], [500.0, 20.0]]])
    visible = torch.tensor([[2.0, 0.0, 1.0, 1.0]])
    codec = HeatmapCodec((192, 256), (48, 64), 2, unbiased, joint_weights=[1.5, 1.0, 0.4, 2.0])
    targets, weights = codec.encode_torch(joints, visible)
    np.testing.assert_array_equal(weights.numpy(), np.float32([[1.5, 0.0, 0.4, 0.0]]))  # idx 3 is off the heatmap
    assert targets[0, 0, 32, 24] == 1.0 and targets[0, 2, 5, 25] == 1.0
    assert targets[0, 1].max() == 0 and targets[0, 3].max() == 0
    cpu_maps, cpu_weights = codec.encode_batch(joints.numpy(), visible.numpy())
    np.testing.assert_allclose(targets.numpy(), cpu_maps, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(weights.numpy(), cpu_weights)
    with pytest.raises(ValueError, match="joint_weights"):
        HeatmapCodec((192, 256), (48, 64), 2, joint_weights=[1.0]).encode_torch(joints, visible)
    with pytest.raises(ValueError, match="B, K, 2"):
        codec.encode_torch(joints[0], visible[0])


def test_cpu_msra_encoder_draws_only_the_patch() -> None:
    """The CPU encoder pastes MMPose's 13 x 13 patch (sigma 2): a patch cut by the border keeps MMPose's part."""
    codec = HeatmapCodec((192, 256), (48, 64), 2)
    maps, weights = codec.encode(np.array([[2.0, 3.99], [96.0, 128.0]], np.float32), np.ones(2))
    assert np.count_nonzero(maps[1]) == 169 and maps[1, 32, 24] == 1.0
    assert np.count_nonzero(maps[0]) == 8 * 8 and maps[0, 1, 1] == 1.0  # centre (1, 1): rows/cols 0..7 of 13
    np.testing.assert_array_equal(weights, [1.0, 1.0])


@pytest.mark.parametrize("channels_last", [False, True])
def test_normalize_images_equals_cpu_normalisation(channels_last: bool) -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 16, 12, 3), dtype=np.uint8)
    crops[0, 0, :4, 0] = [0, 1, 254, 255]
    expected = np.stack([normalize_image(c) for c in crops])  # (3, 3, 16, 12) via OpenCV's LUT
    out = normalize_images(torch.from_numpy(crops), channels_last=channels_last)
    assert out.shape == (3, 3, 16, 12) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    np.testing.assert_array_equal(out.numpy(), expected)
    nchw = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(normalize_images(nchw, channels_first=True).numpy(), expected)
    with pytest.raises(ValueError, match="B, H, W, 3"):
        normalize_images(nchw)
    with pytest.raises(ValueError, match="uint8"):
        normalize_images(torch.zeros(1, 4, 4, 3))


@pytest.mark.gpu
@pytest.mark.parametrize("name", SETTINGS)
def test_cuda_targets_equal_mmpose_reference(target_ref: dict, name: str) -> None:
    codec, joints, visible = reference_case(target_ref, name)
    targets, weights = codec.encode_torch(joints.cuda(), visible.cuda())
    assert targets.is_cuda and weights.is_cuda
    np.testing.assert_allclose(targets.cpu().numpy(), target_ref[f"target_{name}"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(weights.cpu().numpy(), target_ref[f"target_weight_{name}"][..., 0])


@pytest.mark.gpu
def test_cuda_normalisation_equals_cpu() -> None:
    crops = torch.randint(0, 256, (4, 32, 24, 3), dtype=torch.uint8)
    expected = normalize_images(crops)
    got = normalize_images(crops.cuda(), channels_last=True)
    assert got.is_cuda and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)
