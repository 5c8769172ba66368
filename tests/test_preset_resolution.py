"""Fine-tuning without a preset: the architecture from a checkpoint's weights (or a posecli checkpoint's recorded
settings), the keypoint set from --dataset / --keypoints / the annotations, the matching shipped preset.

Checkpoints are fabricated from posecli's own models in MMPose 0.x / 1.x / official HRNet key layouts. Every tensor
has its real shape but a one-element storage (``expand``), so a W48 file is 0.5 MB instead of 250 MB: the resolver
reads names and shapes only, exactly as it does for a real file.
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from posecli.cli import app
from posecli.errors import PoseCliError
from posecli.models.topdown import build_model
from posecli.preset_resolution import (
    keypoint_dataset_overrides,
    matching_presets,
    name_hints,
    resolve_settings,
)
from posecli.settings import load_preset_dict, load_settings, preset_dir, settings_to_yaml, validate_settings

torch.set_num_threads(1)
runner = CliRunner()

W48 = [48, 96, 192, 384]
W48_ZOO = "hrnet_w48_coco_384x288_dark-741844ba_20200812.pth"  # the name MMPose's model zoo gives the W48 file


def fake_state(settings: Any, layout: str = "mmpose0", head: bool = True) -> dict[str, torch.Tensor]:
    """The state_dict of the model ``settings`` builds, every tensor zero-strided, in a checkpoint key layout."""
    with torch.device("meta"):
        shapes = build_model(settings.model).state_dict()
    state = {}
    for key, value in shapes.items():
        if not head and key.startswith("keypoint_head."):
            continue
        if layout == "mmpose1":
            key = key.replace("keypoint_head.", "head.", 1)
        elif layout == "hrnet-official":
            key = key.removeprefix("backbone.").replace("keypoint_head.", "", 1)
        state[key] = torch.zeros((), dtype=value.dtype).expand(value.shape)
    return state


def write_checkpoint(path: Path, preset: str | dict[str, Any], layout: str = "mmpose0", head: bool = True) -> Path:
    """A checkpoint with the tensors of ``preset``'s model (a shipped name or a settings dict)."""
    settings = load_settings(preset) if isinstance(preset, str) else validate_settings(preset, "test")
    state = fake_state(settings, layout, head)
    obj = state if layout == "hrnet-official" else {"state_dict": state, "meta": {"mmcv_version": "1.7.0"}}
    torch.save(obj, path)
    return path


def preset_variant(name: str, change: Any) -> dict[str, Any]:
    data = copy.deepcopy(load_preset_dict(name)[0])
    change(data)
    return data


def finetune(*args: Any) -> Any:
    return runner.invoke(app, ["finetune", *map(str, args)])


def settings_of(name: str, load_from: str) -> dict[str, Any]:
    """A shipped preset's settings as JSON, fine-tuning from ``load_from``."""
    return load_settings(name, {"train.load_from": load_from, "train.pretrained": None}).model_dump(mode="json")


# ------------------------------------------------------------------------------------------------ file names
@pytest.mark.parametrize(
    ("file_name", "image_wh", "dark"),
    [
        (W48_ZOO, (288, 384), True),
        ("hrnet_w32_coco_256x192-c78dce93_20200708.pth", (192, 256), False),
        ("hrnetv2_w18_onehand10k_256x256_dark-a2f80c64_20210330.pth", (256, 256), True),
        ("td-hm_hrnet-w48_dark-8xb32-210e_coco-384x288-39c3c381_20220916.pth", (288, 384), True),  # MMPose 1.x
        ("pose_hrnet_w32_256x192.pth", (192, 256), False),  # official HRNet repository
        ("hrnet_w32-36af842e.pth", None, False),
        ("darkness_model.pth", None, False),
    ],
)
def test_name_hints(file_name: str, image_wh: tuple[int, int] | None, dark: bool) -> None:
    hints = name_hints(file_name)
    assert hints.image_wh == image_wh and hints.dark is dark


