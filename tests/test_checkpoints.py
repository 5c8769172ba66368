"""Checkpoint sources, download cache and hash check, format mapping, load plan with head transplant, saving."""

from __future__ import annotations

import hashlib
import http.server
import importlib.resources
import math
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from posecli import checkpoints as ck
from posecli.datasets.meta import DatasetMeta, load_builtin
from posecli.errors import PoseCliError
from posecli.models.topdown import build_model
from posecli.settings import load_settings

torch.set_num_threads(1)
FINAL_W, FINAL_B = "keypoint_head.final_layer.weight", "keypoint_head.final_layer.bias"
COCO = load_builtin("coco").keypoint_names


# ---------------------------------------------------------------------------------------------- helpers
def tiny_model(keypoints: int = 17, seed: int = 0, **overrides: object) -> torch.nn.Module:
    """The demo preset's tiny HRNet-W16 with a head of ``keypoints`` outputs, random-but-seeded weights."""
    dataset = {17: "coco", 23: "body_foot"}.get(keypoints)
    settings = load_settings("demo", {"dataset": dataset, "model.head.out_channels": keypoints, **overrides})
    torch.manual_seed(seed)
    model = build_model(settings.model)
    with torch.no_grad():  # non-trivial values everywhere (BN stats and a non-zero head bias included)
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.1)
    return model


def in_convention(state: dict[str, torch.Tensor], fmt: str) -> object:
    """The object a checkpoint file of another tool would hold, built by renaming posecli's keys."""
    if fmt == "mmpose0":
        return {
            "state_dict": state,
            "meta": {"mmcv_version": "1.7.0", "config": "data_cfg = dict(image_size=[96, 128])"},
        }
    if fmt == "mmpose1":
        renamed = {k.replace("keypoint_head.", "head.", 1): v for k, v in state.items()}
        id2name = {i: n for i, n in enumerate(COCO)} if state[FINAL_W].shape[0] == 17 else {}
        return {"state_dict": renamed, "meta": {"dataset_meta": {"keypoint_id2name": id2name}}, "message_hub": {}}
    if fmt == "official":  # official HRNet repository: no prefix, final_layer.* (final_state.pth is a bare dict)
        return {k.replace("backbone.", "", 1).replace("keypoint_head.", "", 1): v for k, v in state.items()}
    if fmt == "bare":
        return dict(state)
    if fmt == "ddp":
        return {"state_dict": {"module." + k: v for k, v in state.items()}, "optimizer": {"state": {}}}
    raise ValueError(fmt)


def shapes_from_tsv(tsv: Path) -> dict[str, torch.Tensor]:
    """A state_dict of meta-device tensors with the shapes MMPose's own model has (no memory used)."""
    state = {}
    for line in tsv.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = [int(d) for d in shape.split(",")] if shape else []
        state[key] = torch.empty(dims, dtype=getattr(torch, dtype), device="meta")
    return state


