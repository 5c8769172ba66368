"""Make posecli/assets/demo_coco17.pth: the demo model trained by posecli itself on synthetic COCO-17 people.

    python tools/make_demo_checkpoint.py     # ~5 minutes on a quiet 2-core CPU (23 on one shared with other jobs)

It trains the `demo` preset's network from scratch with a 17-keypoint head (dataset `coco`) on synthetic
people (`posecli.datasets.synthetic`, seed 17: other images than the demo's own sets, which use seed 1),
with the same `posecli.engine.train.finetune` loop the CLI runs, then keeps the best epoch's fp32 weights
and meta (no optimizer state) in posecli/assets/demo_coco17.pth and describes it in demo_coco17.json.
Everything is seeded, data loading runs in the main process and torch uses a fixed thread count, so a rerun
with the same torch version and --threads reproduces the file's weights (other versions or thread counts
give numerically close weights, since CPU convolution kernels sum in different orders).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "posecli" / "assets"

# The recipe. The network is the demo preset's; only the head (17 outputs) and the data differ.
OVERRIDES = {
    "dataset": "coco",
    "model.head.out_channels": 17,
    "data.synthetic": {"keypoints": "coco", "num_train": 1000, "num_val": 100, "image_size": 192, "seed": 17},
    "train.load_from": None,
    "train.pretrained": None,
    "train.optimizer": {"type": "Adam", "lr": 2.0e-3},
    "train.lr_config": {"policy": "step", "step": [5], "warmup": "linear", "warmup_iters": 50, "warmup_ratio": 0.001},
    "train.total_epochs": 6,
    "train.batch_size": 16,
    "train.workers": 0,
    "train.seed": 17,
    "train.eval_interval": 2,
    "train.eval_before_train": False,
    "train.log_interval": 10,
}


def main(argv: list[str] | None = None) -> int:
    """Train, then write the checkpoint and its description."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ASSETS / "demo_coco17.pth")
    parser.add_argument("--work-dir", type=Path, default=REPO / "work_dirs" / "demo_coco17")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for reproducibility)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (for a quick try)")
    parser.add_argument("--num-train", type=int, default=None, help="override the recipe's training images")
    args = parser.parse_args(argv)

    from posecli.atomic import atomic_write_text
    from posecli.checkpoints import read_checkpoint, save_checkpoint, sha256_of
    from posecli.engine.train import finetune
    from posecli.models import count_parameters
    from posecli.models.topdown import build_model
    from posecli.settings import load_settings

    torch.set_num_threads(args.threads)
    overrides = dict(OVERRIDES)
    if args.epochs is not None:
        overrides["train.total_epochs"] = args.epochs
    if args.num_train is not None:
        overrides["data.synthetic"] = {**overrides["data.synthetic"], "num_train": args.num_train}
    settings = load_settings("demo", overrides)

    start = time.time()
    summary = finetune(settings, args.work_dir, device="cpu", overwrite=True)
    best = read_checkpoint(args.work_dir / "best.pth")
    meta = dict(best.meta or {})
    meta["made_by"] = "python tools/make_demo_checkpoint.py"
    state = {k: v.float() if v.is_floating_point() else v for k, v in best.state_dict.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, state, meta)  # weights and meta only: no optimizer, RNG or scheduler state

    description = {
        "file": args.out.name,
        "sha256": sha256_of(args.out),
        "bytes": args.out.stat().st_size,
        "parameters": count_parameters(build_model(settings.model)),
        "dataset": "coco",
        "keypoints": 17,
        "input_wh": list(settings.data.image_size),
        "trained_on": settings.data.synthetic.model_dump() if settings.data.synthetic else None,
        "epochs": summary.epochs,
        "best_epoch": summary.best_epoch,
        "val_metrics": {k: round(v, 4) for k, v in meta.get("metrics", {}).items()},
        "made_by": "python tools/make_demo_checkpoint.py",
        "seconds": round(time.time() - start),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "recipe": {k: v for k, v in overrides.items() if k.startswith(("train.", "data."))},
    }
    json_path = args.out.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(description, indent=2) + "\n")
    for path in (args.out, json_path):
        path.chmod(0o644)  # package data: readable by everyone (temporary files are created 0600)
    print(
        f"wrote {args.out} ({description['bytes'] / 1e6:.2f} MB, sha256 {description['sha256'][:12]}) and {json_path}"
    )
    print(f"validation AP {meta.get('metrics', {}).get('AP', float('nan')):.4f} at epoch {summary.best_epoch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
