"""End-to-end parity with MMPose 0.29 on tests/reference/e2e: the same checkpoint, images and boxes through
`posecli evaluate` must give MMPose's crops (bit for bit), heatmaps, per-box keypoints, OKS-NMS survivors and
all ten AP/AR numbers. A mismatch is a bug to find (mmpose_stages.npz says at which stage it starts), never a
tolerance to widen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import E2E_PRESET
from typer.testing import CliRunner

from posecli.checkpoints import load_into_model
from posecli.cli import app
from posecli.datasets.coco import read_image_rgb
from posecli.datasets.meta import load_builtin
from posecli.engine.data import build_dataset
from posecli.metrics import STAT_NAMES
from posecli.models import build_model
from posecli.settings import load_settings
from posecli.transforms import get_affine_transform, warp_image

torch.set_num_threads(1)
runner = CliRunner()
PRESET = E2E_PRESET
CHECKPOINT = "small_hrnet_mmpose0x_published-8cbcc10a.pth"
SETTINGS = {  # MMPose's two test settings (reference README): a = flip + shift + DARK k11, c = plain
    "a": ["--flip-test", "--shift-heatmap", "--post-process", "unbiased", "--modulate-kernel", "11"],
    "c": ["--no-flip-test", "--post-process", "default"],
}
CASES = [(s, b) for s in SETTINGS for b in ("gt", "det")]


def _evaluate(e2e: Path, setting: str, boxes: str, out: Path, preset: Path = PRESET) -> dict[str, Any]:
    args = [
        "evaluate", "--checkpoint", str(e2e / CHECKPOINT), "--preset", str(preset),
        "--ann-file", str(e2e / "annotations.json"), "--img-dir", str(e2e / "images"),
        "--device", "cpu", "--output-dir", str(out), *SETTINGS[setting],
    ]  # fmt: skip
    if boxes == "det":
        args += ["--bbox-file", str(e2e / "detections.json"), "--det-bbox-thr", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return {
        "results": json.loads((out / "results.json").read_text()),
        "metrics": json.loads((out / "metrics.json").read_text()),
    }


@pytest.fixture(scope="module")
def e2e(reference_dir: Path) -> Path:
    return reference_dir / "e2e"


@pytest.fixture(scope="module")
def runs(e2e: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, bool], dict[str, Any]]:
    """Each (setting, boxes) run twice through the CLI: as configured (OKS NMS) and with NMS off (every box)."""
    root = tmp_path_factory.mktemp("e2e")
    no_nms = yaml.safe_load(PRESET.read_text())
    no_nms["test"]["use_nms"] = False
    no_nms_preset = root / "no_nms.yaml"
    no_nms_preset.write_text(yaml.safe_dump(no_nms))
    out = {}
    for setting, boxes in CASES:
        out[(setting, boxes, True)] = _evaluate(e2e, setting, boxes, root / f"{setting}_{boxes}")
        out[(setting, boxes, False)] = _evaluate(e2e, setting, boxes, root / f"{setting}_{boxes}_all", no_nms_preset)
    return out


def _by_image(entries: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    grouped: dict[Any, list[dict[str, Any]]] = {}
    for entry in entries:
        grouped.setdefault(entry["image_id"], []).append(entry)
    return grouped


def test_preset_is_the_reference_config(e2e: Path) -> None:
    """The preset the tests use says what MMPose's small_hrnet_config.json says."""
    config = json.loads((e2e / "small_hrnet_config.json").read_text())
    settings = load_settings(str(PRESET), {})
    model, data_cfg = config["model"], config["data_cfg"]
    extra = settings.model.backbone.extra.model_dump()
    for stage, spec in model["backbone"]["extra"].items():
        assert {k: extra[stage][k] for k in spec} == spec, stage
    head = model["keypoint_head"]
    assert settings.model.head.in_channels == head["in_channels"]
    assert settings.model.head.out_channels == head["out_channels"]
    assert settings.model.head.num_deconv_layers == head["num_deconv_layers"]
    assert settings.model.head.final_conv_kernel == head["extra"]["final_conv_kernel"]
    assert list(settings.data.image_size) == data_cfg["image_size"]
    assert list(settings.data.heatmap_size) == data_cfg["heatmap_size"]
    assert (settings.test.vis_thr, settings.test.oks_thr) == (data_cfg["vis_thr"], data_cfg["oks_thr"])
    assert settings.test.soft_nms == data_cfg["soft_nms"] and settings.data.det_bbox_thr == data_cfg["det_bbox_thr"]


