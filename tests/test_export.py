"""`posecli export --format onnx` through the CLI: metadata inside the file, the ONNX Runtime self-check, refusals,
and `predict --checkpoint MODEL.onnx` giving the .pth's keypoints on the same boxes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from conftest import E2E, E2E_PRESET
from typer.testing import CliRunner

from posecli import onnx_export
from posecli.cli import app
from posecli.datasets.meta import load_builtin

torch.set_num_threads(1)
runner = CliRunner()
E2E_CKPT = E2E / "small_hrnet_mmpose0x_published-8cbcc10a.pth"
META = load_builtin("coco")


def cli(*args: Any) -> Any:
    return runner.invoke(app, [*map(str, args)])


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The e2e small HRNet (MMPose 0.x checkpoint + preset) exported once, with the command's output."""
    root = tmp_path_factory.mktemp("export")
    out = root / "small.onnx"
    result = cli("export", E2E_CKPT, "--preset", E2E_PRESET, "--format", "onnx", "--out", out, "--opset", "17")
    assert result.exit_code == 0, result.output
    return {"root": root, "onnx": out, "output": result.output}


def test_export_writes_checked_model_with_metadata(exported: dict[str, Any]) -> None:
    out: Path = exported["onnx"]
    text = " ".join(exported["output"].split())
    assert "max |ONNX - PyTorch| heatmap difference" in text and f"wrote {out}" in text
    diff = float(text.split("heatmap difference ")[1].split()[0])
    assert 0 <= diff <= 1e-4
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    (inp,) = model.graph.input
    (outp,) = model.graph.output
    assert (inp.name, outp.name) == ("images", "heatmaps")
    in_dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert in_dims[1:] == [3, 256, 192] and isinstance(in_dims[0], str)  # dynamic batch
    info = json.loads({p.key: p.value for p in model.metadata_props}["posecli"])
    assert info["keypoint_names"] == META.keypoint_names
    assert info["flip_pairs"] == [list(p) for p in META.flip_pairs]
    assert (info["input_size"], info["heatmap_size"]) == ([192, 256], [48, 64])
    assert info["normalisation"] == {
        "channel_order": "RGB",
        "scale": 255.0,
        "mean": pytest.approx([0.485, 0.456, 0.406]),
        "std": pytest.approx([0.229, 0.224, 0.225]),
    }
    assert {k: info["test"][k] for k in ("flip_test", "post_process", "shift_heatmap", "modulate_kernel")} == {
        "flip_test": True,
        "post_process": "default",
        "shift_heatmap": True,
        "modulate_kernel": 11,
    }
    assert info["dataset_meta"]["sigmas"] == pytest.approx(META.sigmas)
    assert info["source_checkpoint"] == E2E_CKPT.name and info["trained_sigma"] == 2.0


def test_onnx_runtime_heatmaps_equal_pytorch_at_any_batch(exported: dict[str, Any]) -> None:
    import onnxruntime as ort

    from posecli.engine.predict import load_pytorch_model

    loaded = load_pytorch_model(str(E2E_CKPT), str(E2E_PRESET), {}, torch.device("cpu"))
    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 256, 192, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = loaded.model(x).numpy()
    got = session.run(["heatmaps"], {"images": x.numpy()})[0]
    assert got.shape == (5, 17, 64, 48)
    assert np.abs(got - ref).max() <= 1e-4


def gt_box_records(tmp_path: Path) -> Path:
    """The e2e ground-truth boxes (clipped as MMPose 0.29 clips them) as a records bbox file."""
    ann = read_json(E2E / "annotations.json")
    images = {img["id"]: img for img in ann["images"]}
    records = []
    for a in ann["annotations"]:
        img = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        x1, y1 = max(0, x), max(0, y)
        x2, y2 = min(img["width"] - 1, x1 + max(0, w)), min(img["height"] - 1, y1 + max(0, h))
        records.append({"file_name": img["file_name"], "bbox": [x1, y1, x2 - x1, y2 - y1]})
    path = tmp_path / "gt_boxes.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("boxes", ["gt_flip_dark", "detections_plain"])
