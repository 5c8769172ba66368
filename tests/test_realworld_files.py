"""Files with the quirks of real data sets (tests/realworld_fixtures.py): `convert-dataset --check` accepts each
(warnings allowed) and `finetune` with `dataset: null` trains and evaluates on each, tiny model, one epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from realworld_fixtures import FIXTURES, write_fixture
from tiny_hrnet import tiny_stages
from typer.testing import CliRunner

from posecli.cli import app

torch.set_num_threads(1)
runner = CliRunner()


def null_dataset_preset(path: Path) -> Path:
    """A tiny model whose keypoint set comes from the annotation file (`dataset: null`); --keypoints sets K."""
    preset: dict[str, Any] = {
        "dataset": None,
        "model": {
            "backbone": {"type": "HRNet", "in_channels": 3, "extra": tiny_stages(8)},
            "head": {"in_channels": 8, "out_channels": 17, "num_deconv_layers": 0},
        },
        "data": {"image_size": [32, 48], "heatmap_size": [8, 12], "sigma": 1.0},
        "train": {
            "optimizer": {"type": "Adam", "lr": 1e-3},
            "lr_config": {"policy": "step", "step": [1]},
            "total_epochs": 1,
            "batch_size": 2,
            "workers": 0,
            "log_interval": 1,
        },
        "test": {"flip_test": True, "batch_size": 4, "modulate_kernel": 3},
    }
    path.write_text(yaml.safe_dump(preset), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", list(FIXTURES))
def test_check_accepts_real_world_quirks(tmp_path: Path, name: str) -> None:
    ann, img_dir = write_fixture(name, tmp_path)
    result = runner.invoke(app, ["convert-dataset", str(ann), "--check", "--img-dir", str(img_dir)])
    assert result.exit_code == 0, result.output
    assert "FATAL" not in result.output


@pytest.mark.parametrize("name", list(FIXTURES))
def test_finetune_with_null_dataset_trains_on_real_world_quirks(tmp_path: Path, name: str) -> None:
    ann, img_dir = write_fixture(name, tmp_path)
    k = len(json.loads(ann.read_text())["categories"][0]["keypoints"])
    work = tmp_path / "work"
    result = runner.invoke(
        app,
        [
            "finetune", "--preset", str(null_dataset_preset(tmp_path / "p.yaml")), "--keypoints", str(k),
            "--train-ann", str(ann), "--train-img-dir", str(img_dir), "--val-ann", str(ann),
            "--val-img-dir", str(img_dir), "--work-dir", str(work), "--device", "cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    vals = [r for r in log if r.get("type") == "val"]
    assert vals and all(0.0 <= r["metrics"]["AP"] <= 1.0 for r in vals)
    assert (work / "last.pth").is_file() and (work / "best.pth").is_file()
    # the 0.05 default sigmas are said at every evaluation (the file gives none)
    assert all(any("sigma" in w for w in r.get("warnings", [])) for r in vals)
    assert "sigma" in result.output
    if name == "crowdpose":  # COCO's 17-point skeleton on 14 keypoints: named, dropped, training goes on
        assert "skeleton link(s) [16, 14], [17, 15], [15, 13]" in " ".join(result.output.split())
        assert "crowdpose.json" in result.output
