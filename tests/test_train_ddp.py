"""`torchrun --nproc_per_node 2 posecli finetune` on the CPU (gloo): DDP training, rank-0 files, gathered evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_train import tiny_preset  # tests/ is on sys.path under pytest


def test_two_gloo_processes_train_and_gather_the_evaluation(tmp_path: Path) -> None:
    preset = tiny_preset()
    preset["train"]["freeze_backbone_epochs"] = 1  # DDP with a frozen, then unfrozen backbone
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(preset))
    work = tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POSECLI_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "posecli", "finetune", "--preset", str(tmp_path / "tiny.yaml"), "--work-dir", str(work),
        "--device", "cpu", "--auto-scale-lr", "4",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "2 processes (gloo)" in out
    assert "global batch 8 (2 x 4), lr 0.002 (--auto-scale-lr: 0.001 x 8/4)" in out
    assert out.count("validation after epoch 2") == 1  # rank 0 alone prints

    recs = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    # 7 people over 2 processes -> 4 each -> one step of 4 per process per epoch; one line per step (rank 0)
    assert [(r["type"], r["epoch"], r["iter"]) for r in recs] == [
        ("train", 1, 1),
        ("val", 1, 1),
        ("train", 2, 2),
        ("val", 2, 2),
    ]
    last = torch.load(work / "last.pth", map_location="cpu", weights_only=True)
    assert len(last["rng"]) == 2  # each process's RNG states, to resume every rank exactly
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in last["state_dict"])

    # the gathered evaluation equals a single-process evaluation of the same weights on the whole set
    from posecli.datasets.meta import load_builtin
    from posecli.engine.data import build_dataset
    from posecli.engine.evaluate import evaluate_model
    from posecli.models.topdown import build_model
    from posecli.settings import validate_settings

    settings = validate_settings(last["meta"]["settings"], "last.pth")
    model = build_model(settings.model)
    model.load_state_dict(last["state_dict"])
    cache = next((tmp_path / "cache" / "synthetic").iterdir())
    val = build_dataset(
        cache / "val" / "annotations.json", cache / "val" / "images", load_builtin("coco"), settings.data, train=False
    )
    metrics, _ = evaluate_model(model, val, settings.test, load_builtin("coco"), "cpu")
    logged = recs[-1]["metrics"]
    assert logged.keys() == metrics.keys()
    for key, value in metrics.items():
        assert logged[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