# ------------------------------------------------------------------------------------------ architecture
@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("hrnet_w48_coco_384x288_dark", ["hrnet_w48_coco_384x288_dark", "hrnet_w48_coco_wholebody_384x288_dark_plus"]),
        ("hrnet_w32_coco_256x192", ["hrnet_w32_coco_256x192", "hrnet_w32_coco_wholebody_256x192_dark"]),
        ("hrnetv2_w18_onehand10k_256x256_dark", ["hrnetv2_w18_onehand10k_256x256_dark"]),
        ("demo", ["demo"]),
    ],
)
def test_weights_pick_the_shipped_architecture(preset: str, expected: list[str]) -> None:
    assert matching_presets(fake_state(load_settings(preset))) == expected


def test_hrnet_w18_without_multiscale_output_is_not_hrnetv2() -> None:
    def plain_w18(data: dict[str, Any]) -> None:  # the W18 widths, but stage4 outputs one branch (HRNet, not V2)
        data["model"]["backbone"]["extra"]["stage4"]["multiscale_output"] = None
        data["model"]["backbone"]["extra"].pop("upsample")
        data["model"]["head"].update(in_channels=18, in_index=0, input_transform=None, num_conv_layers=0)
        data["model"]["head"].pop("num_conv_kernels")

    state = fake_state(validate_settings(preset_variant("hrnetv2_w18_onehand10k_256x256_dark", plain_w18), "t"))
    assert matching_presets(state) == []


def test_backbone_only_file_matches_by_backbone() -> None:
    state = fake_state(load_settings("hrnet_w32_coco_256x192"), head=False)
    assert matching_presets(state, "pretrained") == ["hrnet_w32_coco_256x192", "hrnet_w32_coco_wholebody_256x192_dark"]


# -------------------------------------------------------------------------------------------- resolution
def test_w48_coco_checkpoint_with_133_keypoints_is_the_wholebody_preset(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / W48_ZOO, "hrnet_w48_coco_384x288_dark")
    res = resolve_settings(str(ckpt), keypoints=133)
    assert res.preset == "hrnet_w48_coco_wholebody_384x288_dark_plus"
    assert res.settings.model_dump(mode="json") == settings_of(res.preset, str(ckpt))
    text = "\n".join(res.reasons)
    assert "HRNet-W48" in text and "coco_wholebody from --keypoints 133" in text and "288x384" in text
    assert "matches the architecture, dataset and input size" in text


@pytest.mark.parametrize("layout", ["mmpose1", "hrnet-official"])
def test_other_layouts_resolve_the_same(tmp_path: Path, layout: str) -> None:
    ckpt = write_checkpoint(tmp_path / "pose_hrnet_w32_256x192.pth", "hrnet_w32_coco_256x192", layout)
    res = resolve_settings(str(ckpt), keypoints=17)
    assert res.preset == "hrnet_w32_coco_256x192"
    assert res.settings.model_dump(mode="json") == settings_of(res.preset, str(ckpt))


def test_no_exact_preset_substitutes_size_and_says_so(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "hrnet_w32_coco_384x288-0123abcd_20200708.pth", "hrnet_w32_coco_256x192")
    res = resolve_settings(str(ckpt), keypoints=133)
    s = res.settings
    assert res.preset == "hrnet_w32_coco_wholebody_256x192_dark"
    assert s.dataset == "coco_wholebody" and s.model.head.out_channels == 133
    assert list(s.data.image_size) == [288, 384] and list(s.data.heatmap_size) == [72, 96]
    assert s.data.sigma == 3 and s.test.modulate_kernel == 17  # MMPose's values at 384x288
    assert s.model.backbone.extra.stage4.num_channels == [32, 64, 128, 256]
    assert any("closest hrnet_w32_coco_wholebody_256x192_dark" in r and "substituted" in r for r in res.reasons)


def test_dark_in_the_name_turns_dark_on(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "hrnet_w32_coco_256x192_dark-0123abcd_20200708.pth", "hrnet_w32_coco_256x192")
    res = resolve_settings(str(ckpt), keypoints=17)
    assert res.preset == "hrnet_w32_coco_256x192"
    assert res.settings.data.unbiased_encoding and res.settings.test.post_process == "unbiased"
    plain = resolve_settings(str(write_checkpoint(tmp_path / "w32.pth", "hrnet_w32_coco_256x192")), keypoints=17)
    assert not plain.settings.data.unbiased_encoding and plain.settings.test.post_process == "default"