def test_crops_and_heatmaps_equal_mmpose_stages(e2e: Path) -> None:
    """Clean box, center, scale and the crop bit for bit; normalised input and heatmaps to float rounding."""
    stages = dict(np.load(e2e / "mmpose_stages.npz"))
    settings = load_settings(str(PRESET), {})
    meta = load_builtin("coco")
    ds = build_dataset(e2e / "annotations.json", e2e / "images", meta, settings.data, train=False, with_target=False)
    n = len(stages["center"])
    files = [Path(ds.samples[i].image_file).name for i in range(n)]
    assert files == stages["image_file"].tolist()
    bboxes = np.array([ds.samples[i].bbox for i in range(n)])
    np.testing.assert_array_equal(bboxes.astype(np.float32), stages["clean_bbox"])
    items = [ds[i] for i in range(n)]
    center = np.stack([it["center"].numpy() for it in items])
    scale = np.stack([it["scale"].numpy() for it in items])
    np.testing.assert_array_equal(center, stages["center"])  # float64 box arithmetic, then float32
    np.testing.assert_array_equal(scale, stages["scale"])
    wh = tuple(settings.data.image_size)
    for i in range(n):
        image = read_image_rgb(ds.samples[i].image_file)
        crop = warp_image(image, get_affine_transform(center[i], scale[i], 0.0, wh), wh)
        np.testing.assert_array_equal(crop, stages["crop_rgb_uint8"][i])  # bit-identical (OpenCV 4.x warp)
    inputs = torch.stack([it["image"] for it in items])
    assert float((inputs - torch.from_numpy(stages["input_normalised"])).abs().max()) <= 1e-6
    model = build_model(settings.model)
    report = load_into_model(model, e2e / CHECKPOINT, "load_from", meta)
    assert not report.missing and not report.reinitialized
    with torch.inference_mode():
        heatmaps = model.eval()(inputs).numpy()
    diff = float(np.abs(heatmaps - stages["heatmaps_noflip"]).max())
    assert diff <= 1e-5, diff


@pytest.mark.parametrize(("setting", "boxes"), CASES)
def test_every_box_equals_mmpose_before_nms(
    runs: dict[tuple[str, str, bool], dict[str, Any]], e2e: Path, setting: str, boxes: str
) -> None:
    """NMS off: one result per box, each with MMPose's center/scale, keypoints (1e-3 px) and scores (1e-5)."""
    ref = json.loads((e2e / f"mmpose_boxes_{setting}_{boxes}.json").read_text())["boxes"]
    ours = runs[(setting, boxes, False)]["results"]
    ref_by, ours_by = _by_image(ref), _by_image(ours)
    assert {k: len(v) for k, v in ours_by.items()} == {k: len(v) for k, v in ref_by.items()}
    px = score = 0.0
    for image_id, people in ref_by.items():
        for want, got in zip(people, ours_by[image_id], strict=True):
            assert np.float32(got["center"]).tolist() == np.float32(want["center"]).tolist()
            assert np.float32(got["scale"]).tolist() == np.float32(want["scale"]).tolist()
            kp = np.asarray(got["keypoints"]).reshape(-1, 3)
            preds = np.asarray(want["preds"])
            px = max(px, float(np.abs(kp[:, :2] - preds[:, :2]).max()))
            score = max(score, float(np.abs(kp[:, 2] - preds[:, 2]).max()))
    assert px <= 1e-3 and score <= 1e-5, (px, score)


@pytest.mark.parametrize(("setting", "boxes"), CASES)
def test_nms_keeps_mmpose_boxes_and_ap_is_equal(
    runs: dict[tuple[str, str, bool], dict[str, Any]], e2e: Path, setting: str, boxes: str
) -> None:
    """With OKS NMS: the same people survive in the same order with the same scores; all ten AP/AR equal."""
    ref = json.loads((e2e / f"mmpose_results_{setting}_{boxes}.json").read_text())
    run = runs[(setting, boxes, True)]
    ours = run["results"]
    assert len(ours) == len(ref)
    ref_by, ours_by = _by_image(ref), _by_image(ours)
    assert ours_by.keys() == ref_by.keys()
    for image_id, people in ref_by.items():
        got_people = ours_by[image_id]
        assert [np.float32(p["center"]).tolist() for p in got_people] == [
            np.float32(p["center"]).tolist() for p in people
        ]
        for want, got in zip(people, got_people, strict=True):
            assert got["category_id"] == want["category_id"]
            assert abs(got["score"] - want["score"]) <= 1e-5
            diff = np.abs(np.reshape(got["keypoints"], (-1, 3)) - np.reshape(want["keypoints"], (-1, 3)))
            assert diff[:, :2].max() <= 1e-3 and diff[:, 2].max() <= 1e-5
    want_metrics = json.loads((e2e / f"mmpose_metrics_{setting}_{boxes}.json").read_text())
    for name in STAT_NAMES:
        assert abs(run["metrics"][name] - want_metrics[name]) <= 1e-6, (name, run["metrics"][name], want_metrics)
