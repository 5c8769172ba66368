"""What the commands tell a user (issue 12, section 4): evaluate without --ann-file on a synthetic-data checkpoint,
the offline fix for a failed download, preset errors naming the file, the warm-up warning, and grammar."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from tiny_hrnet import tiny_stages
from typer.testing import CliRunner

from posecli.cli import app
from posecli.settings import preset_dir

torch.set_num_threads(1)
runner = CliRunner()
DEMO_CKPT = Path(__file__).resolve().parents[1] / "posecli" / "assets" / "demo_coco17.pth"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("POSECLI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def small_demo_checkpoint(path: Path, **data: Any) -> Path:
    """The demo checkpoint with a smaller synthetic set recorded (4 validation images) and ``data`` changes."""
    obj = torch.load(DEMO_CKPT, map_location="cpu", weights_only=True)
    settings = obj["meta"]["settings"]
    settings["data"]["synthetic"].update(num_train=1, num_val=4)
    settings["data"].update(data)
    torch.save(obj, path)
    return path


def metrics_of(*args: str | Path) -> dict[str, Any]:
    out = Path(args[-1])
    result = runner.invoke(app, ["evaluate", "--device", "cpu", "--batch-size", "8", *map(str, args)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def test_evaluate_without_ann_file_uses_the_synthetic_validation_set(tmp_path: Path, cache: Path) -> None:
    ckpt = small_demo_checkpoint(tmp_path / "demo_small.pth")
    result = runner.invoke(app, ["evaluate", "-c", str(ckpt), "--device", "cpu", "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "no --ann-file: evaluating on the synthetic validation set" in result.stderr
    default = json.loads((tmp_path / "a" / "metrics.json").read_text())
    ann = Path(default["eval_info"]["ann_file"])
    assert ann.is_relative_to(cache) and len(json.loads(ann.read_text())["images"]) == 4
    default = {k: v for k, v in default.items() if isinstance(v, float)}
    assert default["AP"] > 0.3  # the trained demo model on the data it was trained for
    explicit = metrics_of("-c", ckpt, "--ann-file", ann, "--img-dir", ann.parent / "images", "-o", tmp_path / "b")
    assert explicit == default
    shutil.rmtree(cache / "synthetic")  # gone: generated again, the same images from the recorded seed
    assert metrics_of("-c", ckpt, "-o", tmp_path / "c") == default


def test_evaluate_without_ann_file_on_real_data_says_what_to_pass(tmp_path: Path) -> None:
    ckpt = small_demo_checkpoint(tmp_path / "real.pth", train_ann="train.json", train_img_dir="img", val_ann="v.json")
    result = runner.invoke(app, ["evaluate", "-c", str(ckpt), "--device", "cpu"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pass --ann-file VAL.json --img-dir IMAGES/ (it was validated on v.json)" in lines[0]


def test_download_error_tells_the_offline_fix(tmp_path: Path) -> None:
    cache_dir = tmp_path / "ckpts"
    url = "http://127.0.0.1:9/hrnet_w32-36af842e.pth"  # port 9: nothing listens
    result = runner.invoke(app, ["inspect-checkpoint", url, "--cache-dir", str(cache_dir), "--timeout", "5"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {url}: download failed")
    assert f"copy the file to {cache_dir / 'hrnet_w32-36af842e.pth'} or pass its local path" in line


def test_preset_keypoint_error_names_the_installed_file() -> None:
    result = runner.invoke(app, ["finetune", "--preset", "demo", "--keypoints", "17", "--print-config"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {preset_dir() / 'demo.yaml'}: the preset is for dataset 'body_foot'")
    assert "preset 'demo'" not in result.stderr


def test_an_annotation_file(tmp_path: Path) -> None:
    folder = tmp_path / "ann.json"
    folder.mkdir()
    result = runner.invoke(app, ["convert-dataset", str(folder), "--check"])
    assert result.exit_code == 2 and "expected an annotation file, found a folder" in result.stderr


def test_warm_up_longer_than_the_run_warns(tmp_path: Path, cache: Path) -> None:
    preset = {
        "dataset": "coco",
        "model": {
            "backbone": {"type": "HRNet", "in_channels": 3, "extra": tiny_stages(8)},
            "head": {"in_channels": 8, "out_channels": 17, "num_deconv_layers": 0},
        },
        "data": {
            "image_size": [32, 48],
            "heatmap_size": [8, 12],
            "sigma": 1.0,
            "synthetic": {"keypoints": "coco", "num_train": 2, "num_val": 1, "image_size": 64, "seed": 0},
        },
        "train": {
            "optimizer": {"type": "Adam", "lr": 1e-3},
            "lr_config": {"policy": "step", "step": [5], "warmup": "linear", "warmup_iters": 50},
            "total_epochs": 1,
            "batch_size": 4,
            "workers": 0,
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    args = ["finetune", "--preset", str(path), "--device", "cpu", "--work-dir", str(tmp_path / "w")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: the linear warm-up lasts 50 iterations, longer than the whole run (1 iteration)" in text
    assert "1 epoch of 1 step" in text


def test_finetune_preset_with_a_meta_file_next_to_it(tmp_path: Path) -> None:
    """An imported preset names its meta file relative to itself (`presets import`): finetune finds it."""
    from posecli.datasets.meta import load_builtin

    (tmp_path / "my.meta.yaml").write_text(yaml.safe_dump(load_builtin("body_foot").to_dict()))
    preset = yaml.safe_load((preset_dir() / "demo.yaml").read_text())
    preset["dataset"] = "my.meta.yaml"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(preset))
    args = ["finetune", "--preset", str(tmp_path / "p.yaml"), "--keypoints", "23", "--print-config"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert printed["dataset"] == str(tmp_path / "my.meta.yaml") and printed["model"]["head"]["out_channels"] == 23