@pytest.fixture
def server(tmp_path: Path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; counts requests; /slow/* stalls for 2 s."""
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):  # noqa: N802 (http.server naming)
            hits.append(self.path)
            if self.path.startswith("/slow/"):
                time.sleep(2.0)
            return super().do_GET()

        def log_message(self, *args):  # keep test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def save_obj(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


# ---------------------------------------------------------------------------------------------- sources
def test_local_path_file_url_and_missing(tmp_path: Path) -> None:
    path = save_obj(tmp_path / "a b.pth", {"state_dict": {"backbone.x": torch.zeros(1)}})
    assert ck.resolve_source(path) == path
    assert ck.resolve_source(path.as_uri()) == path  # file:// with a quoted space
    with pytest.raises(PoseCliError, match="checkpoint not found"):
        ck.resolve_source(tmp_path / "nope.pth")
    with pytest.raises(PoseCliError, match="unsupported checkpoint source 's3://'"):
        ck.resolve_source("s3://bucket/x.pth")


def test_builtin_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "assets").mkdir()
    save_obj(tmp_path / "assets" / "demo_coco17.pth", {"backbone.x": torch.zeros(1)})
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    assert ck.resolve_source("builtin://demo_coco17.pth") == tmp_path / "assets" / "demo_coco17.pth"
    with pytest.raises(PoseCliError, match=r"no built-in checkpoint 'other.pth' \(shipped: demo_coco17.pth\)"):
        ck.resolve_source("builtin://other.pth")
    with pytest.raises(PoseCliError, match="bad built-in checkpoint name"):
        ck.resolve_source("builtin://../settings.py")


def test_download_then_cache_reuse_without_network(tmp_path: Path, server) -> None:
    root, base, hits = server
    state = tiny_model().state_dict()
    save_obj(root / "tiny.pth", in_convention(state, "mmpose0"))
    cache = tmp_path / "cache"
    got = ck.resolve_source(f"{base}/tiny.pth?raw=1", cache_dir=cache)
    assert got == cache / "tiny.pth"
    assert got.read_bytes() == (root / "tiny.pth").read_bytes()
    assert hits == ["/tiny.pth?raw=1"]
    assert sorted(p.name for p in cache.iterdir()) == ["tiny.pth"]  # the temp file was renamed, nothing left over
    (root / "tiny.pth").unlink()  # the server no longer has it: the second run must not ask
    assert ck.resolve_source(f"{base}/tiny.pth", cache_dir=cache) == got
    assert hits == ["/tiny.pth?raw=1"]
    assert torch.equal(ck.read_checkpoint(got).state_dict[FINAL_W], state[FINAL_W])


def test_cache_dir_from_env(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    root, base, _ = server
    (root / "w.pth").write_bytes(b"x" * 10)
    monkeypatch.setenv("POSECLI_CACHE", str(tmp_path / "root"))
    assert ck.resolve_source(f"{base}/w.pth") == tmp_path / "root" / "checkpoints" / "w.pth"


def test_hash_named_download_good_and_bad(tmp_path: Path, server) -> None:
    root, base, _ = server
    payload = b"pretend checkpoint bytes"
    sha = hashlib.sha256(payload).hexdigest()
    good, bad = f"hrnet_tiny-{sha[:8]}_20200812.pth", "hrnet_tiny-deadbeef.pth"
    (root / good).write_bytes(payload)
    (root / bad).write_bytes(payload)
    cache = tmp_path / "cache"
    assert ck.resolve_source(f"{base}/{good}", cache_dir=cache).read_bytes() == payload
    with pytest.raises(PoseCliError) as err:
        ck.resolve_source(f"{base}/{bad}", cache_dir=cache)
    assert f"the file name says deadbeef, the download's sha256 starts {sha[:8]}" in str(err.value)
    assert sorted(p.name for p in cache.iterdir()) == [good]  # the bad download is deleted (and no .part)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hrnet_w48_coco_384x288_dark-741844ba_20200812.pth", "741844ba"),
        ("res50_coco_256x192-ec54d7f3.pth", "ec54d7f3"),
        ("best.pth", None),
        ("x-741844bz_2020.pth", None),
        ("x-741844ba.pt", None),
    ],
)
def test_hash_in_name(name: str, expected: str | None) -> None:
    assert ck.expected_sha_prefix(name) == expected


def test_download_errors_are_one_line(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    root, base, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(PoseCliError, match="download failed: HTTP 404") as err:
        ck.resolve_source(f"{base}/missing.pth", cache_dir=cache)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{base}/missing.pth: ")

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PoseCliError, match="connection refused"):
        ck.resolve_source(f"http://127.0.0.1:{port}/x.pth", cache_dir=cache)

    (root / "slow").mkdir()
    (root / "slow" / "s.pth").write_bytes(b"x")
    monkeypatch.setenv("POSECLI_DOWNLOAD_TIMEOUT", "0.3")
    with pytest.raises(PoseCliError, match="download timed out after 0.3 s"):
        ck.resolve_source(f"{base}/slow/s.pth", cache_dir=cache)

    (root / "big.pth").write_bytes(b"x" * 5000)
    monkeypatch.setenv("POSECLI_MAX_DOWNLOAD_BYTES", "4096")
    with pytest.raises(PoseCliError, match=r"download is 4.9 KB, over the 4.0 KB limit"):
        ck.resolve_source(f"{base}/big.pth", cache_dir=cache)
    monkeypatch.setenv("POSECLI_MAX_DOWNLOAD_BYTES", "lots")
    with pytest.raises(PoseCliError, match="POSECLI_MAX_DOWNLOAD_BYTES='lots' is not an integer"):
        ck.resolve_source(f"{base}/big.pth", cache_dir=cache)
    assert not cache.exists() or list(cache.iterdir()) == []  # failed downloads leave nothing behind


# ---------------------------------------------------------------------------------------------- reading
@pytest.mark.parametrize(
    ("fmt", "expected", "container", "prefix"),
    [
        ("mmpose0", "mmpose0", "state_dict", None),
        ("mmpose1", "mmpose1", "state_dict", None),
        ("official", "hrnet-official", "bare", None),
        ("bare", "mmpose0", "bare", None),
        ("ddp", "mmpose0", "state_dict", "module."),
    ],
)
def test_formats_map_to_posecli_keys(tmp_path: Path, fmt: str, expected: str, container: str, prefix) -> None:
    state = tiny_model().state_dict()
    ckpt = ck.read_checkpoint(save_obj(tmp_path / f"{fmt}.pth", in_convention(state, fmt)))
    assert (ckpt.format, ckpt.container, ckpt.stripped_prefix) == (expected, container, prefix)
    assert list(ckpt.state_dict) == list(state)
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in state.items())
    assert ckpt.num_keypoints == 17
    names, source = ckpt.keypoint_names()
    assert names == COCO
    assert source == ("recorded" if fmt == "mmpose1" else "assumed COCO order")


def test_posecli_checkpoint_round_trip(tmp_path: Path) -> None:
    settings = load_settings("demo")
    model = tiny_model(23)
    meta = ck.checkpoint_meta(settings, load_builtin("body_foot"), epoch=3, iteration=120, metrics={"AP": 0.5})
    # the shape of an Adam state_dict (building a real optimizer imports torch._dynamo: seconds)
    optimizer = {
        "state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.ones(3), "exp_avg_sq": torch.ones(3)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "foreach": None, "params": [0]}],
    }
    path = tmp_path / "run" / "last.pth"
    ck.save_checkpoint(path, torch.nn.DataParallel(model), meta, optimizer=optimizer, epoch=3)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pth"]
    raw = torch.load(path, weights_only=True)  # MMPose 0.x layout: state_dict with backbone.* / keypoint_head.*
    assert list(raw["state_dict"]) == list(model.state_dict())
    assert set(raw) == {"state_dict", "meta", "optimizer", "epoch"}
    ckpt = ck.read_checkpoint(path)
    assert ckpt.format == "posecli"
    assert ckpt.keypoint_names() == (load_builtin("body_foot").keypoint_names, "recorded")
    assert ckpt.dataset_meta() == load_builtin("body_foot")
    assert ckpt.settings() == settings
    assert ckpt.image_size() == [96, 128]
    assert (ckpt.meta["epoch"], ckpt.meta["iter"], ckpt.meta["metrics"]) == (3, 120, {"AP": 0.5})
    assert ckpt.extras["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert ckpt.meta["posecli_version"]

    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"extra state.rng\[1\] is a ndarray"):
        ck.save_checkpoint(path, model, meta, rng=("MT19937", np.zeros(3)))
    assert path.read_bytes() == before  # nothing written over the good file


def test_mmcv_numpy_scalars_in_meta_load(tmp_path: Path) -> None:
    obj = in_convention(tiny_model().state_dict(), "mmpose0")
    obj["meta"]["hook_msgs"] = {"best_score": np.float64(0.75), "best_epoch": np.int64(200)}
    obj["meta"]["dataset_meta"] = {"sigmas": np.full(17, 0.05, dtype=np.float32)}  # MMEngine style
    ckpt = ck.read_checkpoint(save_obj(tmp_path / "mmcv.pth", obj))
    assert ckpt.meta["hook_msgs"]["best_score"] == 0.75
    assert ckpt.meta["dataset_meta"]["sigmas"].shape == (17,)
    assert ckpt.image_size() == [96, 128]  # parsed from the MMPose config text


class _Evil:
    """Unpickling this object would create a file (the attack a weights-only load must refuse)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("where", ["meta", "object_array"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "pwned"
    evil = _Evil(marker) if where == "meta" else {"sigmas": np.array([_Evil(marker)], dtype=object)}
    path = save_obj(tmp_path / "evil.pth", {"state_dict": {"backbone.x": torch.zeros(1)}, "meta": evil})
    with pytest.raises(PoseCliError, match=r"refused: the file needs arbitrary code to unpickle \(io.open\)"):
        ck.read_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # control: an unsafe load really would have created the file
    assert marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("truncated", "truncated or corrupt checkpoint"),
        ("text", "not a PyTorch checkpoint"),
        ("empty", "truncated or corrupt checkpoint"),
        ("tensor", "not a checkpoint: it holds a Tensor"),
        ("no_tensors", r"no state_dict of tensors \(top-level keys: epoch, note\)"),
        ("nan", r"refused: NaN or inf values in backbone.conv1.weight"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.pth"
    good = tmp_path / "good.pth"
    save_obj(good, in_convention(tiny_model().state_dict(), "mmpose0"))
    if content == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif content == "text":
        path.write_text("model: hrnet\nweights: somewhere else\n")
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "tensor":
        save_obj(path, torch.zeros(3))
    elif content == "no_tensors":
        save_obj(path, {"epoch": 3, "note": "hi"})
    elif content == "nan":
        state = tiny_model().state_dict()
        state["backbone.conv1.weight"][0, 0, 0, 0] = float("nan")
        save_obj(path, {"state_dict": state})
    with pytest.raises(PoseCliError, match=message) as err:
        ck.read_checkpoint(path)
    assert err.value.path == str(path) and "\n" not in str(err.value)


# -------------------------------------------------------------------------------------------- load plan
def test_load_from_coco17_into_body_foot_transplants_body_rows(tmp_path: Path) -> None:
    source = tiny_model(17, seed=1).state_dict()
    path = save_obj(tmp_path / "coco.pth", in_convention(source, "mmpose0"))
    model = tiny_model(23, seed=2)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = ck.load_into_model(model, path, "load_from", meta=load_builtin("body_foot"))
    assert report.transplanted == [FINAL_W, FINAL_B] and report.reinitialized == []  # each tensor counted once
    assert report.fresh_rows == 6 and "17 of 23 keypoint rows, 6 fresh" in report.summary()
    assert report.missing == report.unexpected == report.mismatched == []
    assert len(report.loaded) == len(source) - 2
    assert report.row_map == [(i, i) for i in range(17)]
    state = model.state_dict()
    for key in report.loaded:
        assert torch.equal(state[key], source[key]), key
    assert torch.equal(state[FINAL_W][:17], source[FINAL_W])
    assert torch.equal(state[FINAL_B][:17], source[FINAL_B])
    assert torch.equal(state[FINAL_W][17:], fresh[FINAL_W][17:])  # the 6 foot rows keep the new init
    assert torch.equal(state[FINAL_B][17:], fresh[FINAL_B][17:])


def test_transplant_is_by_name_not_position(tmp_path: Path) -> None:
    source = tiny_model(17, seed=1).state_dict()
    foot = load_builtin("body_foot").keypoint_names
    names = list(reversed(foot))  # 23 names, COCO's 17 among them in another order
    meta = DatasetMeta(name="reversed", keypoint_names=names)
    model = tiny_model(23, seed=2)
    fresh = model.state_dict()[FINAL_W].clone()
    report = ck.load_into_model(model, save_obj(tmp_path / "c.pth", source), meta=meta)
    weight = model.state_dict()[FINAL_W]
    for i, name in enumerate(names):
        expected = source[FINAL_W][COCO.index(name)] if name in COCO else fresh[i]
        assert torch.equal(weight[i], expected), name
    assert sorted(report.row_map) == sorted((names.index(n), j) for j, n in enumerate(COCO))
    rows = report.transplanted_rows()
    assert {(r["name"], r["from_name"]) for r in rows} == {(n, n) for n in COCO}


def test_same_size_heads_reorder_by_recorded_names(tmp_path: Path) -> None:
    """A posecli checkpoint carries its names: a 17-keypoint head in another order is permuted, not copied."""
    settings = load_settings("demo", {"dataset": "coco", "model.head.out_channels": 17})
    perm = COCO[1:] + COCO[:1]
    src_model = tiny_model(17, seed=3)
    meta = ck.checkpoint_meta(settings, DatasetMeta(name="perm", keypoint_names=perm))
    path = tmp_path / "perm.pth"
    ck.save_checkpoint(path, src_model, meta)
    model = tiny_model(17, seed=4)
    report = ck.load_into_model(model, path, meta=load_builtin("coco"))
    assert report.transplanted == [FINAL_W, FINAL_B] and report.reinitialized == []
    assert torch.equal(model.state_dict()[FINAL_W][0], src_model.state_dict()[FINAL_W][16])  # nose was last
    same = ck.load_into_model(tiny_model(17), path, meta=DatasetMeta(name="perm", keypoint_names=perm))
    assert FINAL_W in same.loaded and same.transplanted == []


def test_keypoint_map_overrides_matching(tmp_path: Path) -> None:
    source = tiny_model(17, seed=1).state_dict()
    path = save_obj(tmp_path / "c.pth", in_convention(source, "mmpose0"))
    kmap = tmp_path / "map.yaml"
    kmap.write_text("left_big_toe: left_ankle\nright_big_toe: 16\nnose: null\n")
    model = tiny_model(23, seed=2)
    fresh = model.state_dict()[FINAL_W].clone()
    report = ck.load_into_model(model, path, meta=load_builtin("body_foot"), keypoint_map=kmap)
    weight = model.state_dict()[FINAL_W]
    assert torch.equal(weight[17], source[FINAL_W][15])  # left_big_toe <- left_ankle
    assert torch.equal(weight[20], source[FINAL_W][16])  # right_big_toe <- row 16
    assert torch.equal(weight[0], fresh[0])  # nose: null keeps the new init
    assert len(report.row_map) == 18

    kmap.write_text("tail: nose\n")
    with pytest.raises(PoseCliError, match=r"names \['tail'\] are not keypoints") as err:
        ck.load_into_model(tiny_model(23), path, meta=load_builtin("body_foot"), keypoint_map=kmap)
    assert err.value.path == str(kmap)
    kmap.write_text("left_heel: tail\n")
    with pytest.raises(PoseCliError, match="'tail' .* is not a keypoint of the checkpoint"):
        ck.load_into_model(tiny_model(23), path, meta=load_builtin("body_foot"), keypoint_map=kmap)
    kmap.write_text("[1, 2]\n")
    with pytest.raises(PoseCliError, match="must be a mapping"):
        ck.load_keypoint_map(kmap)


def test_final_layer_of_another_kernel_is_reinitialised_whole(tmp_path: Path) -> None:
    """Weight and bias rows move together: a 3x3 final conv cannot take a 1x1 one's rows, so neither moves."""
    path = save_obj(tmp_path / "c.pth", tiny_model(17).state_dict())
    model = tiny_model(23, **{"model.head.final_conv_kernel": 3})
    fresh = model.state_dict()[FINAL_B].clone()
    report = ck.load_into_model(model, path, meta=load_builtin("body_foot"))
    assert report.reinitialized == [FINAL_W, FINAL_B] and report.transplanted == report.row_map == []
    assert torch.equal(model.state_dict()[FINAL_B], fresh)
    assert report.refusal is None and len(report.loaded) == len(model.state_dict()) - 2


def test_pretrained_loads_backbone_only(tmp_path: Path) -> None:
    source = tiny_model(17, seed=1).state_dict()
    path = save_obj(tmp_path / "official.pth", in_convention(source, "official"))
    model = tiny_model(23, seed=2)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("keypoint_head.")}
    report = ck.load_into_model(model, path, mode="pretrained", meta=load_builtin("body_foot"))
    assert report.format == "hrnet-official"
    assert report.loaded == [k for k in source if k.startswith("backbone.")]
    assert report.skipped == [FINAL_W, FINAL_B]
    assert report.transplanted == report.reinitialized == report.missing == report.unexpected == []
    state = model.state_dict()
    assert all(torch.equal(state[k], source[k]) for k in report.loaded)
    assert all(torch.equal(state[k], v) for k, v in head_before.items())


def test_other_architecture_is_refused(tmp_path: Path) -> None:
    source = tiny_model(17, **{"model.backbone.extra.stage4.num_channels": [16, 32, 64, 96]}).state_dict()
    path = save_obj(tmp_path / "wide.pth", {"state_dict": source})
    model = tiny_model(17)
    before = model.state_dict()["backbone.conv1.weight"].clone()
    with pytest.raises(PoseCliError) as err:
        ck.load_into_model(model, path, meta=load_builtin("coco"))
    assert (
        "load_from refused: checkpoint does not fit this model (checkpoint: HRNet-W16 [16, 32, 64, 96], "
        "model: HRNet-W16 [16, 32, 64, 128]): 16 tensors differ in shape (only the head's final layer may), "
        "e.g. backbone.transition3.3.0.0.weight: checkpoint (96, 64, 3, 3) vs model (128, 64, 3, 3)"
    ) in str(err.value)
    assert torch.equal(model.state_dict()["backbone.conv1.weight"], before)  # nothing half-loaded
    with pytest.raises(PoseCliError, match="no tensor of the checkpoint matches"):
        ck.load_into_model(model, save_obj(tmp_path / "x.pth", {"fc.weight": torch.ones(2, 2)}))


def test_w48_coco_checkpoint_into_w48_wholebody_preset(reference_dir: Path) -> None:
    """MMPose's W48 COCO model into the W48 COCO-WholeBody preset: only the final layer is re-initialised."""
    source = ck.parse_checkpoint(
        {"state_dict": shapes_from_tsv(reference_dir / "hrnet_w48_coco17.keys.tsv"), "meta": {}}
    )
    assert source.format == "mmpose0" and source.num_keypoints == 17
    assert ck.count_params(source.state_dict) == 63_595_745  # manifests.json
    assert ck.backbone_widths(source.state_dict) == [48, 96, 192, 384]
    settings = load_settings("hrnet_w48_coco_wholebody_384x288_dark_plus")
    with torch.device("meta"):
        target = build_model(settings.model).state_dict()
    assert list(target) == list(shapes_from_tsv(reference_dir / "hrnet_w48_wholebody133.keys.tsv"))
    report = ck.plan_load(target, source, "load_from", load_builtin("coco_wholebody"))
    assert report.refusal is None
    assert report.transplanted == [FINAL_W, FINAL_B] and report.reinitialized == []
    assert report.row_map == [(i, i) for i in range(17)] and report.fresh_rows == 133 - 17
    assert report.missing == report.unexpected == report.mismatched == []
    assert len(report.loaded) == 1754 - 2
    assert math.prod(target[FINAL_W].shape) == 133 * 48

    w32 = ck.parse_checkpoint({"state_dict": shapes_from_tsv(reference_dir / "hrnet_w32_coco17.keys.tsv")})
    refused = ck.plan_load(target, w32, "load_from", load_builtin("coco_wholebody"))
    assert refused.refusal and "backbone.stage1.0.conv1.weight" not in refused.refusal
    assert len(refused.mismatched) > 1000 and "checkpoint (32, 256, 3, 3) vs model (48, 256, 3, 3)" in refused.refusal


def test_meta_and_model_disagree_on_keypoints(tmp_path: Path) -> None:
    path = save_obj(tmp_path / "c.pth", tiny_model(17).state_dict())
    with pytest.raises(PoseCliError, match="the model has 23 keypoint outputs but dataset 'coco' has 17"):
        ck.load_into_model(tiny_model(23), path, meta=load_builtin("coco"))


def test_env_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSECLI_DOWNLOAD_TIMEOUT", "-1")
    with pytest.raises(PoseCliError, match="must be positive"):
        ck.download_timeout()
    monkeypatch.delenv("POSECLI_DOWNLOAD_TIMEOUT")
    monkeypatch.delenv("POSECLI_MAX_DOWNLOAD_BYTES", raising=False)
    assert (ck.download_timeout(), ck.max_download_bytes()) == (60.0, 2 * 1024**3)
    monkeypatch.delenv("POSECLI_CACHE", raising=False)
    assert ck.default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "posecli" / "checkpoints"


# ------------------------------------------------------------------------------------------------ HRNetV2
V2 = {  # the demo preset's tiny HRNet as HRNetV2: every stage4 branch, concatenated by the head, one conv layer
    "model.backbone.extra.stage4.multiscale_output": True,
    "model.backbone.extra.upsample": {"mode": "bilinear", "align_corners": False},
    "model.head.in_channels": [16, 32, 64, 128],
    "model.head.in_index": [0, 1, 2, 3],
    "model.head.input_transform": "resize_concat",
    "model.head.num_conv_layers": 1,
}
V2_W, V2_B = "keypoint_head.final_layer.3.weight", "keypoint_head.final_layer.3.bias"


def test_hrnetv2_head_transplant_with_list_in_channels(tmp_path: Path) -> None:
    """COCO-17 HRNetV2 into a 23-keypoint HRNetV2: the 240-channel conv layer loads, the final conv gets rows."""
    source = tiny_model(17, seed=1, **V2).state_dict()
    assert ck.backbone_name(source) == "HRNetV2-W16"
    path = save_obj(tmp_path / "v2.pth", in_convention(source, "mmpose0"))
    model = tiny_model(23, seed=2, **V2)
    fresh = model.state_dict()[V2_W].clone()
    report = ck.load_into_model(model, path, "load_from", meta=load_builtin("body_foot"))
    assert report.refusal is None
    assert report.transplanted == [V2_W, V2_B] and report.reinitialized == [] and report.fresh_rows == 6
    assert report.missing == report.unexpected == report.mismatched == []
    assert "keypoint_head.final_layer.0.weight" in report.loaded and "keypoint_head.final_layer.1.running_var" in (
        report.loaded
    )
    assert len(report.loaded) == len(source) - 2 and report.row_map == [(i, i) for i in range(17)]
    state = model.state_dict()
    assert tuple(state["keypoint_head.final_layer.0.weight"].shape) == (240, 240, 1, 1)
    assert all(torch.equal(state[k], source[k]) for k in report.loaded)
    assert torch.equal(state[V2_W][:17], source[V2_W]) and torch.equal(state[V2_W][17:], fresh[17:])


def test_hrnet_and_hrnetv2_checkpoints_are_told_apart(tmp_path: Path, reference_dir: Path) -> None:
    v1_path = save_obj(tmp_path / "v1.pth", {"state_dict": tiny_model(17, seed=1).state_dict()})
    v2_path = save_obj(tmp_path / "v2.pth", {"state_dict": tiny_model(17, seed=1, **V2).state_dict()})
    with pytest.raises(PoseCliError) as err:
        ck.load_into_model(tiny_model(17, **V2), v1_path, meta=load_builtin("coco"))
    assert (
        "load_from refused: checkpoint is HRNet-W16 (its head reads the highest-resolution branch) but the model is "
        "HRNetV2-W16 (its head reads every stage4 branch)"
    ) in str(err.value)
    with pytest.raises(PoseCliError, match="checkpoint is HRNetV2-W16 .* the model is HRNet-W16"):
        ck.load_into_model(tiny_model(17), v2_path, meta=load_builtin("coco"))
    # backbone only (pretrained): the same stage4 weights load, the extra fuse layers of the last module stay fresh
    report = ck.load_into_model(tiny_model(17, **V2), v1_path, mode="pretrained", meta=load_builtin("coco"))
    assert report.refusal is None and report.mismatched == report.unexpected == []
    assert report.missing and all(k.startswith("backbone.stage4.0.fuse_layers.") for k in report.missing)

    # MMPose's own HRNetV2-W18 hand model into the shipped preset: every tensor loads
    source = ck.parse_checkpoint(
        {"state_dict": shapes_from_tsv(reference_dir / "hrnetv2_w18_onehand10k.keys.tsv"), "meta": {}}
    )
    assert ck.backbone_name(source.state_dict) == "HRNetV2-W18" and source.num_keypoints == 21
    assert ck.count_params(source.state_dict) == 9_641_661  # hrnetv2_w18_onehand10k.manifest.json
    with torch.device("meta"):
        target = build_model(load_settings("hrnetv2_w18_onehand10k_256x256_dark").model).state_dict()
    plan = ck.plan_load(target, source, "load_from", load_builtin("onehand10k"))
    assert plan.refusal is None and len(plan.loaded) == 1839 and plan.transplanted == plan.missing == []
