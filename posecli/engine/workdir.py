"""The work dir of a fine-tuning run: its file names, the run state a checkpoint carries, RNG states, log.jsonl,
Ctrl-C handling, and the checks before resuming.

``config.yaml`` (resolved settings), ``log.jsonl`` (one JSON object per logged step and per evaluation), ``last.pth``
(resumable: model, optimizer, scheduler, grad scaler, RNG states, progress, best metric), ``best.pth`` (weights and
meta of the best evaluation), ``curves.png``.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from posecli.atomic import atomic_write_text
from posecli.checkpoints import load_weights_only
from posecli.datasets.meta import DatasetMeta
from posecli.errors import PoseCliError
from posecli.settings import Settings

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
LAST_CKPT = "last.pth"
BEST_CKPT = "best.pth"
CURVES_FILE = "curves.png"
# What the weights mean: resuming with any of these changed is refused.
RESUME_MUST_MATCH = ("dataset", "model", "data.image_size", "data.heatmap_size", "data.train_ann", "data.synthetic")


# ---------------------------------------------------------------------------------------------- state
@dataclass
class TrainState:
    """Progress a checkpoint carries: where to continue, and the best evaluation so far."""

    epoch: int = 0  # completed epochs
    global_iter: int = 0  # completed iterations (all epochs)
    epoch_iter: int = 0  # iterations done inside the running epoch (non-zero only in a Ctrl-C checkpoint)
    best_value: float | None = None
    best_epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # of the latest evaluation

    def to_meta(self, metric: str) -> dict[str, Any]:
        """The checkpoint ``meta`` entries of this state (``epoch``, ``iter`` as MMPose names them)."""
        return {
            "epoch": self.epoch,
            "iter": self.global_iter,
            "epoch_iter": self.epoch_iter,
            "best": {"metric": metric, "value": self.best_value, "epoch": self.best_epoch},
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TrainState:
        """Read back what ``to_meta`` wrote."""
        best = meta.get("best") or {}
        return cls(
            epoch=int(meta.get("epoch", 0)),
            global_iter=int(meta.get("iter", 0)),
            epoch_iter=int(meta.get("epoch_iter", 0)),
            best_value=best.get("value"),
            best_epoch=best.get("epoch"),
            metrics=dict(meta.get("metrics") or {}),
        )


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as plain data (tensors, lists, numbers) that load with weights_only=True."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": [str(np_state[0]), np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [int(py_state[0]), list(py_state[1]), py_state[2]],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- logging
class RunLog:
    """``log.jsonl`` (rank 0, one line per record, flushed), TensorBoard when installed, records for the curves."""

    def __init__(self, work_dir: Path, enabled: bool) -> None:
        self.path = work_dir / LOG_FILE
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        self.tb: Any = None
        if enabled:
            with contextlib.suppress(ImportError):  # TensorBoard is optional
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(work_dir / "tensorboard"))

    def resume(self, state: TrainState) -> None:
        """Keep only the records up to the resumed point (a later, lost part of the run is dropped)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rec = json.loads(line)
                if rec.get("iter", 0) <= state.global_iter and rec.get("epoch", 0) <= state.epoch + 1:
                    kept.append(rec)
        self.records = kept
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if not self.enabled:
            return
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("iter", 0)
            for key, value in record.items():
                if key in ("loss", "lr", "data_time", "step_time", "grad_norm"):
                    self.tb.add_scalar(f"{record['type']}/{key}", value, step)
            for key, value in (record.get("metrics") or {}).items():
                self.tb.add_scalar(f"val/{key}", value, step)

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.tb is not None:
            self.tb.close()


class InterruptFlag:
    """First Ctrl-C asks the loop to stop after the current step (and save); a second one aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> InterruptFlag:
        with contextlib.suppress(ValueError):  # not the main thread: no handler, Ctrl-C aborts
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _Interrupted(Exception):
    """Raised inside the loop when a Ctrl-C asked it to stop."""


# ---------------------------------------------------------------------------------------------- resume
def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_leaves(sub, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def resume_conflicts(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting in RESUME_MUST_MATCH that differs."""
    changes = []
    for key in RESUME_MUST_MATCH:
        old, new = _leaves(_get(saved, key), key), _leaves(_get(current, key), key)
        for leaf in sorted(set(old) | set(new)):
            if old.get(leaf) != new.get(leaf):
                changes.append(f"{leaf}: {old.get(leaf)!r} -> {new.get(leaf)!r}")
    return changes


def load_resume_checkpoint(path: Path, settings: Settings, meta: DatasetMeta) -> dict[str, Any]:
    """Read a last.pth to resume from, refusing one that is not resumable or was trained on other settings."""
    if not path.is_file():
        raise PoseCliError("nothing to resume: checkpoint not found", path)
    ckpt = load_weights_only(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("meta"), dict) or "optimizer" not in ckpt:
        raise PoseCliError(
            "cannot resume from this file: it is not a resumable posecli checkpoint (use last.pth)", path
        )
    saved_settings = ckpt["meta"].get("settings") or {}
    changes = resume_conflicts(saved_settings, settings.model_dump(mode="json"))
    saved_names = (ckpt["meta"].get("dataset_meta") or {}).get("keypoint_names")
    if saved_names is not None and saved_names != meta.keypoint_names:
        changes.append(f"dataset keypoints: {len(saved_names)} -> {meta.num_keypoints} names")
    if changes:
        shown = "; ".join(changes[:4]) + (f"; ... ({len(changes)} changes)" if len(changes) > 4 else "")
        raise PoseCliError(
            f"cannot resume: settings that define the model and data changed since this checkpoint ({shown}); "
            "resume with the original settings, or start a new run in another --work-dir",
            path,
        )
    return ckpt
