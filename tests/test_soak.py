"""Soak: 200 `posecli evaluate` runs in one process must not grow its memory (run with `pytest -m slow`).

A service or a notebook that evaluates checkpoint after checkpoint calls the same code again and again; a
leak of a few MB per call (an unclosed file, a cached model, a growing registry) would take it down after
days. Resident memory is read from /proc/self/statm after 20 warm-up runs (allocator pools, lazy imports,
torch's kernel caches) and after the 200th; the growth between must stay under GROWTH_BOUND_MB.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest
import torch
from tiny_hrnet import tiny_stages
from typer.testing import CliRunner

from posecli.checkpoints import checkpoint_meta, save_checkpoint
from posecli.cli import app
from posecli.datasets.meta import load_builtin
from posecli.datasets.synthetic import generate_synthetic_dataset
from posecli.models import build_model
from posecli.settings import validate_settings

RUNS = 200
WARMUP = 20
GROWTH_BOUND_MB = 10.0  # over the 180 runs after warm-up (measured: +0.9 MB, 5 KB per run, on CPU)


def rss_mb() -> float:
    """Resident set size of this process in MB (second field of /proc/self/statm, in pages)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_200_evaluate_runs_do_not_grow_memory(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ann = generate_synthetic_dataset(tmp_path / "synthetic", 3, keypoints="body_foot", image_size=64, seed=7)
    preset = {
        "dataset": "body_foot",
        "model": {
            "backbone": {"type": "HRNet", "in_channels": 3, "extra": tiny_stages()},
            "head": {"in_channels": 8, "out_channels": 23, "num_deconv_layers": 0},
        },
        "data": {"image_size": [32, 48], "heatmap_size": [8, 12], "sigma": 1.0},
        "test": {"flip_test": True, "post_process": "unbiased", "modulate_kernel": 3, "batch_size": 4},
        "train": {"workers": 0},
    }
    settings = validate_settings(preset, "soak preset")
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pth"
    save_checkpoint(ckpt, build_model(settings.model), checkpoint_meta(settings, load_builtin("body_foot")))
    args = [
        "evaluate", "--checkpoint", str(ckpt), "--ann-file", str(ann), "--img-dir", str(ann.parent / "images"),
        "--output-dir", str(tmp_path / "out"), "--device", "cpu",
    ]  # fmt: skip
    runner = CliRunner()
    samples: list[float] = []
    first_metrics = None
    for i in range(RUNS):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
        metrics.pop("eval_info")
        first_metrics = first_metrics or metrics
        assert metrics == first_metrics  # the same numbers every time
        if i + 1 == WARMUP or (i + 1) % 20 == 0:
            gc.collect()
            samples.append(rss_mb())
    growth = samples[-1] - samples[0]
    print(
        f"\nRSS after {WARMUP} runs {samples[0]:.1f} MB, after {RUNS} runs {samples[-1]:.1f} MB: "
        f"growth {growth:+.1f} MB over {RUNS - WARMUP} runs ({growth / (RUNS - WARMUP) * 1024:+.1f} KB per run); "
        "every 20 runs: " + ", ".join(f"{s:.1f}" for s in samples)
    )
    assert growth < GROWTH_BOUND_MB
