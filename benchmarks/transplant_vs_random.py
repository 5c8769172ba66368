"""Does the head transplant help? Fine-tune the demo twice for the same steps and compare validation AP.

    python benchmarks/transplant_vs_random.py [--epochs N] [--json OUT]

Both runs use the `demo` preset (23 body+feet keypoints, synthetic people, Adam 5e-4) and start from the
shipped COCO-17 checkpoint: ``transplant`` loads it with load_from, so the 17 body rows of the head's final
layer are copied by keypoint name and only the 6 feet start fresh; ``random head`` loads it with
``pretrained`` (backbone only), so the whole head starts from MMPose's random init. Same seed, data,
schedule and steps; AP is printed at every evaluation (before training, then every eval_interval epochs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

RUNS = ("transplant (load_from)", "random head (pretrained)")


def compare(
    epochs: int | None = None, work_root: Path | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Run both fine-tunes; per run: AP ``curve`` [[epoch, iteration, AP], ...], ``before``, ``after``, seconds."""
    from posecli.engine.train import finetune
    from posecli.settings import load_settings

    root = work_root or Path(tempfile.mkdtemp(prefix="posecli-transplant-"))
    base: dict[str, Any] = {"train.eval_before_train": True, **(overrides or {})}
    if epochs is not None:
        base["train.total_epochs"] = epochs
    source = load_settings("demo").train.load_from or "builtin://demo_coco17.pth"
    sources = [
        {"train.load_from": source, "train.pretrained": None},
        {"train.load_from": None, "train.pretrained": source},
    ]
    out: dict[str, dict[str, Any]] = {}
    for i, (name, src) in enumerate(zip(RUNS, sources, strict=True)):
        work = root / f"run{i}"
        settings = load_settings("demo", {**base, **src})
        summary = finetune(settings, work, device="cpu", overwrite=True)  # no report: silent
        lines = (work / "log.jsonl").read_text(encoding="utf-8").splitlines()
        val = [rec for rec in map(json.loads, lines) if rec["type"] == "val"]
        out[name] = {
            "curve": [[r["epoch"], r["iter"], r["metrics"][summary.metric]] for r in val],
            "before": (summary.before or {}).get(summary.metric, float("nan")),
            "after": summary.after.get(summary.metric, float("nan")),
            "iterations": summary.iterations,
            "seconds": round(summary.seconds, 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Print AP per evaluation for both runs (and write them as JSON with --json); exit 1 if the transplant lost."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each run (default: the demo preset's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    results = compare(args.epochs)
    transplant, random_head = (results[name] for name in RUNS)
    print(f"{'epoch':>5} {'iteration':>9} {'AP transplant':>14} {'AP random head':>15} {'difference':>11}")
    for (epoch, it, ap_t), (_, _, ap_r) in zip(transplant["curve"], random_head["curve"], strict=True):
        print(f"{epoch:>5} {it:>9} {ap_t:>14.4f} {ap_r:>15.4f} {ap_t - ap_r:>+11.4f}")
    print(f"seconds: transplant {transplant['seconds']:.0f}, random head {random_head['seconds']:.0f}")
    if args.json is not None:
        from posecli.atomic import atomic_write_json

        atomic_write_json(args.json, results)
    return 0 if transplant["after"] > random_head["after"] else 1


if __name__ == "__main__":
    sys.exit(main())