def test_a_name_without_size_keeps_the_preset_defaults(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "my_model.pth", "hrnet_w48_coco_384x288_dark")
    res = resolve_settings(str(ckpt), keypoints=17)
    assert res.preset == "hrnet_w48_coco_384x288_dark"
    assert list(res.settings.data.image_size) == [288, 384]
    assert any("the preset's" in r for r in res.reasons)


def test_posecli_checkpoint_carries_its_settings() -> None:
    res = resolve_settings("builtin://demo_coco17.pth", keypoints=17)
    s, demo = res.settings, load_settings("demo")
    assert res.preset is None and s.dataset == "coco" and s.model.head.out_channels == 17
    assert s.model.backbone == demo.model.backbone and list(s.data.image_size) == [96, 128]
    assert s.data.synthetic is not None and s.data.synthetic.keypoints == "coco"
    body_foot = resolve_settings("builtin://demo_coco17.pth", keypoints=23).settings
    assert body_foot.dataset == "body_foot" and body_foot.data.synthetic.keypoints == "body_foot"


def test_pretrained_backbone_file(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "hrnet_w32-36af842e.pth", "hrnet_w32_coco_256x192", head=False)
    res = resolve_settings(str(ckpt), mode="pretrained", keypoints=133)
    assert res.preset == "hrnet_w32_coco_wholebody_256x192_dark"
    assert res.settings.train.pretrained == str(ckpt) and res.settings.train.load_from is None


def test_unknown_architecture_is_refused(tmp_path: Path) -> None:
    def w40(data: dict[str, Any]) -> None:
        extra = data["model"]["backbone"]["extra"]
        for n, stage in enumerate(("stage2", "stage3", "stage4"), start=2):
            extra[stage]["num_channels"] = [40, 80, 160, 320][:n]
        data["model"]["head"]["in_channels"] = 40

    ckpt = write_checkpoint(tmp_path / "w40.pth", preset_variant("hrnet_w32_coco_256x192", w40))
    with pytest.raises(
        PoseCliError, match=r"HRNet-W40 \[40, 80, 160, 320\]\) matches no shipped preset \(.*HRNet-W48"
    ) as err:
        resolve_settings(str(ckpt), keypoints=17)
    assert str(err.value.path) == str(ckpt)


# ----------------------------------------------------------------------------------------------- datasets
def test_dataset_from_annotation_categories(tmp_path: Path) -> None:
    ann = tmp_path / "ann.json"
    names = ["nose", "left_ear", "right_ear", "tail_base", "tail_end"]
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "keypoints": names}]}))
    ckpt = write_checkpoint(tmp_path / "w32.pth", "hrnet_w32_coco_256x192")
    res = resolve_settings(str(ckpt), train_ann=str(ann))
    assert res.settings.dataset is None and res.settings.model.head.out_channels == 5
    assert res.settings.data.train_ann == str(ann)
    with pytest.raises(PoseCliError, match="--keypoints 7 but the categories .* name 5 keypoints"):
        resolve_settings(str(ckpt), keypoints=7, train_ann=str(ann))


def test_dataset_meta_file(tmp_path: Path) -> None:
    meta = tmp_path / "paw.yaml"
    meta.write_text(yaml.safe_dump({"name": "paw", "keypoint_names": ["a", "b", "c"]}))
    ckpt = write_checkpoint(tmp_path / "w48.pth", "hrnet_w48_coco_384x288_dark")
    res = resolve_settings(str(ckpt), dataset=str(meta))
    assert res.settings.dataset == str(meta) and res.settings.model.head.out_channels == 3
    assert res.preset == "hrnet_w48_coco_384x288_dark"
    assert any("closest hrnet_w48_coco_384x288_dark" in r for r in res.reasons)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"keypoints": 133, "dataset": "coco"}, "--dataset coco has 17 keypoints: drop --keypoints, or add --dataset "
         "coco_wholebody"),
        ({"keypoints": 14}, "--keypoints 14 matches no built-in dataset"),
        ({}, "pass --keypoints N"),
        ({"dataset": "nope.yaml"}, "neither a built-in dataset"),
    ],
)  # fmt: skip
def test_keypoint_errors_name_the_way_out(tmp_path: Path, kwargs: dict[str, Any], needle: str) -> None:
    ckpt = write_checkpoint(tmp_path / "w32.pth", "hrnet_w32_coco_256x192")
    with pytest.raises(PoseCliError, match=needle.replace("(", r"\(")):
        resolve_settings(str(ckpt), **kwargs)


