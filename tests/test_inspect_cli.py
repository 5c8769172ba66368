"""`posecli inspect-checkpoint` end to end through the Typer app: every format, URLs, load plans, bad files."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from posecli import checkpoints as ck
from posecli.cli import app
from posecli.datasets.meta import load_builtin
from posecli.models.topdown import build_model, count_parameters
from posecli.settings import load_settings

torch.set_num_threads(1)
FINAL_W, FINAL_B = "keypoint_head.final_layer.weight", "keypoint_head.final_layer.bias"
COCO = load_builtin("coco").keypoint_names
runner = CliRunner()


def coco17_model(seed: int = 0, **overrides: object) -> torch.nn.Module:
    """The demo preset's tiny HRNet-W16 with a 17-keypoint COCO head."""
    torch.manual_seed(seed)
    return build_model(load_settings("demo", {"dataset": "coco", "model.head.out_channels": 17, **overrides}).model)


def write_format(path: Path, state: dict[str, torch.Tensor], fmt: str) -> Path:
    """Save ``state`` (posecli keys) the way another tool lays out its checkpoint."""
    if fmt == "posecli":
        settings = load_settings("demo", {"dataset": "coco", "model.head.out_channels": 17})
        ck.save_checkpoint(
            path, state, ck.checkpoint_meta(settings, load_builtin("coco"), epoch=7, metrics={"AP": 0.4})
        )
        return path
    obj: object
    if fmt == "mmpose0":
        obj = {"state_dict": state, "meta": {"mmcv_version": "1.7.0", "epoch": 210}}
    elif fmt == "mmpose1":
        obj = {"state_dict": {k.replace("keypoint_head.", "head.", 1): v for k, v in state.items()}, "meta": {}}
    elif fmt == "official":
        obj = {k.replace("backbone.", "", 1).replace("keypoint_head.", "", 1): v for k, v in state.items()}
    elif fmt == "bare":
        obj = dict(state)
    elif fmt == "ddp":
        obj = {"state_dict": {"module." + k: v for k, v in state.items()}}
    torch.save(obj, path)
    return path


