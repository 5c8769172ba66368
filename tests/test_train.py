"""`posecli finetune` end to end on a tiny HRNet and a few synthetic people: work-dir files, resume equality,
refusals (changed settings, keypoint mismatch, existing run), non-finite loss, frozen backbone."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from tiny_hrnet import tiny_stages
from typer.testing import CliRunner

from posecli.cli import app
from posecli.engine.data import EpochSampler
from posecli.engine.train import set_train_mode
from posecli.engine.workdir import capture_rng, restore_rng, resume_conflicts
from posecli.models.topdown import build_model
from posecli.settings import load_settings

torch.set_num_threads(1)
runner = CliRunner()


def tiny_preset(keypoints: str = "coco", num_keypoints: int = 17, width: int = 8) -> dict[str, Any]:
    """A preset small enough for a 1-core test: 0.2 M parameters, 32x48 input, 6 + 3 synthetic images."""
    extra = tiny_stages(width)
    return {
        "dataset": keypoints,
        "model": {
            "backbone": {"type": "HRNet", "in_channels": 3, "extra": extra},
            "head": {"in_channels": width, "out_channels": num_keypoints, "num_deconv_layers": 0},
        },
        "data": {
            "image_size": [32, 48],
            "heatmap_size": [8, 12],
            "sigma": 1.0,
            "synthetic": {"keypoints": keypoints, "num_train": 6, "num_val": 3, "image_size": 64, "seed": 0},
        },
        "train": {
            "optimizer": {"type": "Adam", "lr": 1e-3},
            "lr_config": {"policy": "step", "step": [1], "warmup": "linear", "warmup_iters": 3, "warmup_ratio": 0.1},
            "total_epochs": 2,
            "batch_size": 4,
            "workers": 0,
            "eval_interval": 1,
            "log_interval": 1,
        },
        "test": {"flip_test": True, "batch_size": 8, "modulate_kernel": 3},
    }


def write_preset(path: Path, preset: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(preset), encoding="utf-8")
    return path


def finetune(*args: str | Path) -> Any:
    """Invoke `posecli finetune` in-process; returns the CliRunner result."""
    return runner.invoke(app, ["finetune", "--device", "cpu", *map(str, args)])


def records(work_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One straight 2-epoch run, and a 1-epoch run resumed to 2 epochs (same seed)."""
    root = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSECLI_CACHE", str(root / "cache"))
        preset = write_preset(root / "tiny.yaml", tiny_preset())
        straight = finetune("--preset", preset, "--work-dir", root / "straight", "--eval-before")
        first = finetune("--preset", preset, "--work-dir", root / "resumed", "--epochs", "1")
        last_after_1 = (root / "resumed" / "last.pth").read_bytes()
        resumed = finetune("--preset", preset, "--work-dir", root / "resumed", "--resume")
    return {
        "root": root,
        "preset": preset,
        "straight": straight,
        "first": first,
        "resumed": resumed,
        "last_after_1": last_after_1,
    }