def test_preset_with_keypoints_needs_the_dataset_flag() -> None:
    with pytest.raises(
        PoseCliError, match=r"demo.yaml: the preset is for dataset 'body_foot' \(23 keypoints\).* --dataset coco"
    ):
        keypoint_dataset_overrides(preset_dir() / "demo.yaml", "body_foot", 17, None)
    assert keypoint_dataset_overrides("demo.yaml", "body_foot", 17, "coco") == {
        "dataset": "coco",
        "model.head.out_channels": 17,
    }
    assert keypoint_dataset_overrides("p", None, 5, None) == {"model.head.out_channels": 5}
    assert keypoint_dataset_overrides("p", "coco", 17, None) == {"model.head.out_channels": 17}


# ------------------------------------------------------------------------------------------------- URLs
@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_is_downloaded_to_the_cache_and_hash_checked(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    served, base = http_dir
    tmp = write_checkpoint(tmp_path / "x.pth", "hrnet_w48_coco_384x288_dark")
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    name = f"hrnet_w48_coco_384x288_dark-{sha}_20200812.pth"
    tmp.rename(served / name)
    cache = tmp_path / "cache"
    res = resolve_settings(f"{base}/{name}", keypoints=133, cache_dir=cache, progress=None)
    assert res.preset == "hrnet_w48_coco_wholebody_384x288_dark_plus" and res.checkpoint == cache / name
    assert res.settings.train.load_from == f"{base}/{name}"
    (served / name).rename(served / "hrnet_w48_coco_384x288_dark-00000000_20200812.pth")
    with pytest.raises(PoseCliError, match="sha256 mismatch"):
        resolve_settings(f"{base}/hrnet_w48_coco_384x288_dark-00000000_20200812.pth", keypoints=133, cache_dir=cache)


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_keypoints_133_with_w48_coco_checkpoint(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "hrnet_w48_coco_384x288_dark-deadbeef_2020.pth", "hrnet_w48_coco_384x288_dark")
    result = finetune("--keypoints", 133, "--load-from", ckpt, "--print-config")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)  # stdout is the YAML alone: `> my.yaml` keeps it
    assert printed["model"]["backbone"]["extra"]["stage4"]["num_channels"] == W48
    assert printed["model"]["head"]["out_channels"] == 133
    assert printed["dataset"] == "coco_wholebody" and printed["data"]["image_size"] == [288, 384]
    assert printed == settings_of("hrnet_w48_coco_wholebody_384x288_dark_plus", str(ckpt))
    assert "resolved preset: hrnet_w48_coco_wholebody_384x288_dark_plus" in result.stderr
    assert "--print-config > my.yaml" in result.stderr
    # the kept file gives the same settings back as a preset
    kept = tmp_path / "my.yaml"
    kept.write_text(result.stdout)
    again = finetune("--preset", kept, "--print-config")
    assert again.exit_code == 0 and yaml.safe_load(again.stdout) == printed


def test_cli_builtin_demo_checkpoint_with_17_keypoints() -> None:
    result = finetune("--keypoints", 17, "--load-from", "builtin://demo_coco17.pth", "--print-config")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert printed["dataset"] == "coco" and printed["model"]["head"]["out_channels"] == 17
    assert printed["model"]["backbone"]["extra"]["stage4"]["num_channels"] == [16, 32, 64, 128]
    assert "settings recorded in demo_coco17.pth" in result.stderr


