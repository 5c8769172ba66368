"""`finetune --gpu-decode`: crops warped with grid_sample at OpenCV's sampling points equal cv2.warpAffine's (the
CPU path's own function) on the e2e images, incl. rotated and mirrored people; the encoded item of the dataset
gives the CPU path's crops and keypoints; without CUDA the flag is one line, exit 2. CUDA (gpu-marked): nvjpeg
decode + warp against OpenCV on JPEG re-encodings, and a short fine-tune."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import E2E
from test_train import tiny_preset, write_preset
from typer.testing import CliRunner

from posecli.cli import app
from posecli.datasets.coco import read_encoded_image, read_image_rgb
from posecli.datasets.meta import load_builtin
from posecli.datasets.synthetic import generate_synthetic_dataset
from posecli.engine.batch import prepare_train_batch
from posecli.engine.data import build_dataset
from posecli.engine.gpu_decode import decode_and_warp, decode_images, warp_crops
from posecli.settings import DataSettings
from posecli.transforms import (
    bbox_xywh_to_center_scale,
    clip_bbox_xywh,
    flip_center,
    flip_image,
    get_affine_transform,
    warp_image,
)

torch.set_num_threads(1)
CPU = torch.device("cpu")
INPUT_WH = (192, 256)
# (rotation in degrees, mirrored, scale factor): straight, rotated, mirrored, mirrored + rotated + zoomed out
CASES = [(0.0, False, 1.0), (30.0, False, 1.0), (0.0, True, 1.0), (-45.0, True, 1.4)]


def e2e_crops(images: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, bool]]:
    """(file name, matrix, mirrored) for every GT box of the e2e annotations and every case, as the CPU path."""
    data = json.loads((E2E / "annotations.json").read_text())
    files = {img["id"]: img["file_name"] for img in data["images"]}
    out = []
    for ann in data["annotations"]:
        name = files[ann["image_id"]]
        height, width = images[name].shape[:2]
        bbox = clip_bbox_xywh(ann["bbox"], (width, height))
        center, scale = bbox_xywh_to_center_scale(bbox, INPUT_WH[0] / INPUT_WH[1])
        for rot, mirrored, zoom in CASES:
            c = flip_center(center, width) if mirrored else center
            out.append((name, get_affine_transform(c, scale * np.float32(zoom), rot, INPUT_WH), mirrored))
    return out


def opencv_crop(image: np.ndarray, matrix: np.ndarray, mirrored: bool) -> np.ndarray:
    return warp_image(flip_image(image) if mirrored else image, matrix, INPUT_WH)


def compare(
    images: dict[str, np.ndarray], decoded: dict[str, torch.Tensor], device: torch.device
) -> tuple[int, float, int]:
    """Max grey-level difference, fraction of differing values and how many crops, device warp vs OpenCV."""
    crops = e2e_crops(images)
    got = warp_crops(
        [decoded[name] for name, _, _ in crops],
        torch.from_numpy(np.stack([m for _, m, _ in crops])),
        [mirrored for _, _, mirrored in crops],
        INPUT_WH,
    ).cpu()
    want = np.stack([opencv_crop(images[name], m, mirrored) for name, m, mirrored in crops])
    assert got.shape == want.shape == (len(crops), INPUT_WH[1], INPUT_WH[0], 3) and got.dtype == torch.uint8
    diff = np.abs(got.numpy().astype(np.int16) - want)
    assert want.mean() > 20  # real image content, not black crops
    return int(diff.max()), float((diff > 0).mean()), len(crops)


@pytest.fixture(scope="module")
def e2e_images() -> dict[str, np.ndarray]:
    return {p.name: read_image_rgb(p) for p in sorted((E2E / "images").glob("*.png"))}


def test_grid_sample_warp_equals_opencv_on_the_e2e_images(e2e_images: dict[str, np.ndarray]) -> None:
    decoded = {name: torch.from_numpy(im).permute(2, 0, 1).contiguous() for name, im in e2e_images.items()}
    worst, share, n = compare(e2e_images, decoded, CPU)
    assert n == 21 * len(CASES)
    assert worst <= 1 and share < 1e-3, (worst, share)  # measured: 0 and 0.0 (bit for bit)


def test_crop_outside_the_image_is_black_and_rounding_ties_go_up() -> None:
    image = torch.full((3, 5, 7), 255, dtype=torch.uint8)
    image[:, :, ::2] = 0  # stripes: half-pixel samples land exactly on x.5
    far = torch.tensor([[[1.0, 0.0, 500.0], [0.0, 1.0, 500.0]]], dtype=torch.float64)
    assert int(warp_crops([image], far, [False], (4, 3)).max()) == 0
    half = torch.tensor([[[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]]], dtype=torch.float64)  # x -> x + 0.5 in the source
    want = cv2.warpAffine(image.permute(1, 2, 0).numpy(), half[0].numpy(), (8, 5), flags=cv2.INTER_LINEAR)
    got = warp_crops([image], half, [False], (8, 5))[0].numpy()
    assert (want == 128).any() and np.array_equal(got, want)


@pytest.fixture(scope="module")
def png_people(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """6 synthetic COCO-17 people in PNG files (decoded alike by OpenCV and torchvision)."""
    root = tmp_path_factory.mktemp("png-people")
    ann = generate_synthetic_dataset(root, 6, keypoints="coco", image_size=96, seed=4, image_ext=".png")
    return ann, ann.parent / "images"


def test_encoded_items_give_the_crops_and_keypoints_of_the_cpu_path(png_people: tuple[Path, Path]) -> None:
    ann, img_dir = png_people
    meta = load_builtin("coco")
    data = DataSettings(image_size=[48, 64], heatmap_size=[12, 16], sigma=2.0, flip_prob=0.5, rot_prob=1.0)
    cpu_set = build_dataset(ann, img_dir, meta, data, train=True, rng_seed=7)
    enc_set = build_dataset(ann, img_dir, meta, data, train=True, rng_seed=7, encoded=True)
    items = [enc_set[i] for i in range(len(enc_set))]
    assert "image" not in items[0] and items[0]["matrix"].dtype == torch.float64
    assert not items[0]["decode_on_gpu"]  # PNG: decoded on the CPU
    assert {it["flip"] for it in items} == {True, False}  # both cases drawn
    batch = torch.utils.data.default_collate(items)
    reference = torch.utils.data.default_collate([cpu_set[i] for i in range(len(cpu_set))])
    assert torch.equal(batch["keypoints"], reference["keypoints"])  # flip pairs swapped as on the CPU path
    crops = decode_and_warp(batch, CPU, enc_set.codec.input_wh)
    assert torch.equal(crops, reference["image"])  # the very crops
    got = prepare_train_batch(batch, CPU, enc_set.codec, torch.contiguous_format)
    want = prepare_train_batch(reference, CPU, cpu_set.codec, torch.contiguous_format)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_jpeg_headers_choose_the_decoder(tmp_path: Path) -> None:
    image = cv2.imread(str(E2E / "images" / "public_0000.png"))
    cv2.imwrite(str(tmp_path / "a.jpg"), image)
    data, width, on_gpu = read_encoded_image(tmp_path / "a.jpg")
    assert on_gpu and width == 320 and data[:2] == b"\xff\xd8"
    assert read_encoded_image(E2E / "images" / "public_0000.png")[1:] == (320, False)
    # torchvision's CPU JPEG decoder (the fallback) gives OpenCV's pixels (both libjpeg-turbo): measured equal
    (decoded,) = decode_images([data], [True], [str(tmp_path / "a.jpg")], CPU)
    assert np.array_equal(decoded.permute(1, 2, 0).numpy(), read_image_rgb(tmp_path / "a.jpg"))


def test_gpu_decode_without_cuda_is_one_line(tmp_path: Path) -> None:
    path = write_preset(tmp_path / "tiny.yaml", tiny_preset())
    res = CliRunner().invoke(
        app, ["finetune", "--preset", str(path), "--device", "cpu", "--gpu-decode", "--work-dir", str(tmp_path / "w")]
    )
    assert res.exit_code == 2, res.output
    assert "--gpu-decode needs a CUDA device" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "w" / "log.jsonl").exists()


# ------------------------------------------------------------------------------------------------ CUDA
def jpeg_versions(
    images: dict[str, np.ndarray], quality: int, sampling: int
) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
    """JPEG re-encodings of the images: OpenCV's decode (RGB) and the file bytes."""
    decoded, files = {}, {}
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
    for name, rgb in images.items():
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        assert ok
        files[name] = buf.tobytes()
        decoded[name] = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return decoded, files


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("quality", "sampling"),
    [(95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444), (75, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420)],
    ids=["q95-444", "q75-420"],
)
def test_nvjpeg_decode_and_warp_against_opencv(e2e_images: dict[str, Any], quality: int, sampling: int) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cuda = torch.device("cuda")
    opencv, files = jpeg_versions(e2e_images, quality, sampling)
    names = list(files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nv = decode_images([files[n] for n in names], [True] * len(names), names, cuda)
    assert all(im.is_cuda and im.dtype == torch.uint8 for im in nv)
    decoded = dict(zip(names, nv, strict=True))
    raw = np.concatenate(
        [np.abs(decoded[n].permute(1, 2, 0).cpu().numpy().astype(np.int16) - opencv[n]).ravel() for n in names]
    )
    worst, share, _ = compare(opencv, decoded, cuda)  # the warp itself is exact: this is nvjpeg against libjpeg
    print(
        f"quality {quality}, sampling {sampling:#x}: nvjpeg vs OpenCV decode max {raw.max()}, mean {raw.mean():.3f}, "
        f"differing {np.mean(raw > 0):.2%}; crops max {worst}, differing {share:.2%}"
    )
    assert raw.mean() < 0.5 and share < 0.5
    if sampling == cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444:  # no chroma upsampling: only the IDCTs differ
        assert worst <= 1, (raw.max(), worst, share)


@pytest.mark.gpu
def test_finetune_gpu_decode_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    monkeypatch.setenv("POSECLI_CACHE", str(tmp_path / "cache"))
    preset = tiny_preset()
    preset["train"]["total_epochs"] = 1
    path = write_preset(tmp_path / "tiny.yaml", preset)
    work = tmp_path / "w"
    res = CliRunner().invoke(
        app, ["finetune", "--preset", str(path), "--device", "cuda", "--gpu-decode", "--work-dir", str(work)]
    )
    assert res.exit_code == 0, res.output
    assert "decode + warp on the GPU" in res.output
    losses = [json.loads(x)["loss"] for x in (work / "log.jsonl").read_text().splitlines() if '"train"' in x]
    assert losses and all(np.isfinite(losses))
    assert (work / "last.pth").is_file()
