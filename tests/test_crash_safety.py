"""Crash safety of `posecli finetune` and of every file posecli writes, with real processes and real signals.

- SIGKILL in the middle of writing last.pth (the process dies after half of the new checkpoint's bytes are on
  disk) leaves the previous last.pth whole and loadable, and ``--resume`` completes the run. A control run
  that writes the checkpoint in place, with the same kill, is left with a corrupt last.pth: so the test can
  tell an atomic write from one that is not.
- SIGKILL mid-epoch, then ``--resume``: the run completes with the same weights as a run never interrupted.
- Ctrl-C (SIGINT to the process group, as a terminal sends it, DataLoader worker included) saves a resumable
  checkpoint mid-epoch and exits 130 with a message; ``--resume`` completes it, again with the uninterrupted
  run's weights.
- Every file that convert-dataset, finetune, evaluate and a download leave behind was created by renaming a
  temporary file from the same folder (watched with a Python audit hook; files written by C code, which the
  hook cannot see, are still caught because they were never the target of a rename). The one exception is
  log.jsonl, an append-only log whose records are appended whole and read back skipping a torn last line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from tiny_hrnet import tiny_stages
from typer.testing import CliRunner

from posecli.checkpoints import read_checkpoint
from posecli.cli import app
from posecli.datasets.synthetic import generate_synthetic_dataset
from posecli.errors import PoseCliError

torch.set_num_threads(1)
runner = CliRunner()
EPOCHS = 2


# Runs `posecli ARGS` after replacing torch.save: on the N-th write of last.pth it writes the first half of the
# checkpoint's bytes into the open file, forces them to disk and SIGKILLs its own process, as the OOM killer or a
# cluster's pre-emption would in the middle of a save. CRASH_IN_PLACE=1 first makes posecli write checkpoints
# straight into their final name (the behaviour atomic writing exists to prevent): the control experiment.
KILL_DURING_SAVE = textwrap.dedent(
    """
    import io, os, runpy, signal, sys
    import torch
    import posecli.checkpoints.formats

    kill_on = int(os.environ["CRASH_ON_SAVE"])
    real_save = torch.save
    saves = []

    def save_then_die(obj, f, *args, **kwargs):
        target = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else str(f)
        if os.path.basename(target).startswith((".last.pth.", "last.pth")):
            saves.append(target)
            if len(saves) == kill_on:
                buf = io.BytesIO()
                real_save(obj, buf, *args, **kwargs)
                data = buf.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                print(f"killing myself while writing {target}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save_then_die
    if os.environ.get("CRASH_IN_PLACE") == "1":
        def write_in_place(path, writer):
            with open(path, "wb") as fh:
                writer(fh)
        posecli.checkpoints.formats.atomic_write_with = write_in_place
    sys.argv = ["posecli", *sys.argv[1:]]
    runpy.run_module("posecli", run_name="__main__")
    """
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """4 training and 2 validation images of synthetic body+feet people, a tiny preset, an uninterrupted run."""
    root = tmp_path_factory.mktemp("crash")
    train = generate_synthetic_dataset(root / "train", 4, keypoints="body_foot", image_size=64, seed=11)
    val = generate_synthetic_dataset(root / "val", 2, keypoints="body_foot", image_size=64, seed=12)
    preset = {
        "dataset": "body_foot",
        "model": {
            "backbone": {"type": "HRNet", "in_channels": 3, "extra": tiny_stages()},
            "head": {"in_channels": 8, "out_channels": 23, "num_deconv_layers": 0},
        },
        "data": {
            "image_size": [32, 48],
            "heatmap_size": [8, 12],
            "sigma": 1.0,
            "train_ann": str(train),
            "train_img_dir": str(train.parent / "images"),
            "val_ann": str(val),
            "val_img_dir": str(val.parent / "images"),
        },
        "train": {
            "optimizer": {"type": "Adam", "lr": 1e-3},
            "lr_config": {"policy": "step", "step": [1], "warmup": "linear", "warmup_iters": 4, "warmup_ratio": 0.1},
            "total_epochs": EPOCHS,
            "batch_size": 1,  # many short steps: a signal lands mid-epoch
            "workers": 0,
            "eval_interval": 1,
            "log_interval": 1,
            "seed": 3,
        },
        "test": {"flip_test": True, "batch_size": 8, "modulate_kernel": 3},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False), encoding="utf-8")
    straight = root / "straight"
    result = runner.invoke(app, ["finetune", "--preset", str(path), "--work-dir", str(straight), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    driver = root / "kill_during_save.py"
    driver.write_text(KILL_DURING_SAVE, encoding="utf-8")
    return {"root": root, "preset": path, "straight": straight, "driver": driver}


# ------------------------------------------------------------------------------------------------ helpers
def spawn(work: Path, *args: str, driver: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python -m posecli ARGS` (or the driver) in its own process group; output goes to work/../*.txt."""
    command = [sys.executable, str(driver)] if driver else [sys.executable, "-m", "posecli"]
    out = open(work.parent / f"{work.name}.stdout.txt", "ab")  # noqa: SIM115 (closed by the child's exit)
    err = open(work.parent / f"{work.name}.stderr.txt", "ab")  # noqa: SIM115
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [*command, *args], stdout=out, stderr=err, env=full_env, start_new_session=True, cwd=work.parent
    )