def test_cli_demo_preset_keypoints_17_is_solved_by_dataset_coco() -> None:
    refused = finetune("--preset", "demo", "--keypoints", 17, "--print-config")
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "--dataset coco" in lines[0], refused.stderr
    solved = finetune("--preset", "demo", "--keypoints", 17, "--dataset", "coco", "--print-config")
    assert solved.exit_code == 0, solved.output
    printed = yaml.safe_load(solved.stdout)
    assert printed["dataset"] == "coco" and printed["model"]["head"]["out_channels"] == 17
    assert printed["data"]["synthetic"]["keypoints"] == "coco"
    assert printed == yaml.safe_load(
        settings_to_yaml(
            load_settings(
                "demo", {"dataset": "coco", "model.head.out_channels": 17, "data.synthetic.keypoints": "coco"}
            )
        )
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--print-config"], "no --preset: give --load-from CKPT"),
        (["--keypoints", "14", "--load-from", "{ckpt}", "--print-config"], "--dataset META_FILE"),
        (["--keypoints", "17", "--dataset", "coco_wholebody", "--load-from", "{ckpt}"], "add --dataset coco"),
        (["--load-from", "{ckpt}", "--pretrained", "{ckpt}", "--print-config"], "Choose one"),
        (["--load-from", "{ckpt}", "--print-config"], "which keypoints?"),
        (["--keypoints", "17", "--load-from", "{missing}"], "checkpoint not found"),
    ],
)
def test_cli_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    ckpt = write_checkpoint(tmp_path / "w32.pth", "hrnet_w32_coco_256x192")
    args = [a.format(ckpt=ckpt, missing=tmp_path / "missing.pth") for a in args]
    result = finetune(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_cli_finetune_without_preset_trains(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = runner.invoke(
        app, ["convert-dataset", "--from", "synthetic", "--num-images", "4", "--image-size", "128", "--out", data]
    )
    assert made.exit_code == 0, made.output
    work = tmp_path / "work"
    result = finetune(
        "--keypoints", 17, "--load-from", "builtin://demo_coco17.pth", "--train-ann", data / "annotations.json",
        "--train-img-dir", data / "images", "--epochs", 1, "--batch-size", 4, "--work-dir", work, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((work / "config.yaml").read_text())
    assert config["dataset"] == "coco" and config["train"]["load_from"] == "builtin://demo_coco17.pth"
    assert config["data"]["train_ann"] == str(data / "annotations.json")
    assert "236 loaded" in " ".join(result.output.split())  # every tensor of the checkpoint, no head swap
    assert (work / "last.pth").is_file()


# ------------------------------------------------------------------------------------ predict --dataset
def test_predict_dataset_overrides_the_keypoint_set(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    image = tmp_path / "person.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(image), rng.integers(0, 255, (128, 96, 3), dtype=np.uint8))
    no_pairs = tmp_path / "coco_no_flip_pairs.yaml"  # COCO's names without flip pairs: the flip test changes
    coco = json.loads(runner.invoke(app, ["presets", "show", "hrnet_w32_coco_256x192", "--json"]).stdout)
    no_pairs.write_text(yaml.safe_dump({"name": "plain", "keypoint_names": coco["dataset_meta"]["keypoint_names"]}))

    def run(*extra: Any) -> Any:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        args = [image, "--checkpoint", "builtin://demo_coco17.pth", "--whole-image", "--device", "cpu", "-o", out]
        result = runner.invoke(app, ["predict", *map(str, args), *map(str, extra)])
        return result, out / "predictions.json"

    (default, default_file), (same, same_file), (plain, plain_file) = (
        run(),
        run("--dataset", "coco"),
        run("--dataset", no_pairs),
    )
    assert default.exit_code == same.exit_code == plain.exit_code == 0, default.output + plain.output
    default_kpts = json.loads(default_file.read_text())[0]["keypoints"]
    assert json.loads(same_file.read_text())[0]["keypoints"] == default_kpts  # the checkpoint's own set is coco
    assert json.loads(plain_file.read_text())[0]["keypoints"] != default_kpts
    refused, _ = run("--dataset", "body_foot")
    assert refused.exit_code == 2 and "23 keypoints" in refused.stderr and "17" in refused.stderr


def test_same_widths_other_depths_says_what_differs() -> None:
    """MMPose's e2e checkpoint is a W16 with other stage depths than the demo's W16: the refusal says so."""
    from conftest import E2E

    ckpt = E2E / "small_hrnet_mmpose0x_published-8cbcc10a.pth"
    result = runner.invoke(app, ["finetune", "--keypoints", "17", "--load-from", str(ckpt), "--print-config"])
    assert result.exit_code == 2, result.output
    assert "HRNet-W16 [16, 32, 64, 128], with other numbers of modules or blocks per stage" in result.output
    assert "Traceback" not in result.output
