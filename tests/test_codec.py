"""Heatmap codec: MMPose 0.29's own numbers (targets, decoding), DARK against a per-keypoint OpenCV loop, flips."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posecli.codec import (
    HeatmapCodec,
    decode_heatmaps,
    flip_back,
    flip_keypoints_xy,
    gaussian_kernel_1d,
    heatmap_to_image,
    keypoints_from_heatmaps,
)
from posecli.codec import decode as codec  # the decoding module: its constants are patched below

COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def target_ref(reference_dir: Path) -> dict:
    """MMPose's targets (npz arrays) plus the json that documents their settings under "settings"."""
    with np.load(reference_dir / "target_ref.npz") as data:
        ref = dict(data)
    ref["settings"] = json.loads((reference_dir / "target_ref.json").read_text())["settings"]
    return ref


@pytest.fixture(scope="module")
def decode_ref(reference_dir: Path) -> dict:
    """MMPose's keypoints_from_heatmaps inputs and outputs plus the json "settings"."""
    with np.load(reference_dir / "decode_ref.npz") as data:
        ref = dict(data)
    ref["settings"] = json.loads((reference_dir / "decode_ref.json").read_text())["settings"]
    return ref


# ---------------------------------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("name", ["sigma2_msra", "sigma2_unbiased", "sigma3_unbiased_288x384"])
def test_encode_matches_mmpose_reference(target_ref: dict, name: str) -> None:
    setting = target_ref["settings"][name]
    joints = target_ref[setting.get("joints", "joints_3d")][..., :2]  # (4, 17, 2)
    visible = target_ref["joints_3d_visible"][..., 0]  # (4, 17)
    enc = HeatmapCodec(
        setting["image_size_wh"], setting["heatmap_size_wh"], setting["sigma"], setting["unbiased_encoding"]
    )
    heatmaps, weights = enc.encode_batch(joints, visible)
    assert heatmaps.dtype == np.float32 and weights.dtype == np.float32
    np.testing.assert_allclose(heatmaps, target_ref[f"target_{name}"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(weights, target_ref[f"target_weight_{name}"][..., 0])
    for person in range(joints.shape[0]):  # the single-person call gives the same
        one_heatmaps, one_weights = enc.encode(joints[person], visible[person])
        np.testing.assert_array_equal(one_heatmaps, heatmaps[person])
        np.testing.assert_array_equal(one_weights, weights[person])


def test_encode_rounding_edge_cases(target_ref: dict) -> None:
    """idx 8 (x = 214.8) and 10 (y = -28.8): MSRA tests its rounded corners, unbiased its exact ones."""
    joints, visible = target_ref["joints_3d"][0, :, :2], target_ref["joints_3d_visible"][0, :, 0]
    _, msra = HeatmapCodec((192, 256), (48, 64), 2).encode(joints, visible)
    unbiased_maps, unbiased = HeatmapCodec((192, 256), (48, 64), 2, unbiased_encoding=True).encode(joints, visible)
    assert (msra[8], unbiased[8]) == (0.0, 1.0)  # int(53.7 + .5) - 6 = 48 >= W, but 53.7 - 6 < 48
    assert (msra[10], unbiased[10]) == (1.0, 0.0)  # int(-7.2 + .5) + 7 = 1 >= 0, but -7.2 + 7 < 0
    assert unbiased_maps[8].max() > 0 and unbiased_maps[10].max() == 0


def mmpose_msra_loop(
    joints: np.ndarray,
    visible: np.ndarray,
    sigma: float,
    image_wh: tuple[int, int],
    heatmap_wh: tuple[int, int],
    unbiased: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """MMPose 0.x _msra_generate_target written plainly, one keypoint at a time."""
    w, h = heatmap_wh
    stride = np.asarray(image_wh, dtype=np.float64) / np.asarray(heatmap_wh, dtype=np.float64)
    target, weight = np.zeros((len(joints), h, w), np.float32), np.zeros(len(joints), np.float32)
    tmp_size = sigma * 3
    for j, (x, y) in enumerate(joints.astype(np.float32)):
        weight[j] = visible[j]
        if unbiased:
            mu_x, mu_y = float(x) / stride[0], float(y) / stride[1]
            ul, br = (mu_x - tmp_size, mu_y - tmp_size), (mu_x + tmp_size + 1, mu_y + tmp_size + 1)
        else:
            mu_x, mu_y = int(float(x) / stride[0] + 0.5), int(float(y) / stride[1] + 0.5)
            ul = (int(mu_x - tmp_size), int(mu_y - tmp_size))
            br = (int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1))
        if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
            weight[j] = 0
        if weight[j] <= 0.5:
            continue
        if unbiased:
            gx, gy = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)[:, None]
            target[j] = np.exp(
                -((gx - np.float32(mu_x)) ** 2 + (gy - np.float32(mu_y)) ** 2) / np.float32(2 * sigma**2)
            )
            continue
        size = 2 * tmp_size + 1
        gx = np.arange(0, size, 1, np.float32)
        g = np.exp(-((gx - size // 2) ** 2 + (gx[:, None] - size // 2) ** 2) / np.float32(2 * sigma**2))
        g_x, g_y = (max(0, -ul[0]), min(br[0], w) - ul[0]), (max(0, -ul[1]), min(br[1], h) - ul[1])
        img_x, img_y = (max(0, ul[0]), min(br[0], w)), (max(0, ul[1]), min(br[1], h))
        target[j, img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[g_y[0] : g_y[1], g_x[0] : g_x[1]]
    return target, weight


@pytest.mark.parametrize("sigma", [1.5, 2.5, 1.7])
@pytest.mark.parametrize("unbiased", [False, True])
def test_encode_matches_plain_loop_for_other_sigmas(sigma: float, unbiased: bool) -> None:
    rng = np.random.default_rng(int(sigma * 10))
    joints = rng.uniform(-40, 230, (60, 2)).astype(np.float32)
    joints[:8] = np.round(joints[:8] / 4) * 4 + 2  # exact half-pixel centres after the stride
    visible = (rng.random(60) < 0.8).astype(np.float32)
    heatmaps, weights = HeatmapCodec((192, 256), (48, 64), sigma, unbiased).encode(joints, visible)
    expected_maps, expected_weights = mmpose_msra_loop(joints, visible, sigma, (192, 256), (48, 64), unbiased)
    np.testing.assert_allclose(heatmaps, expected_maps, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(weights, expected_weights)


def test_encode_visibility_and_joint_weights() -> None:
    keypoints = np.array([[96.0, 128.0], [50.0, 60.0], [100.0, 20.0]], dtype=np.float32)
    visible = np.array([2, 0, 1])  # COCO's 2 counts as visible, weight 1
    enc = HeatmapCodec((192, 256), (48, 64), 2, joint_weights=[1.5, 1.0, 0.5])
    heatmaps, weights = enc.encode(keypoints, visible)
    np.testing.assert_array_equal(weights, [1.5, 0.0, 0.5])
    assert heatmaps[1].max() == 0.0
    assert heatmaps[0, 32, 24] == 1.0 and heatmaps[2, 5, 25] == 1.0  # peak at the rounded centre, value 1
    assert np.count_nonzero(heatmaps[0]) == 13 * 13  # a 6 sigma + 1 patch, nothing outside it
    with pytest.raises(ValueError, match="joint_weights"):
        HeatmapCodec((192, 256), (48, 64), 2, joint_weights=[1.0]).encode(keypoints, visible)


# ---------------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", ["none", "default", "unbiased_k11", "unbiased_k17"])
def test_decode_matches_mmpose_reference(decode_ref: dict, name: str) -> None:
    kwargs = decode_ref["settings"][name]["call_kwargs"]
    preds, maxvals = keypoints_from_heatmaps(
        decode_ref["heatmaps"], decode_ref["centers"], decode_ref["scales"], **kwargs
    )
    assert preds.shape == (8, 17, 2) and maxvals.shape == (8, 17, 1) and preds.dtype == np.float32
    np.testing.assert_allclose(preds, decode_ref[f"preds_{name}"], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(maxvals, decode_ref[f"maxvals_{name}"])


@pytest.mark.parametrize("kernel", [11, 17])
def test_dark_exact_path_is_bit_exact_on_reference(
    decode_ref: dict, kernel: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every keypoint sent through the exact path, the result is MMPose's to the last bit."""
    monkeypatch.setattr(codec, "_MAX_ROUNDING_PX", 0.0)
    preds, _ = keypoints_from_heatmaps(
        decode_ref["heatmaps"], decode_ref["centers"], decode_ref["scales"], "unbiased", kernel
    )
    np.testing.assert_array_equal(preds, decode_ref[f"preds_unbiased_k{kernel}"])


def mmpose_dark_loop(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """MMPose 0.x's DARK written plainly: per-map cv2 blur of the zero-padded map, rescale, log, per-keypoint Taylor."""
    n, k, h, w = heatmaps.shape
    r = kernel // 2
    flat = heatmaps.reshape(n, k, -1)
    idx, maxvals = flat.argmax(axis=2), flat.max(axis=2)
    preds = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    preds[maxvals <= 0] = -1
    for i in range(n):
        for j in range(k):
            padded = np.zeros((h + 2 * r, w + 2 * r), dtype=np.float32)
            padded[r : r + h, r : r + w] = heatmaps[i, j]
            blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[r : r + h, r : r + w]
            with np.errstate(all="ignore"):
                blurred *= heatmaps[i, j].max() / blurred.max()
                hm = np.log(np.maximum(blurred, np.float32(1e-10)))
            px, py = int(preds[i, j, 0]), int(preds[i, j, 1])
            if 1 < px < w - 2 and 1 < py < h - 2:
                dx = 0.5 * float(hm[py, px + 1] - hm[py, px - 1])
                dy = 0.5 * float(hm[py + 1, px] - hm[py - 1, px])
                dxx = 0.25 * (float(hm[py, px + 2]) - 2 * float(hm[py, px]) + float(hm[py, px - 2]))
                dxy = 0.25 * float(hm[py + 1, px + 1] - hm[py - 1, px + 1] - hm[py + 1, px - 1] + hm[py - 1, px - 1])
                dyy = 0.25 * (float(hm[py + 2, px]) - 2 * float(hm[py, px]) + float(hm[py - 2, px]))
                if dxx * dyy - dxy**2 != 0:
                    preds[i, j] -= np.linalg.inv(np.array([[dxx, dxy], [dxy, dyy]])) @ np.array([dx, dy])
    return preds


def awkward_heatmaps(h: int, w: int, seed: int) -> np.ndarray:
    """(2, 12, H, W) maps that stress every branch: peaks near borders, wide/weak/flat peaks, noise, negative
    backgrounds that make MMPose's clamp bite, a lone spike on a negative map, maxima <= 0, ties."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    maps = np.zeros((2, 12, h, w), dtype=np.float32)
    for n in range(2):
        for k in range(12):
            cx, cy = rng.uniform(-1, w), rng.uniform(-1, h)
            sigma = rng.uniform(1.0, 5.0)
            maps[n, k] = rng.uniform(0.05, 1.0) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
        maps[n, 1:4] += rng.normal(0, 0.02, (3, h, w))
        maps[n, 4] = np.abs(rng.normal(0, 0.004, (h, w)))  # noise only
        maps[n, 5] -= 0.3  # negative background around a peak: the clamp at 1e-10 is active near it
        maps[n, 6] = -1.0
        maps[n, 6, h // 2, w // 2] = 0.5  # lone spike: whole blurred map < 0, MMPose's rescale factor is negative
        maps[n, 7] = 0.0
        maps[n, 8] = -np.abs(maps[n, 8])
        maps[n, 9, 2:5, 2:5] = maps[n, 9].max()  # ties: the first maximum wins
    return maps


@pytest.mark.parametrize(("h", "w", "kernel"), [(64, 48, 11), (64, 48, 17), (20, 16, 5), (9, 7, 3), (12, 10, 17)])
def test_dark_matches_per_keypoint_loop(h: int, w: int, kernel: int) -> None:
    maps = awkward_heatmaps(h, w, seed=h + kernel)
    expected = mmpose_dark_loop(maps, kernel)
    coords, maxvals = decode_heatmaps(torch.from_numpy(maps), "unbiased", kernel)
    np.testing.assert_allclose(coords.numpy(), expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(maxvals.numpy(), maps.reshape(2, 12, -1).max(axis=2))
    assert (coords[:, 7].numpy() == -1).all() and (coords[:, 8].numpy() == -1).all()  # max <= 0


@pytest.mark.parametrize("chunk", [4, 256])
def test_cpu_dark_neighbourhoods_at_map_and_buffer_edges(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """The CPU pass copies rows of the maps' shared buffer: peaks in the corners of the first and last maps, chunk
    boundaries, and a NaN map between two others must not change any other map's result."""
    monkeypatch.setattr(codec, "_CHUNK_MAPS", chunk)
    maps = awkward_heatmaps(30, 24, seed=3)[:, :9].reshape(1, 18, 30, 24).copy()
    y, x = np.mgrid[0:30, 0:24].astype(np.float32)
    # (x, y) peaks 2 px from the corners (refined, squares cut by the border) and next to the NaN map (12)
    peaks = [(2.2, 2.4), (21.3, 27.4), (2.4, 26.8), (21.6, 2.3), (10.4, 27.2), (12.6, 2.3)]
    for k, (cx, cy) in zip([0, 17, 8, 9, 11, 13], peaks, strict=True):
        maps[0, k] = 0.8 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 8) + 0.01 * np.cos(x + y)
    maps[0, 12] = np.nan  # its neighbours' squares reach into its rows
    expected = mmpose_dark_loop(maps, 11)
    coords, _ = decode_heatmaps(torch.from_numpy(maps), "unbiased", 11)
    finite = [k for k in range(18) if k != 12]
    np.testing.assert_allclose(coords[0, finite].numpy(), expected[0, finite], rtol=0, atol=1e-4)
    monkeypatch.setattr(codec, "_on_numpy", lambda t: False)
    torch_coords, _ = decode_heatmaps(torch.from_numpy(maps), "unbiased", 11)
    np.testing.assert_allclose(coords[0, finite].numpy(), torch_coords[0, finite].numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("post_process", ["none", "default", "unbiased"])
def test_device_code_path_matches_cpu_path(monkeypatch: pytest.MonkeyPatch, post_process: str) -> None:
    """The torch-only route taken for CUDA tensors (gather, torch.max) gives the NumPy route's results."""
    maps = torch.from_numpy(awkward_heatmaps(20, 16, seed=7))
    expected = decode_heatmaps(maps, post_process, 7)  # type: ignore[arg-type]
    monkeypatch.setattr(codec, "_on_numpy", lambda t: False)
    got = decode_heatmaps(maps, post_process, 7)  # type: ignore[arg-type]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)  # the blur GEMMs may round differently


def test_gaussian_kernel_is_opencvs_sigma_from_size() -> None:
    for kernel in (11, 17, 25):
        sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8  # cv2.GaussianBlur with sigma 0
        g = np.exp(-((np.arange(kernel) - kernel // 2) ** 2) / (2 * sigma**2))
        np.testing.assert_allclose(gaussian_kernel_1d(kernel), g / g.sum(), rtol=1e-6)
    with pytest.raises(ValueError):
        gaussian_kernel_1d(4)


def test_default_decode_quarter_pixel_rules() -> None:
    maps = np.zeros((1, 3, 8, 8), dtype=np.float32)
    maps[0, 0, 4, 3], maps[0, 0, 4, 4], maps[0, 0, 3, 3] = 1.0, 0.5, 0.2  # right and up neighbours higher
    maps[0, 1, 1, 4] = 1.0  # py = 1 is not > 1: no shift
    maps[0, 2, 4, 4] = 1.0  # symmetric: sign 0, no shift
    coords, _ = decode_heatmaps(torch.from_numpy(maps), "default")
    np.testing.assert_array_equal(coords[0].numpy(), [[3.25, 3.75], [4.0, 1.0], [4.0, 4.0]])


def test_decode_rejects_bad_arguments() -> None:
    maps = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="post_process"):
        decode_heatmaps(maps, "dark")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="odd"):
        decode_heatmaps(maps, "unbiased", 10)
    with pytest.raises(ValueError, match="B, K, H, W"):
        decode_heatmaps(maps[0], "none")


@pytest.mark.parametrize(
    ("sigma", "kernel", "input_wh", "heatmap_wh"), [(2, 11, (192, 256), (48, 64)), (3, 17, (288, 384), (72, 96))]
)
def test_round_trip_encode_decode(
    sigma: int, kernel: int, input_wh: tuple[int, int], heatmap_wh: tuple[int, int]
) -> None:
    rng = np.random.default_rng(sigma)
    points = np.stack([rng.uniform(30, input_wh[0] - 30, 40), rng.uniform(30, input_wh[1] - 30, 40)], axis=1)
    unbiased = HeatmapCodec(input_wh, heatmap_wh, sigma, unbiased_encoding=True)
    heatmaps, _ = unbiased.encode(points, np.ones(40))
    coords, maxvals = unbiased.decode(torch.from_numpy(heatmaps)[None], "unbiased", kernel)
    truth = points / unbiased.feat_stride  # heatmap px
    assert np.abs(coords[0].numpy() - truth).max() < 0.01  # sub-pixel; argmax alone is off by up to 0.5
    assert maxvals.min() > 0.9
    # MSRA targets peak at the rounded centre; 'default' finds it exactly (symmetric patch: no quarter step)
    msra = HeatmapCodec(input_wh, heatmap_wh, sigma)
    coords, _ = msra.decode(torch.from_numpy(msra.encode(points, np.ones(40))[0])[None], "default")
    np.testing.assert_array_equal(coords[0].numpy(), np.trunc(truth + 0.5))


def test_heatmap_to_image() -> None:
    coords = torch.tensor([[[0.0, 0.0], [48.0, 64.0], [24.0, 32.0]]])
    center, scale = torch.tensor([[100.0, 200.0]]), torch.tensor([[0.96, 1.28]])  # a 192 x 256 box
    out = heatmap_to_image(coords, center, scale, (48, 64))
    np.testing.assert_allclose(out[0].numpy(), [[4.0, 72.0], [196.0, 328.0], [100.0, 200.0]], atol=1e-4)


# ---------------------------------------------------------------------------------------------------- flips


def test_flip_back_twice_is_identity() -> None:
    maps = torch.rand(2, 17, 8, 6)
    np.testing.assert_array_equal(flip_back(flip_back(maps, COCO_FLIP, False), COCO_FLIP, False).numpy(), maps.numpy())
    arr = maps.numpy()
    np.testing.assert_array_equal(flip_back(flip_back(arr, COCO_FLIP, False), COCO_FLIP, False), arr)


def test_flip_back_swaps_mirrors_and_shifts() -> None:
    maps = torch.rand(1, 17, 4, 5)
    out = flip_back(maps, COCO_FLIP, shift=True)
    # channel 1 (left eye) comes from channel 2 (right eye), mirrored, then shifted right with column 0 kept
    mirrored = maps[0, 2].flip(-1)
    torch.testing.assert_close(out[0, 1, :, 1:], mirrored[:, :-1])
    torch.testing.assert_close(out[0, 1, :, 0], mirrored[:, 0])
    np.testing.assert_array_equal(flip_back(maps.numpy(), COCO_FLIP, True), out.numpy())


def test_flip_back_of_mirrored_image_targets() -> None:
    """Targets drawn for the mirrored image, flipped back, decode at the original keypoints less (1 - 1/stride) px."""
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(40, 150, 17), rng.uniform(40, 220, 17)], axis=1)
    enc = HeatmapCodec((192, 256), (48, 64), 2, unbiased_encoding=True)
    mirrored, _ = enc.encode(flip_keypoints_xy(points, COCO_FLIP, 192), np.ones(17))
    back = flip_back(torch.from_numpy(mirrored)[None], COCO_FLIP, shift=False)
    coords, _ = decode_heatmaps(back, "unbiased", 11)
    expected = points / 4.0 - [0.75, 0.0]  # x' = W - 1 - x in the image is x - 1/4 + 1 - 1 in heatmap px
    np.testing.assert_allclose(coords[0].numpy(), expected, atol=0.01)


# ---------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_decode_on_cuda_matches_cpu(decode_ref: dict) -> None:
    maps = np.concatenate([decode_ref["heatmaps"], awkward_heatmaps(64, 48, seed=5)], axis=1)
    for post_process, kernel in [("none", 11), ("default", 11), ("unbiased", 11), ("unbiased", 17)]:
        cpu_coords, cpu_max = decode_heatmaps(torch.from_numpy(maps[:2]), post_process, kernel)
        gpu_coords, gpu_max = decode_heatmaps(torch.from_numpy(maps[:2]).cuda(), post_process, kernel)
        assert gpu_coords.is_cuda
        torch.testing.assert_close(gpu_coords.cpu(), cpu_coords, rtol=0, atol=1e-4)
        torch.testing.assert_close(gpu_max.cpu(), cpu_max, rtol=0, atol=0)
