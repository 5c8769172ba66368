"""What posecli refuses, and how: one test per row of docs/REFUSALS.md, each run through the CLI a user types.

Every refusal must end with exit code 2, one line on stderr (``error: <file>: <problem>``) naming the file and
the problem, no traceback, and every file that was already in the output folder byte-for-byte unchanged (no new
file either). The first tests show that the same commands succeed on good input, so a refusal below is caused
by the one fault each test plants, not by the setup.
"""

from __future__ import annotations

import contextlib
import copy
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from tiny_hrnet import tiny_stages
from typer.testing import CliRunner

from posecli.checkpoints import checkpoint_meta, save_checkpoint
from posecli.cli import app
from posecli.datasets.meta import load_builtin
from posecli.datasets.synthetic import generate_synthetic_dataset
from posecli.models import build_model
from posecli.settings import validate_settings

torch.set_num_threads(1)
runner = CliRunner()
META = load_builtin("body_foot")
K = META.num_keypoints  # 23


def tiny_preset(train_ann: Path, img_dir: Path, width: int = 8) -> dict[str, Any]:
    """A 0.1 M-parameter HRNet on 32x48 crops with the 23 body+feet keypoints, training on ``train_ann``."""
    stages = tiny_stages()
    stages["stage4"]["num_channels"][0] = width
    return {
        "dataset": "body_foot",
        "model": {
            "backbone": {"type": "HRNet", "in_channels": 3, "extra": stages},
            "head": {"in_channels": width, "out_channels": K, "num_deconv_layers": 0},
        },
        "data": {
            "image_size": [32, 48],
            "heatmap_size": [8, 12],
            "sigma": 1.0,
            "train_ann": str(train_ann),
            "train_img_dir": str(img_dir),
        },
        "train": {
            "optimizer": {"type": "Adam", "lr": 1e-3},
            "lr_config": {"policy": "fixed", "warmup": None},
            "total_epochs": 1,
            "batch_size": 4,
            "workers": 0,
            "log_interval": 1,
        },
        "test": {"flip_test": True, "batch_size": 8, "modulate_kernel": 3},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """3 synthetic images (body+feet people), a tiny preset training on them and an untrained checkpoint of it."""
    root = tmp_path_factory.mktemp("hardening")
    ann = generate_synthetic_dataset(root / "synthetic", 3, keypoints="body_foot", image_size=64, seed=5)
    img_dir = ann.parent / "images"
    preset = tiny_preset(ann, img_dir)
    settings = validate_settings(preset, "tiny preset")
    torch.manual_seed(0)
    model = build_model(settings.model)
    ckpt = root / "tiny.pth"
    save_checkpoint(ckpt, model, checkpoint_meta(settings, META))
    return {"root": root, "ann": ann, "img_dir": img_dir, "preset": preset, "ckpt": ckpt, "model": model}


# ------------------------------------------------------------------------------------------------ helpers
def cli(*args: Any) -> Any:
    """Run `posecli ARGS` in-process, as a user would type it."""
    return runner.invoke(app, [str(a) for a in args])


def assert_refused(result: Any, path: Path | str, *problem: str) -> str:
    """Exit 2, one ``error: ...`` line ending stderr, naming ``path`` and matching every ``problem`` regex."""
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()  # a download progress bar may come before the error
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one error line at the end:\n{result.stderr}"
    line = errors[0]
    assert line.startswith("error: "), line
    assert str(path) in line, f"{path} not named in: {line}"
    for pattern in problem:
        assert re.search(pattern, line, re.IGNORECASE), f"{pattern!r} not in: {line}"
    print(line)  # shown with `pytest -s`: the messages quoted in docs/REFUSALS.md
    return line


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def earlier_outputs(folder: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """Fill ``folder`` with the outputs of an earlier run (recognisable bytes) and return their snapshot."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"earlier run's {name}\n".encode())
    return snapshot(folder)


EVAL_OUTPUTS = ("results.json", "results.meta.json", "metrics.json")
RUN_OUTPUTS = ("config.yaml", "log.jsonl", "last.pth", "best.pth", "curves.png")


def evaluate(world: dict[str, Any], out: Path, *, ann: Path | None = None, ckpt: Any = None, extra: tuple = ()) -> Any:
    """`posecli evaluate` of a checkpoint on an annotation file into ``out``."""
    return cli(
        "evaluate", "--checkpoint", ckpt or world["ckpt"], "--ann-file", ann or world["ann"],
        "--img-dir", world["img_dir"], "--output-dir", out, "--device", "cpu", *extra,
    )  # fmt: skip


def finetune(preset: Path, work_dir: Path, *extra: Any) -> Any:
    """`posecli finetune` into a work dir that holds an earlier run (hence --overwrite)."""
    return cli("finetune", "--preset", preset, "--work-dir", work_dir, "--device", "cpu", "--overwrite", *extra)


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_preset(path: Path, preset: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(preset, sort_keys=False), encoding="utf-8")
    return path


def coco(world: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy of the good annotation file's content."""
    return json.loads(world["ann"].read_text())


def labelled(doc: dict[str, Any]) -> dict[str, Any]:
    """The first person with labelled keypoints (the dataset uses it, so planting a fault there matters)."""
    return next(a for a in doc["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"])


def bad_annotations(world: dict[str, Any], tmp_path: Path, edit: Any) -> tuple[Path, dict[str, bytes], Any]:
    """Write an edited copy of the annotations, evaluate on it into an output dir of an earlier run."""
    doc = coco(world)
    edit(doc)
    ann = write_json(tmp_path / "bad.json", doc)
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    return ann, before, evaluate(world, out, ann=ann)


# ---------------------------------------------------------------------------------------------- baselines
def test_baseline_evaluate_and_finetune_succeed(world: dict[str, Any], tmp_path: Path) -> None:
    """The commands the refusals use work on good input, over the outputs of an earlier run."""
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    result = evaluate(world, out)
    assert result.exit_code == 0, result.output
    after = snapshot(out)
    assert set(after) == set(before) and all(after[n] != before[n] for n in before)  # replaced by the new run
    assert len(json.loads(after["results.json"])) > 0

    preset = write_preset(tmp_path / "tiny.yaml", world["preset"])
    work = tmp_path / "run"
    earlier_outputs(work, RUN_OUTPUTS)
    result = finetune(preset, work)
    assert result.exit_code == 0, result.output
    assert torch.load(work / "last.pth", weights_only=True)["meta"]["epoch"] == 1


# --------------------------------------------------------------------------------------- annotation files
def test_annotation_file_that_is_not_json(world: dict[str, Any], tmp_path: Path) -> None:
    ann = tmp_path / "people.json"
    ann.write_text("images:\n  - id: 1\n", encoding="utf-8")  # YAML, not JSON
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    assert_refused(evaluate(world, out, ann=ann), ann, "not valid JSON")
    assert snapshot(out) == before


def test_annotation_file_that_is_truncated(world: dict[str, Any], tmp_path: Path) -> None:
    text = world["ann"].read_text()
    ann = tmp_path / "people.json"
    ann.write_text(text[: len(text) * 2 // 3], encoding="utf-8")  # an interrupted download or copy
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    assert_refused(evaluate(world, out, ann=ann), ann, "not valid JSON")
    assert snapshot(out) == before


@pytest.mark.parametrize("key", ["annotations", "images", "categories"])
def test_annotation_file_without_a_required_list(world: dict[str, Any], tmp_path: Path, key: str) -> None:
    ann, before, result = bad_annotations(world, tmp_path, lambda d: d.pop(key))
    assert_refused(result, ann, key)
    assert snapshot(tmp_path / "out") == before


@pytest.mark.parametrize("length", [3 * K - 3, 3 * K + 1, 0])
def test_keypoint_array_of_the_wrong_length(world: dict[str, Any], tmp_path: Path, length: int) -> None:
    def edit(doc: dict[str, Any]) -> None:
        person = labelled(doc)
        person["keypoints"] = (person["keypoints"] * 2)[:length]

    ann, before, result = bad_annotations(world, tmp_path, edit)
    person = labelled(coco(world))
    assert_refused(result, ann, f"annotation id {person['id']}", rf"\b{length}\b", str(3 * K))
    assert snapshot(tmp_path / "out") == before


@pytest.mark.parametrize(("index", "value"), [(2, -10.0), (3, -1.0), (2, 0.0), (3, 0)])
def test_negative_or_zero_size_box(world: dict[str, Any], tmp_path: Path, index: int, value: float) -> None:
    def edit(doc: dict[str, Any]) -> None:
        labelled(doc)["bbox"][index] = value

    ann, before, result = bad_annotations(world, tmp_path, edit)
    assert_refused(result, ann, f"annotation id {labelled(coco(world))['id']}", "bbox|box", "width|height|size")
    assert snapshot(tmp_path / "out") == before


@pytest.mark.parametrize("visibility", [3, -1, 0.5])
def test_visibility_outside_0_1_2(world: dict[str, Any], tmp_path: Path, visibility: float) -> None:
    def edit(doc: dict[str, Any]) -> None:
        labelled(doc)["keypoints"][2] = visibility  # the first keypoint's v

    ann, before, result = bad_annotations(world, tmp_path, edit)
    assert_refused(result, ann, f"annotation id {labelled(coco(world))['id']}", "visib", re.escape(str(visibility)))
    assert snapshot(tmp_path / "out") == before


@pytest.mark.parametrize("kind", ["image", "annotation"])
def test_duplicate_ids(world: dict[str, Any], tmp_path: Path, kind: str) -> None:
    def edit(doc: dict[str, Any]) -> None:
        entries = doc["images"] if kind == "image" else doc["annotations"]
        entries[1]["id"] = entries[0]["id"]

    ann, before, result = bad_annotations(world, tmp_path, edit)
    first = (coco(world)["images"] if kind == "image" else coco(world)["annotations"])[0]["id"]
    assert_refused(result, ann, f"{kind} id {first}", "twice|duplicate")
    assert snapshot(tmp_path / "out") == before


@pytest.mark.parametrize("workers", [0, 1])
def test_image_file_missing(world: dict[str, Any], tmp_path: Path, workers: int) -> None:
    """Also from a DataLoader worker process, where the error crosses a process boundary."""
    img_dir = tmp_path / "images"
    shutil.copytree(world["img_dir"], img_dir)
    gone = img_dir / coco(world)["images"][-1]["file_name"]
    gone.unlink()
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    result = cli(
        "evaluate", "--checkpoint", world["ckpt"], "--ann-file", world["ann"], "--img-dir", img_dir,
        "--output-dir", out, "--device", "cpu", "--workers", workers,
    )  # fmt: skip
    assert_refused(result, gone, "not found")
    assert snapshot(out) == before


@pytest.mark.parametrize("workers", [0, 1])
def test_image_file_not_decodable(world: dict[str, Any], tmp_path: Path, workers: int) -> None:
    img_dir = tmp_path / "images"
    shutil.copytree(world["img_dir"], img_dir)
    broken = img_dir / coco(world)["images"][0]["file_name"]
    broken.write_bytes(b"<html>404 Not Found</html>\n")  # what a failed image download often saves
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    result = cli(
        "evaluate", "--checkpoint", world["ckpt"], "--ann-file", world["ann"], "--img-dir", img_dir,
        "--output-dir", out, "--device", "cpu", "--workers", workers,
    )  # fmt: skip
    assert_refused(result, broken, "cannot read image|decode")
    assert snapshot(out) == before


# --------------------------------------------------------------------------------------------------- presets
def _bad_preset_run(world: dict[str, Any], tmp_path: Path, edit: Any) -> tuple[Path, Any]:
    preset = copy.deepcopy(world["preset"])
    edit(preset)
    path = write_preset(tmp_path / "bad.yaml", preset)
    work = tmp_path / "run"
    before = earlier_outputs(work, RUN_OUTPUTS)
    result = finetune(path, work)
    assert snapshot(work) == before  # even with --overwrite, nothing of the earlier run is removed
    return path, result


def test_preset_with_an_unknown_key(world: dict[str, Any], tmp_path: Path) -> None:
    path, result = _bad_preset_run(world, tmp_path, lambda p: p["train"].update(total_epoch=3))  # missing 's'
    assert_refused(result, path, r"train\.total_epoch", "unknown key")


def test_preset_with_a_wrong_type(world: dict[str, Any], tmp_path: Path) -> None:
    path, result = _bad_preset_run(world, tmp_path, lambda p: p["train"].update(batch_size="thirty-two"))
    assert_refused(result, path, r"train\.batch_size", "integer")


def test_preset_with_an_even_modulate_kernel(world: dict[str, Any], tmp_path: Path) -> None:
    path, result = _bad_preset_run(world, tmp_path, lambda p: p["test"].update(modulate_kernel=10))
    assert_refused(result, path, r"test\.modulate_kernel", "odd")


def test_preset_keypoint_count_disagrees_with_builtin_dataset(world: dict[str, Any], tmp_path: Path) -> None:
    path, result = _bad_preset_run(world, tmp_path, lambda p: p["model"]["head"].update(out_channels=17))
    assert_refused(result, path, "out_channels=17", "23 keypoints")


def test_preset_keypoint_count_disagrees_with_the_annotations(world: dict[str, Any], tmp_path: Path) -> None:
    """``dataset: null`` takes the keypoints from the annotation file: 23 there, a 17-keypoint head here."""

    def edit(p: dict[str, Any]) -> None:
        p["dataset"] = None
        p["model"]["head"]["out_channels"] = 17

    _, result = _bad_preset_run(world, tmp_path, edit)
    assert_refused(result, world["ann"], r"\b23\b", r"\b17\b")


def test_preset_yaml_alias_bomb(world: dict[str, Any], tmp_path: Path) -> None:
    """A few hundred bytes of YAML anchors that expand to 10^9 values are refused before anything walks them."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\ndataset: *a8\n", encoding="utf-8")
    work = tmp_path / "run"
    before = earlier_outputs(work, RUN_OUTPUTS)
    started = time.perf_counter()
    result = finetune(path, work)
    assert time.perf_counter() - started < 10
    assert_refused(result, path, "more than .* values")
    assert snapshot(work) == before


# ----------------------------------------------------------------------------------------------- checkpoints
def _state_dict(world: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in world["model"].state_dict().items()}


def test_checkpoint_that_is_truncated(world: dict[str, Any], tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pth"
    data = world["ckpt"].read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    assert_refused(evaluate(world, out, ckpt=ckpt), ckpt, "truncated or corrupt")
    assert snapshot(out) == before


@pytest.mark.parametrize("content", ["html", "json", "tensor"])
def test_file_that_is_not_a_checkpoint(world: dict[str, Any], tmp_path: Path, content: str) -> None:
    ckpt = tmp_path / "model.pth"
    if content == "html":
        ckpt.write_text("<html><body>Please log in to download</body></html>\n")
    elif content == "json":
        ckpt.write_text(json.dumps({"state_dict": {"backbone.conv1.weight": [1, 2, 3]}}))
    else:
        torch.save(torch.zeros(3), ckpt)
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    assert_refused(evaluate(world, out, ckpt=ckpt), ckpt, "not a (PyTorch )?checkpoint")
    assert snapshot(out) == before


class _RunsCode:
    """Unpickling this object creates a file: the attack a weights-only load must refuse without running it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_checkpoint_pickle_that_would_run_code(world: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "created-by-the-checkpoint"
    ckpt = tmp_path / "hrnet_w8_body_foot.pth"
    torch.save({"state_dict": _state_dict(world), "meta": {"hook": _RunsCode(marker)}}, ckpt)
    preset = write_preset(tmp_path / "tiny.yaml", world["preset"])
    work = tmp_path / "run"
    before = earlier_outputs(work, RUN_OUTPUTS)
    assert_refused(finetune(preset, work, "--load-from", ckpt), ckpt, "refused", "arbitrary code", "weights_only")
    assert not marker.exists()  # the code in the file never ran
    assert snapshot(work) == before
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    assert_refused(evaluate(world, out, ckpt=ckpt), ckpt, "arbitrary code")
    assert not marker.exists()
    assert snapshot(out) == before


def test_checkpoint_of_a_different_architecture(world: dict[str, Any], tmp_path: Path) -> None:
    wider = tiny_preset(world["ann"], world["img_dir"], width=12)  # HRNet stage4 widths [12, 16, 32, 64]
    torch.manual_seed(1)
    other = build_model(validate_settings(wider, "wider").model)
    ckpt = tmp_path / "other.pth"
    torch.save({"state_dict": other.state_dict(), "meta": {}}, ckpt)  # an MMPose 0.x style file
    preset = write_preset(tmp_path / "tiny.yaml", world["preset"])
    work = tmp_path / "run"
    before = earlier_outputs(work, RUN_OUTPUTS)
    assert_refused(finetune(preset, work, "--load-from", ckpt), ckpt, "does not fit this model", "HRNet-W12")
    assert snapshot(work) == before


def test_checkpoint_with_nan_weights(world: dict[str, Any], tmp_path: Path) -> None:
    raw = torch.load(world["ckpt"], weights_only=True)
    raw["state_dict"]["backbone.conv1.weight"][0, 0, 0, 0] = float("nan")
    ckpt = tmp_path / "diverged.pth"
    torch.save(raw, ckpt)
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    assert_refused(evaluate(world, out, ckpt=ckpt), ckpt, "NaN or inf", r"backbone\.conv1\.weight")
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------------------------ URLs
@contextlib.contextmanager
def serve(root: Path, stall_s: float = 0.0) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (each reply delayed by ``stall_s``); yields the base URL."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            time.sleep(stall_s)
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that gave up (the timeout test) breaks the pipe: not worth a traceback in later output

    httpd = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _url_refused(world: dict[str, Any], tmp_path: Path, url: str, *problem: str) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    result = evaluate(world, out, ckpt=url, extra=("--cache-dir", cache))
    assert_refused(result, url, *problem)
    assert snapshot(out) == before
    assert not cache.exists() or list(cache.iterdir()) == []  # no partial download left to be used later


def test_url_that_404s(world: dict[str, Any], tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    with serve(www) as base:
        _url_refused(world, tmp_path, f"{base}/hrnet_w8_body_foot.pth", "HTTP 404")


def test_url_that_times_out(world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(world["ckpt"], www / "tiny.pth")
    monkeypatch.setenv("POSECLI_DOWNLOAD_TIMEOUT", "0.2")
    with serve(www, stall_s=1.0) as base:
        _url_refused(world, tmp_path, f"{base}/tiny.pth", r"timed out after 0\.2 s", "POSECLI_DOWNLOAD_TIMEOUT")


def test_url_whose_file_hash_disagrees_with_its_name(world: dict[str, Any], tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(world["ckpt"], www / "hrnet_w8_body_foot-0badc0de_20240101.pth")  # model-zoo name, wrong hash
    with serve(www) as base:
        _url_refused(world, tmp_path, f"{base}/hrnet_w8_body_foot-0badc0de_20240101.pth", "sha256 mismatch", "0badc0de")


def test_url_over_the_download_size_limit(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(world["ckpt"], www / "tiny.pth")
    monkeypatch.setenv("POSECLI_MAX_DOWNLOAD_BYTES", "65536")
    with serve(www) as base:
        _url_refused(world, tmp_path, f"{base}/tiny.pth", "over the 64.0 KB limit", "POSECLI_MAX_DOWNLOAD_BYTES")


# ------------------------------------------------------------------------------------------ output folders
@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` unwritable even for root (chmod for users; the immutable attribute when root)."""
    folder.chmod(0o555)
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    if immutable:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        probe = folder / "probe"
        with contextlib.suppress(OSError):
            probe.write_text("x")
        if probe.exists():
            probe.unlink()
            pytest.skip("cannot make a folder read-only on this machine")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("where", ["inside", "itself"])
@pytest.mark.parametrize("command", ["finetune", "evaluate"])
def test_work_dir_on_a_read_only_path(world: dict[str, Any], tmp_path: Path, command: str, where: str) -> None:
    """A new work dir (output dir) under a read-only folder, or an earlier run's read-only one (--overwrite)."""
    preset = write_preset(tmp_path / "tiny.yaml", world["preset"])
    locked = tmp_path / "locked"
    before = earlier_outputs(locked, RUN_OUTPUTS if command == "finetune" else EVAL_OUTPUTS)
    work = locked / "run" if where == "inside" else locked
    with read_only(locked):
        result = finetune(preset, work) if command == "finetune" else evaluate(world, work)
    assert_refused(result, work, "writ|read-only|permi")
    assert snapshot(locked) == before


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_output_dir_that_is_a_file(world: dict[str, Any], tmp_path: Path, command: str) -> None:
    target = tmp_path / "results"
    target.write_text("an earlier file that must survive\n")
    if command == "evaluate":
        result = evaluate(world, target)
    else:
        result = finetune(write_preset(tmp_path / "tiny.yaml", world["preset"]), target)
    assert_refused(result, target, "is a file|not a (folder|directory)")
    assert target.read_text() == "an earlier file that must survive\n"


# ------------------------------------------------------------------------------------------- resource limits
@pytest.mark.parametrize("command", ["check", "predictions", "checkpoint"])
def test_annotation_file_over_the_size_limit(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("POSECLI_MAX_ANN_BYTES", "1024")
    assert world["ann"].stat().st_size > 1024
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    if command == "check":
        result = cli("convert-dataset", world["ann"], "--check")
    elif command == "predictions":
        results = write_json(tmp_path / "results.json", [])
        result = cli("evaluate", "--predictions", results, "--ann-file", world["ann"], "--output-dir", out)
    else:
        result = evaluate(world, out)
    assert_refused(result, world["ann"], "over the 1,024-byte limit", "POSECLI_MAX_ANN_BYTES")
    assert snapshot(out) == before


def test_a_million_keypoints_fail_early(world: dict[str, Any], tmp_path: Path) -> None:
    """In the keypoint names a dataset is inferred from, and as a --keypoints flag: refused before any model or
    heatmap of that size is built (a 10^6-keypoint head would need ~3 GB of heatmaps per crop)."""
    doc = coco(world)
    doc["categories"][0]["keypoints"] = [f"point_{i}" for i in range(1_000_000)]
    ann = write_json(tmp_path / "huge.json", doc)
    preset = copy.deepcopy(world["preset"])
    preset["dataset"] = None
    preset["data"]["train_ann"] = str(ann)
    path = write_preset(tmp_path / "inferred.yaml", preset)
    work = tmp_path / "run"
    before = earlier_outputs(work, RUN_OUTPUTS)
    started = time.perf_counter()
    assert_refused(finetune(path, work, "--keypoints", 1_000_000), path, "keypoints|out_channels", "10000")
    assert_refused(finetune(path, work), ann, "1,000,000 keypoints", "more than 10,000")
    assert time.perf_counter() - started < 30
    assert snapshot(work) == before


@pytest.mark.parametrize("file_name", ["../outside.jpg", "sub/../../outside.jpg", "/etc/hostname"])
def test_image_paths_escaping_the_image_dir(world: dict[str, Any], tmp_path: Path, file_name: str) -> None:
    """Refused by default; --allow-outside-img-dir accepts them (a relative one is then read from outside)."""
    img_dir = tmp_path / "data" / "images"
    shutil.copytree(world["img_dir"], img_dir)
    doc = coco(world)
    first = doc["images"][0]
    if not file_name.startswith("/"):
        shutil.move(str(img_dir / first["file_name"]), str(tmp_path / "data" / "outside.jpg"))
        (img_dir / "sub").mkdir()
    first["file_name"] = file_name
    ann = write_json(tmp_path / "escaping.json", doc)
    out = tmp_path / "out"
    before = earlier_outputs(out, EVAL_OUTPUTS)
    args = ("evaluate", "--checkpoint", world["ckpt"], "--ann-file", ann, "--img-dir", img_dir, "--device", "cpu")
    result = cli(*args, "--output-dir", out)
    assert_refused(result, ann, re.escape(file_name), "outside the image folder")
    assert snapshot(out) == before
    if not file_name.startswith("/"):
        allowed = cli(*args, "--allow-outside-img-dir")
        assert allowed.exit_code == 0, allowed.output


@pytest.mark.parametrize("allow", [False, True])
def test_finetune_image_paths_escaping_the_image_dir(world: dict[str, Any], tmp_path: Path, allow: bool) -> None:
    """finetune refuses them too; `--allow-outside-img-dir` (data.allow_outside_img_dir) accepts them."""
    img_dir = tmp_path / "data" / "images"
    shutil.copytree(world["img_dir"], img_dir)
    doc = coco(world)
    first = doc["images"][0]
    shutil.move(str(img_dir / first["file_name"]), str(tmp_path / "data" / "outside.jpg"))
    first["file_name"] = "../outside.jpg"
    ann = write_json(tmp_path / "escaping.json", doc)
    preset = copy.deepcopy(world["preset"])
    preset["data"].update(train_ann=str(ann), train_img_dir=str(img_dir))
    path = write_preset(tmp_path / "tiny.yaml", preset)
    work = tmp_path / "run"
    if allow:
        result = finetune(path, work, "--allow-outside-img-dir")
        assert result.exit_code == 0, result.output
    else:
        before = earlier_outputs(work, RUN_OUTPUTS)
        assert_refused(finetune(path, work), ann, "'../outside.jpg' points outside the image folder")
        assert snapshot(work) == before