def test_tiny_run_writes_the_work_dir(runs: dict[str, Any]) -> None:
    result, work = runs["straight"], runs["root"] / "straight"
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in work.iterdir()) == ["best.pth", "config.yaml", "curves.png", "last.pth", "log.jsonl"]
    # config.yaml is the resolved settings and loads back as a preset
    flags = {"train.eval_before_train": True}  # --eval-before
    assert load_settings(str(work / "config.yaml")) == load_settings(str(runs["preset"]), flags)
    recs = records(work)
    train = [r for r in recs if r["type"] == "train"]
    val = [r for r in recs if r["type"] == "val"]
    # 7 synthetic people, batch 4 -> 2 steps per epoch, logged every step
    assert [(r["epoch"], r["iter"]) for r in train] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    assert [r["epoch_float"] for r in train] == [0.5, 1.0, 1.5, 2.0]
    assert all(np.isfinite(r["loss"]) and r["data_time"] >= 0 and r["step_time"] > 0 for r in train)
    # mmcv warmup (3 iters from 0.1 x lr) and the step at epoch 1 (x0.1): lr = regular * (1 - (1 - it/3) * 0.9)
    expected_lr = [1e-3 * 0.1, 1e-3 * (1 - (2 / 3) * 0.9), 1e-4 * (1 - (1 / 3) * 0.9), 1e-4]
    assert [r["lr"] for r in train] == pytest.approx(expected_lr, rel=1e-9)
    assert [(r["epoch"], r["iter"]) for r in val] == [(0, 0), (1, 2), (2, 4)]  # --eval-before adds epoch 0
    assert {"AP", "AP .5", "AR"} <= set(val[-1]["metrics"])

    last, best = load(work / "last.pth"), load(work / "best.pth")
    assert last["meta"]["epoch"] == 2 and last["meta"]["iter"] == 4
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(last)
    assert "optimizer" not in best  # best.pth: weights and meta only
    aps = {r["epoch"]: r["metrics"]["AP"] for r in val if r["epoch"] > 0}
    best_epoch = max(aps, key=lambda e: (aps[e], -e))  # the first epoch reaching the best AP
    assert best["meta"]["best"] == {"metric": "AP", "value": aps[best_epoch], "epoch": best_epoch}
    assert best["meta"]["epoch"] == best_epoch
    assert last["meta"]["best"]["epoch"] == best_epoch
    assert best["meta"]["dataset_meta"]["name"] == "coco" and best["meta"]["image_size"] == [32, 48]
    png = (work / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "global batch 4 (1 x 4)" in result.output


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(runs: dict[str, Any]) -> None:
    assert runs["first"].exit_code == 0, runs["first"].output
    assert runs["resumed"].exit_code == 0, runs["resumed"].output
    assert "resumed from" in runs["resumed"].output
    straight = load(runs["root"] / "straight" / "last.pth")
    resumed = load(runs["root"] / "resumed" / "last.pth")
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key  # bit for bit, BN statistics included
    for pid, st in straight["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], resumed["optimizer"]["state"][pid]["exp_avg_sq"])
    assert resumed["meta"]["epoch"] == 2 and resumed["meta"]["iter"] == 4
    # the resumed log continues the first: same losses, step by step
    losses = [r["loss"] for r in records(runs["root"] / "straight") if r["type"] == "train"]
    assert [r["loss"] for r in records(runs["root"] / "resumed") if r["type"] == "train"] == losses


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"width": 16}, "model.backbone.extra.stage4.num_channels"),
        ({"keypoints": "body_foot", "num_keypoints": 23}, "model.head.out_channels: 17 -> 23"),
    ],
)
def test_resume_with_changed_model_or_keypoints_is_refused(
    runs: dict[str, Any], tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    work = tmp_path / "work"
    shutil.copytree(runs["root"] / "resumed", work)
    before = (work / "last.pth").read_bytes()
    preset = write_preset(tmp_path / "changed.yaml", tiny_preset(**change))
    result = finetune("--preset", preset, "--work-dir", work, "--resume")
    assert result.exit_code == 2, result.output
    assert "cannot resume" in result.output and named in result.output
    assert (work / "last.pth").read_bytes() == before


def test_non_finite_loss_stops_naming_the_iteration_and_keeps_last_good(runs: dict[str, Any], tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(runs["root"] / "resumed", work)
    good = (work / "last.pth").read_bytes()
    # lr 1e30: the first step of epoch 3 (iteration 5) blows the weights up, iteration 6's loss is not finite
    result = finetune("--preset", runs["preset"], "--work-dir", work, "--resume", "--epochs", "3", "--lr", "1e30")
    assert result.exit_code == 2, result.output
    assert "training stopped: the loss is" in result.output
    assert "at iteration 6 (epoch 3, step 2 of the epoch)" in result.output
    assert str(work / "last.pth") in result.output
    assert (work / "last.pth").read_bytes() == good
    assert records(work)[-1]["type"] == "error" and records(work)[-1]["iter"] == 6


def test_keypoint_count_mismatch_is_refused_before_training(runs: dict[str, Any], tmp_path: Path) -> None:
    from posecli.datasets.synthetic import generate_synthetic_dataset

    ann = generate_synthetic_dataset(tmp_path / "feet", 2, keypoints="body_foot", image_size=64, seed=3)
    args = ["--train-ann", ann, "--train-img-dir", ann.parent / "images"]
    # a 17-keypoint preset with 23-keypoint annotations
    result = finetune("--preset", runs["preset"], "--work-dir", tmp_path / "w1", *args)
    assert result.exit_code == 2, result.output
    assert "expected 3 x 17 = 51" in result.output
    # dataset inferred from those annotations (23 keypoints) against the preset's 17-keypoint head
    preset = tiny_preset()
    preset["dataset"] = None
    result = finetune("--preset", write_preset(tmp_path / "infer.yaml", preset), "--work-dir", tmp_path / "w2", *args)
    assert result.exit_code == 2, result.output
    assert "has 23 keypoints but the head predicts 17" in result.output and "--keypoints 23" in result.output
    assert not (tmp_path / "w1").exists() and not (tmp_path / "w2").exists()  # nothing written


def test_an_existing_run_needs_resume_or_overwrite(runs: dict[str, Any]) -> None:
    work = runs["root"] / "straight"
    before = (work / "last.pth").read_bytes()
    result = finetune("--preset", runs["preset"], "--work-dir", work)
    assert result.exit_code == 2
    assert "already holds a run" in result.output and "--resume" in result.output
    assert (work / "last.pth").read_bytes() == before
    result = finetune("--preset", runs["preset"], "--work-dir", work, "--overwrite", "--save-best", "mAP")
    assert result.exit_code == 2 and "--save-best 'mAP' is not a metric" in result.output
    assert (work / "last.pth").read_bytes() == before  # refused before anything was touched


def test_frozen_backbone_epoch_trains_the_head_only(runs: dict[str, Any], tmp_path: Path) -> None:
    start = runs["root"] / "straight" / "best.pth"
    result = finetune(
        "--preset", runs["preset"], "--work-dir", tmp_path / "w", "--load-from", start, "--epochs", "1",
        "--freeze-backbone-epochs", "1", "--auto-scale-lr", "2", "--eval-interval", "5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "backbone frozen for the first 1 epochs" in result.output
    assert "lr 0.002 (--auto-scale-lr: 0.001 x 4/2)" in result.output
    loaded, trained = load(start)["state_dict"], load(tmp_path / "w" / "last.pth")["state_dict"]
    for key in loaded:
        if key.startswith("backbone."):
            assert torch.equal(loaded[key], trained[key]), key  # weights and BN statistics untouched
    assert not torch.equal(loaded["keypoint_head.final_layer.weight"], trained["keypoint_head.final_layer.weight"])
    assert [r["lr"] for r in records(tmp_path / "w") if r["type"] == "train"][0] == pytest.approx(2e-3 * 0.1)


def test_progress_bar_and_summary_on_a_terminal(runs: dict[str, Any], tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    from posecli.engine.train import finetune as run
    from posecli.report import RichTrainReport

    out = StringIO()
    settings = load_settings(str(runs["preset"]), {"train.total_epochs": 1})
    summary = run(
        settings,
        tmp_path / "w",
        device="cpu",
        report=RichTrainReport(Console(file=out, force_terminal=True, width=160)),
    )
    text = out.getvalue()
    assert "epoch 1/1" in text and "2/2" in text and "data " in text and "step " in text  # the live bar
    assert summary.epochs == 1 and summary.iterations == 2 and summary.metric == "AP"
    assert summary.after == [r for r in records(tmp_path / "w") if r["type"] == "val"][-1]["metrics"]


def test_shipped_demo_checkpoint_matches_its_description() -> None:
    import posecli
    from posecli.checkpoints import load_into_model, read_checkpoint, sha256_of
    from posecli.datasets.meta import load_builtin

    assets = Path(posecli.__file__).parent / "assets"
    desc = json.loads((assets / "demo_coco17.json").read_text())
    assert sha256_of(assets / "demo_coco17.pth") == desc["sha256"]
    assert desc["bytes"] < 5_000_000 and desc["val_metrics"]["AP"] > 0.3 and desc["keypoints"] == 17
    ckpt = read_checkpoint(assets / "demo_coco17.pth")
    assert ckpt.format == "posecli" and ckpt.num_keypoints == 17
    assert set(load(assets / "demo_coco17.pth")) == {"state_dict", "meta"}  # no optimizer or RNG state
    assert all(v.dtype != torch.float16 for v in ckpt.state_dict.values())
    model = build_model(load_settings("demo").model)  # 23 keypoints: the 17 body rows are transplanted by name
    report = load_into_model(model, "builtin://demo_coco17.pth", meta=load_builtin("body_foot"))
    assert report.row_map == [(i, i) for i in range(17)] and not report.mismatched and not report.missing


# ------------------------------------------------------------------------------------------- pieces
def test_epoch_sampler_shards_orders_and_skips() -> None:
    ranks = [EpochSampler(10, shuffle=True, seed=5, rank=r, world_size=3) for r in range(3)]
    for s in ranks:
        s.set_epoch(2)
    shards = [[i for _, i in s] for s in ranks]
    assert [len(s) for s in ranks] == [4, 4, 4]
    flat = sum(shards, [])
    assert len(flat) == 12 and set(flat) == set(range(10))  # padded: 12 slots for 10 samples, each sample used
    assert all(e == 2 for s in ranks for e, _ in s)
    again = EpochSampler(10, shuffle=True, seed=5, rank=1, world_size=3)
    again.set_epoch(2, skip=3)
    assert [i for _, i in again] == shards[1][3:] and len(again) == 1
    other = EpochSampler(10, shuffle=True, seed=5, rank=1, world_size=3)
    other.set_epoch(3)
    assert [i for _, i in other] != shards[1]  # a new order each epoch


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = capture_rng()
    torch.save({"rng": state}, tmp_path / "rng.pth")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_resume_conflicts_name_the_changed_settings() -> None:
    old = load_settings("demo").model_dump(mode="json")
    new = load_settings("demo", {"train.optimizer.lr": 1.0, "train.total_epochs": 50}).model_dump(mode="json")
    assert resume_conflicts(old, new) == []  # schedule changes are allowed
    new = load_settings("demo", {"data.image_size": [64, 96], "data.heatmap_size": [16, 24]}).model_dump(mode="json")
    assert resume_conflicts(old, new) == [
        "data.image_size: [96, 128] -> [64, 96]",
        "data.heatmap_size: [24, 32] -> [16, 24]",
    ]


def test_train_mode_keeps_frozen_batch_norm_in_eval() -> None:
    model = build_model(load_settings("demo").model)
    set_train_mode(model, backbone_frozen=True, freeze_bn=False)
    assert not model.backbone.training and model.keypoint_head.training
    set_train_mode(model, backbone_frozen=False, freeze_bn=True)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and model.backbone.conv1.training


def test_cuda_request_without_a_gpu_is_a_clear_error(runs: dict[str, Any], tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, ["finetune", "--preset", str(runs["preset"]), "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA device is available" in result.output
    assert os.environ.get("POSECLI_CACHE")


@pytest.mark.slow  # ~40 s: a second Python process is started and stopped
def test_ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_weights(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    preset = tiny_preset()
    preset["data"]["synthetic"]["num_train"] = 30  # ~45 people: 12 steps per epoch, time to press Ctrl-C
    preset["train"]["eval_interval"] = 10
    path = write_preset(tmp_path / "tiny.yaml", preset)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POSECLI_CACHE": str(tmp_path / "cache")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSECLI_CACHE", env["POSECLI_CACHE"])
        straight = finetune("--preset", path, "--work-dir", tmp_path / "straight")
        assert straight.exit_code == 0, straight.output

        work = tmp_path / "stopped"
        cmd = [sys.executable, "-m", "posecli", "finetune", "--preset", str(path), "--work-dir", str(work)]
        proc = subprocess.Popen([*cmd, "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            log = work / "log.jsonl"
            if log.is_file() and log.read_text().count('"train"') >= 2:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.02)
        out = proc.communicate(timeout=120)[0].decode()
        assert proc.returncode == 130, out
        assert "interrupted" in out and "--resume" in out
        meta = load(work / "last.pth")["meta"]
        assert meta["epoch"] == 0 and 2 <= meta["epoch_iter"] < 12  # stopped inside epoch 1, between steps

        resumed = finetune("--preset", path, "--work-dir", work, "--resume")
        assert resumed.exit_code == 0, resumed.output
    a, b = load(tmp_path / "straight" / "last.pth"), load(work / "last.pth")
    assert b["meta"]["iter"] == a["meta"]["iter"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow  # two 3-epoch demo fine-tunes, 1-2 minutes on 2 cores
def test_transplanted_head_beats_a_random_head_after_the_same_steps(tmp_path: Path) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "transplant_vs_random.py"
    spec = importlib.util.spec_from_file_location("transplant_vs_random", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.compare(epochs=3, work_root=tmp_path)
    transplant, random_head = results["transplant (load_from)"], results["random head (pretrained)"]
    # 378 synthetic people / batch 32 -> 12 steps per epoch; AP before training and after epoch 3 (36 steps)
    assert [c[:2] for c in transplant["curve"]] == [c[:2] for c in random_head["curve"]] == [[0, 0], [3, 36]]
    assert transplant["before"] > 0.2 and random_head["before"] < 0.05  # the 17 body rows work from the start
    assert transplant["after"] > random_head["after"] + 0.03