def finetune_args(data: dict[str, Any], work: Path, *extra: str) -> list[str]:
    return ["finetune", "--preset", str(data["preset"]), "--work-dir", str(work), "--device", "cpu", *extra]


def stderr_of(work: Path) -> str:
    return (work.parent / f"{work.name}.stderr.txt").read_text(errors="replace")


def log_records(work: Path) -> list[dict[str, Any]]:
    """Whole records of log.jsonl (a torn last line, possible after SIGKILL, is skipped)."""
    path = work / "log.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll until ``condition()``; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before the moment to signal it")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.02)


def finish(proc: subprocess.Popen, timeout: float = 120.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def meta_of(path: Path) -> dict[str, Any]:
    return read_checkpoint(path).meta or {}


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = read_checkpoint(a).state_dict, read_checkpoint(b).state_dict
    assert list(sa) == list(sb)
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def resume_to_the_end(data: dict[str, Any], work: Path) -> None:
    """`finetune --resume` (here in-process) completes the run; its weights equal the uninterrupted run's."""
    result = runner.invoke(app, finetune_args(data, work, "--resume"))
    assert result.exit_code == 0, result.output
    meta = meta_of(work / "last.pth")
    straight = meta_of(data["straight"] / "last.pth")
    assert (meta["epoch"], meta["iter"], meta["epoch_iter"]) == (EPOCHS, straight["iter"], 0)
    assert_same_weights(work / "last.pth", data["straight"] / "last.pth")
    iters = [r["iter"] for r in log_records(work) if r["type"] == "train"]
    assert iters == list(range(1, straight["iter"] + 1))  # every step logged once: no gap, no repeat


# ----------------------------------------------------------------------------------------- the kill tests
def test_sigkill_while_writing_last_pth_keeps_the_previous_checkpoint(data: dict[str, Any], tmp_path: Path) -> None:
    work = tmp_path / "run"
    proc = spawn(work, *finetune_args(data, work), driver=data["driver"], env={"CRASH_ON_SAVE": "2"})
    assert finish(proc) == -signal.SIGKILL, stderr_of(work)
    # the kill really happened half-way through writing epoch 2's checkpoint: its temporary file is there, torn
    torn = sorted(work.glob(".last.pth.*.tmp"))
    assert len(torn) == 1 and torn[0].stat().st_size > 0
    with pytest.raises(PoseCliError, match="truncated or corrupt"):
        read_checkpoint(torn[0])
    # ... and last.pth is still epoch 1's, whole
    meta = meta_of(work / "last.pth")
    assert (meta["epoch"], meta["epoch_iter"]) == (1, 0)
    assert torch.load(work / "last.pth", weights_only=True)["optimizer"]["state"]  # resumable, not only weights
    resume_to_the_end(data, work)


def test_control_in_place_write_is_corrupted_by_the_same_kill(data: dict[str, Any], tmp_path: Path) -> None:
    """Without the temp-file-and-rename, the same kill destroys the only checkpoint: the test above can fail."""
    work = tmp_path / "run"
    env = {"CRASH_ON_SAVE": "1", "CRASH_IN_PLACE": "1"}  # the first save: there is no other checkpoint
    proc = spawn(work, *finetune_args(data, work), driver=data["driver"], env=env)
    assert finish(proc) == -signal.SIGKILL, stderr_of(work)
    with pytest.raises(PoseCliError, match="truncated or corrupt"):
        read_checkpoint(work / "last.pth")


def test_sigkill_mid_epoch_then_resume_completes(data: dict[str, Any], tmp_path: Path) -> None:
    work = tmp_path / "run"
    proc = spawn(work, *finetune_args(data, work))

    def in_epoch_2() -> bool:  # epoch 1's last.pth is written before epoch 2's first step is logged
        return any(r["type"] == "train" and r["epoch"] >= 2 for r in log_records(work))

    wait_for(in_epoch_2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL
    meta = meta_of(work / "last.pth")
    assert 1 <= meta["epoch"] < EPOCHS and meta["epoch_iter"] == 0
    steps_logged = max(r["iter"] for r in log_records(work) if r["type"] == "train")
    assert steps_logged > meta["iter"]  # work after the checkpoint was lost, and is redone by --resume
    resume_to_the_end(data, work)


def test_ctrl_c_saves_a_resumable_checkpoint_and_exits_130(data: dict[str, Any], tmp_path: Path) -> None:
    """With a DataLoader worker process, which receives the terminal's SIGINT too."""
    work = tmp_path / "run"
    proc = spawn(work, *finetune_args(data, work, "--workers", "1"))

    def a_few_steps_in() -> bool:
        return any(r["type"] == "train" and r["iter"] >= 3 for r in log_records(work))

    wait_for(a_few_steps_in, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    assert finish(proc) == 130, stderr_of(work)
    err = stderr_of(work)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "error: interrupted"
    stdout = (work.parent / f"{work.name}.stdout.txt").read_text()
    assert "interrupted" in stdout and "--resume" in stdout
    meta = meta_of(work / "last.pth")
    assert meta["epoch"] < EPOCHS and meta["iter"] >= 3
    assert meta["epoch_iter"] > 0 or meta["epoch"] >= 1  # saved where it stopped, mid-epoch as a rule
    resume_to_the_end(data, work)


# ------------------------------------------------------------------------------------ every file is renamed
AUDIT_DRIVER = textwrap.dedent(
    """
    import json, os, sys

    root = os.path.realpath(sys.argv[1])
    events = []

    def inside(path):
        return isinstance(path, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(path)).startswith(root)

    def hook(event, args):
        if event == "open" and inside(args[0]):
            mode, flags = args[1], args[2]
            writes = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and flags & (os.O_WRONLY | os.O_RDWR)
            )
            if writes:
                events.append(["write", os.path.realpath(os.fsdecode(args[0])), mode or "os.open"])
        elif event in ("os.rename", "os.replace") and inside(args[1]):
            events.append(["rename", os.path.realpath(os.fsdecode(args[0])), os.path.realpath(os.fsdecode(args[1]))])

    sys.addaudithook(hook)
    from posecli.cli import app

    for command in json.loads(sys.argv[2]):
        try:
            app(command, standalone_mode=False)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    with open(sys.argv[3], "w") as fh:
        json.dump(events, fh)
    """
)


def test_every_file_written_is_renamed_from_a_temp_file_in_its_folder(data: dict[str, Any], tmp_path: Path) -> None:
    import http.server
    import shutil
    import threading

    out = tmp_path / "outputs"
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(data["straight"] / "best.pth", www / "model.pth")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/model.pth"
    synth = out / "synthetic"
    commands = [
        ["convert-dataset", "--from", "synthetic", "--out", str(synth), "--num-images", "2", "--image-size", "64",
         "--keypoints", "body_foot"],
        ["convert-dataset", str(synth / "annotations.json"), "--check", "--img-dir", str(synth / "images")],
        finetune_args(data, out / "run", "--epochs", "1", "--train-ann", str(synth / "annotations.json"),
                      "--train-img-dir", str(synth / "images")),
        ["evaluate", "--checkpoint", url, "--cache-dir", str(out / "cache"), "--ann-file",
         str(synth / "annotations.json"), "--img-dir", str(synth / "images"), "--output-dir", str(out / "eval"),
         "--device", "cpu", "--save-vis", "1"],
    ]  # fmt: skip
    driver = tmp_path / "audit.py"
    driver.write_text(AUDIT_DRIVER, encoding="utf-8")
    events_file = tmp_path / "events.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, str(driver), str(out), json.dumps(commands), str(events_file)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = json.loads(events_file.read_text())

    written = {path: mode for kind, path, mode in events if kind == "write"}
    renamed = {dst: src for kind, src, dst in events if kind == "rename"}
    files = {str(p.resolve()) for p in out.rglob("*") if p.is_file()}
    appended = {str((out / "run" / "log.jsonl").resolve())}  # append-only log (see the module docstring)
    expected = {"annotations.json", "last.pth", "config.yaml", "curves.png", "results.json", "metrics.json",
                "model.pth"}  # fmt: skip
    assert expected <= {Path(f).name for f in files}, sorted(files)
    assert any(f.endswith(".jpg") and "/vis/" in f for f in files)  # --save-vis drawings
    assert any(f.endswith(".jpg") and "/images/" in f for f in files)  # synthetic images

    # 1. every file that exists now was put there by a rename (C code writing in place would fail here too)
    assert sorted(files - set(renamed) - appended) == []
    # 2. ... from a temporary file in the same folder, opened for writing by posecli and gone now
    for dst, src in renamed.items():
        if dst in files:
            assert Path(src).parent == Path(dst).parent and Path(src).name.startswith("."), (src, dst)
            assert src in written and not Path(src).exists(), (src, dst)
    # 3. no file was opened for writing under its final name, except the append-only log
    direct = sorted(p for p, mode in written.items() if p in files and p not in appended)
    assert direct == []
    assert written.get(next(iter(appended))) == "a"