def test_predict_onnx_equals_pth_on_the_same_boxes(exported: dict[str, Any], tmp_path: Path, boxes: str) -> None:
    """Every keypoint of the .onnx within 0.05 px of the .pth's (measured: at most 6.1e-5 px).

    DARK runs on the people (ground-truth boxes); the detections, whose false positives have noise-only heatmaps,
    run with default decoding: there DARK's Taylor step is ill-conditioned and turns the ~1e-8 difference between
    ONNX Runtime's and PyTorch's convolutions into tenths of a pixel on those empty boxes (measured 0.39 px).
    """
    if boxes == "gt_flip_dark":
        common = ["--bbox-file", gt_box_records(tmp_path), "--flip-test", "--post-process", "unbiased"]
        n = 21
    else:
        common = ["--bbox-file", E2E / "detections.json", "--ann-file", E2E / "annotations.json", "--no-flip-test"]
        n = 52
    common += ["--device", "cpu", "--batch-size", "7"]
    pth = cli(
        "predict", E2E / "images", "--checkpoint", E2E_CKPT, "--preset", E2E_PRESET, "-o", tmp_path / "pth", *common
    )
    assert pth.exit_code == 0, pth.output
    onx = cli("predict", E2E / "images", "--checkpoint", exported["onnx"], "-o", tmp_path / "onnx", *common)
    assert onx.exit_code == 0, onx.output
    assert "onnx" in onx.output and "CPUExecutionProvider" in onx.output
    a = read_json(tmp_path / "pth" / "predictions.json")
    b = read_json(tmp_path / "onnx" / "predictions.json")
    assert [(r["file_name"], r["bbox"]) for r in a] == [(r["file_name"], r["bbox"]) for r in b] and len(a) == n
    ka = np.array([r["keypoints"] for r in a]).reshape(n, 17, 3)
    kb = np.array([r["keypoints"] for r in b]).reshape(n, 17, 3)
    assert np.abs(ka[..., :2] - kb[..., :2]).max() <= 0.05
    np.testing.assert_allclose(ka[..., 2], kb[..., 2], atol=1e-5)
    np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)


def test_onnx_with_the_wrong_input_size_is_refused(exported: dict[str, Any], tmp_path: Path) -> None:
    model = onnx.load(str(exported["onnx"]))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 128, 96  # the graph no longer takes the 256x192 its metadata says
    bad = tmp_path / "resized.onnx"
    onnx.save(model, str(bad))
    out = tmp_path / "out"
    result = cli("predict", E2E / "images", "--checkpoint", bad, "--whole-image", "-o", out)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "resized.onnx: the model's input is ?x3x128x96 but its metadata says Bx3x256x192" in result.output
    assert not out.exists()

    plain = onnx.load(str(exported["onnx"]))
    del plain.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(plain, str(foreign))
    result = cli("predict", E2E / "images", "--checkpoint", foreign, "--whole-image", "-o", out)
    assert result.exit_code == 2 and "no posecli metadata" in result.output and not out.exists()

    result = cli(
        "predict", E2E / "images", "--checkpoint", exported["onnx"], "--preset", E2E_PRESET, "--whole-image", "-o", out
    )
    assert result.exit_code == 2 and "carries its own settings" in result.output


def test_export_refuses_and_leaves_no_file_when_the_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "CHECK_TOLERANCE", -1.0)  # no difference can pass
    out = tmp_path / "model.onnx"
    result = cli("export", E2E_CKPT, "--preset", E2E_PRESET, "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        "refused: ONNX Runtime's heatmaps differ from PyTorch's" in result.output and "no file written" in result.output
    )
    assert list(tmp_path.iterdir()) == []


def test_export_refusals(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = cli("export", E2E_CKPT, "--preset", E2E_PRESET, "--format", "tflite", "--out", out)
    assert result.exit_code == 2 and "unknown export format 'tflite'" in result.output
    result = cli("export", E2E_CKPT, "--out", out)  # an MMPose checkpoint does not say what model it is
    assert result.exit_code == 2 and "pass --preset" in result.output
    result = cli("export", tmp_path / "missing.pth", "--preset", E2E_PRESET, "--out", out)
    assert result.exit_code == 2 and "checkpoint not found" in result.output
    result = cli("export", E2E_CKPT, "--preset", E2E_PRESET, "--out", tmp_path)
    assert result.exit_code == 2 and "--out is a folder" in result.output
    assert list(tmp_path.iterdir()) == []


def test_without_onnx_installed_the_extra_is_named(
    exported: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    out = tmp_path / "m.onnx"
    result = cli("export", E2E_CKPT, "--preset", E2E_PRESET, "--out", out)
    assert result.exit_code == 2 and "pip install posecli[export]" in result.output and not out.exists()
    result = cli("predict", E2E / "images", "--checkpoint", exported["onnx"], "--whole-image", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "pip install posecli[export]" in result.output
