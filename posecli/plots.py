"""Training curves: loss per logged step and validation metrics per evaluation, read from log.jsonl records."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from posecli.atomic import atomic_write_with


def plot_curves(records: Iterable[dict[str, Any]], path: Path, metric: str = "AP") -> None:
    """Write ``curves.png``: training loss against epochs (left) and ``metric`` per evaluation (right)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must come before pyplot
    import matplotlib.pyplot as plt

    train_x, train_loss, val_x, val_y = [], [], [], []
    for rec in records:
        if rec.get("type") == "train":
            train_x.append(rec["epoch_float"])
            train_loss.append(rec["loss"])
        elif rec.get("type") == "val" and metric in rec.get("metrics", {}):
            val_x.append(rec["epoch"])
            val_y.append(rec["metrics"][metric])

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax_loss.plot(train_x, train_loss, color="tab:blue", linewidth=1)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    if train_loss and min(train_loss) > 0 and max(train_loss) > 10 * min(train_loss):
        ax_loss.set_yscale("log")  # heatmap MSE spans decades between the first steps and the end
    ax_loss.grid(True, alpha=0.3)
    ax_val.plot(val_x, val_y, marker="o", color="tab:green")
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel(f"validation {metric}")
    ax_val.grid(True, alpha=0.3)
    fig.tight_layout()

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_with(path, lambda fh: fh.write(buf.getvalue()))