def invoke(*args: str):
    return runner.invoke(app, ["inspect-checkpoint", *args])


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("posecli", "posecli"),
        ("mmpose0", "mmpose0"),
        ("mmpose1", "mmpose1"),
        ("official", "hrnet-official"),
        ("bare", "mmpose0"),
        ("ddp", "mmpose0"),
    ],
)
def test_inspect_json_every_format(tmp_path: Path, fmt: str, expected: str) -> None:
    model = coco17_model()
    path = write_format(tmp_path / f"{fmt}.pth", model.state_dict(), fmt)
    result = invoke(str(path), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == expected
    assert info["num_keypoints"] == 17
    assert info["num_params"] == count_parameters(model)
    assert info["num_tensors"] == len(model.state_dict())
    assert info["backbone_widths"] == [16, 32, 64, 128]
    assert info["file_size"] == path.stat().st_size
    assert info["sha256_prefix"] == hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    assert info["keypoint_names"] == COCO
    assert info["stripped_prefix"] == ("module." if fmt == "ddp" else None)
    if fmt == "posecli":
        assert info["keypoint_names_source"] == "recorded"
        assert info["input_size"] == [96, 128]
        assert info["meta"]["epoch"] == 7 and info["meta"]["metrics"] == {"AP": 0.4}
        assert info["meta"]["dataset"] == "coco"


def test_inspect_human_output(tmp_path: Path) -> None:
    path = write_format(tmp_path / "m.pth", coco17_model().state_dict(), "mmpose0")
    result = invoke(str(path))
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "MMPose 0.x ('state_dict' entry)" in out
    assert "HRNet-W16, stage4 widths [16, 32, 64, 128]" in out
    assert f"{count_parameters(coco17_model()):,} parameters" in out
    assert "meta.mmcv_version 1.7.0" in out


def test_inspect_plan_into_preset_json_and_table(tmp_path: Path) -> None:
    state = coco17_model(seed=1).state_dict()
    path = write_format(tmp_path / "coco.pth", state, "official")
    result = invoke(str(path), "--preset", "demo", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == "hrnet-official"
    assert info["transplanted"] == [FINAL_W, FINAL_B] and info["reinitialized"] == []
    assert info["missing"] == info["unexpected"] == []
    assert sorted(info["loaded"]) == sorted(k for k in state if not k.startswith("keypoint_head."))
    rows = info["transplanted_rows"]
    assert [(r["index"], r["from_index"]) for r in rows] == [(i, i) for i in range(17)]
    assert rows[16] == {"index": 16, "name": "right_ankle", "from_index": 16, "from_name": "right_ankle"}

    table = invoke(str(path), "--preset", "demo")
    assert table.exit_code == 0, table.output
    out = " ".join(table.stdout.split())
    assert "17 keypoint rows transplanted" in out
    assert "234 loaded, 2 transplanted (17 of 23 keypoint rows, 6 fresh), 0 re-initialised, 0 missing" in out
    assert info["fresh_rows"] == 6


def test_inspect_keypoint_map_flag(tmp_path: Path) -> None:
    path = write_format(tmp_path / "coco.pth", coco17_model().state_dict(), "mmpose0")
    kmap = tmp_path / "map.json"
    kmap.write_text(json.dumps({"left_big_toe": "left_ankle", "nose": None}))
    result = invoke(str(path), "--preset", "demo", "--keypoint-map", str(kmap), "--json")
    assert result.exit_code == 0, result.output
    pairs = {(r["name"], r["from_name"]) for r in json.loads(result.stdout)["transplanted_rows"]}
    assert ("left_big_toe", "left_ankle") in pairs and not any(n == "nose" for n, _ in pairs)
    assert len(pairs) == 17


def test_inspect_w48_coco_into_wholebody_preset(tmp_path: Path, reference_dir: Path) -> None:
    """A file shaped like MMPose's W48 COCO model (zero-stride tensors, 0.5 MB) planned into W48 WholeBody."""
    state = {}
    for line in (reference_dir / "hrnet_w48_coco17.keys.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = [int(d) for d in shape.split(",")] if shape else []
        state[key] = torch.zeros([1] * len(dims), dtype=getattr(torch, dtype)).expand(dims)
    path = tmp_path / "hrnet_w48_coco_384x288_dark.pth"
    torch.save({"state_dict": state, "meta": {"config": "data_cfg = dict(\n    image_size=[288, 384],\n)"}}, path)
    result = invoke(str(path), "--preset", "hrnet_w48_coco_wholebody_384x288_dark_plus", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["format"], info["num_keypoints"], info["num_params"]) == ("mmpose0", 17, 63_595_745)
    assert info["backbone_widths"] == [48, 96, 192, 384] and info["input_size"] == [288, 384]
    assert info["transplanted"] == [FINAL_W, FINAL_B] and info["reinitialized"] == []
    assert len(info["loaded"]) == 1752 and info["missing"] == info["unexpected"] == []
    assert [r["index"] for r in info["transplanted_rows"]] == list(range(17))
    assert info["meta"]["config"] == "data_cfg = dict(\n    image_size=[288, 384],\n)"  # whole, no placeholder


def test_inspect_refused_plan_exits_2(tmp_path: Path) -> None:
    wide = coco17_model(**{"model.backbone.extra.stage4.num_channels": [16, 32, 64, 96]})
    path = write_format(tmp_path / "wide.pth", wide.state_dict(), "mmpose0")
    result = invoke(str(path), "--preset", "demo", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["mismatched"][0]["key"] == "backbone.transition3.3.0.0.weight"
    assert "finetune --load-from would refuse: checkpoint does not fit this model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_inspect_url_with_cache_dir(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    write_format(root / "m.pth", coco17_model().state_dict(), "mmpose0")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/m.pth"
        result = invoke(url, "--cache-dir", str(tmp_path / "cache"), "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["file"] == str(tmp_path / "cache" / "m.pth")
        missing = invoke(url.replace("m.pth", "gone.pth"), "--cache-dir", str(tmp_path / "cache"))
        assert missing.exit_code == 2
        assert (
            missing.stderr.strip()
            == f"error: {url.replace('m.pth', 'gone.pth')}: download failed: HTTP 404 File not found"
        )
    finally:
        httpd.shutdown()
        httpd.server_close()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_exit_2_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-unpickling"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": coco17_model().state_dict(), "meta": {"hook": _Evil(marker)}}, path)
    result = invoke(str(path), "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "refused: the file needs arbitrary code to unpickle (io.open)" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_bad_file_exit_2_one_line(tmp_path: Path, kind: str) -> None:
    good = write_format(tmp_path / "good.pth", coco17_model().state_dict(), "mmpose0")
    path = tmp_path / "bad.pth"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:-1000])
    else:
        path.write_text("not a checkpoint\n")
    result = invoke(str(path))
    assert result.exit_code == 2
    expected = "truncated or corrupt checkpoint" if kind == "truncated" else "not a PyTorch checkpoint"
    assert result.stderr.startswith(f"error: {path}: {expected}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_keypoints_needs_preset(tmp_path: Path) -> None:
    path = write_format(tmp_path / "m.pth", coco17_model().state_dict(), "bare")
    result = invoke(str(path), "--keypoints", "5")
    assert result.exit_code == 2 and "needs --preset" in result.stderr


def test_inspect_hrnetv2_hand_checkpoint(tmp_path: Path, reference_dir: Path) -> None:
    """A file shaped like MMPose's HRNetV2-W18 OneHand10K model: described as HRNetV2, plans fully into the preset."""
    state = {}
    for line in (reference_dir / "hrnetv2_w18_onehand10k.keys.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = [int(d) for d in shape.split(",")] if shape else []
        state[key] = torch.zeros([1] * len(dims), dtype=getattr(torch, dtype)).expand(dims)
    path = tmp_path / "hrnetv2_w18_onehand10k_256x256_dark.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 210}}, path)
    result = invoke(str(path), "--preset", "hrnetv2_w18_onehand10k_256x256_dark", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["format"], info["num_keypoints"], info["num_params"]) == ("mmpose0", 21, 9_641_661)
    assert info["backbone"] == "HRNetV2-W18" and info["backbone_widths"] == [18, 36, 72, 144]
    assert len(info["loaded"]) == 1839 and info["refused"] is None
    assert info["transplanted"] == info["reinitialized"] == info["missing"] == info["unexpected"] == []

    table = invoke(str(path))
    assert table.exit_code == 0, table.output
    assert "HRNetV2-W18, stage4 widths [18, 36, 72, 144]" in " ".join(table.stdout.split())


def test_inspect_hrnetv2_into_hrnet_preset_exits_2(tmp_path: Path) -> None:
    v2 = coco17_model(
        **{
            "model.backbone.extra.stage4.multiscale_output": True,
            "model.head.in_channels": [16, 32, 64, 128],
            "model.head.in_index": [0, 1, 2, 3],
            "model.head.input_transform": "resize_concat",
        }
    )
    path = write_format(tmp_path / "v2.pth", v2.state_dict(), "mmpose0")
    result = invoke(str(path), "--preset", "demo", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["backbone"] == "HRNetV2-W16"
    assert (
        "would refuse: checkpoint is HRNetV2-W16 (its head reads every stage4 branch) but the model is HRNet-W16"
        in (result.stderr)
    )
    assert len(result.stderr.strip().splitlines()) == 1
