"""Presets validate, flags override, and bad settings fail with one clear line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from posecli.cli import app
from posecli.errors import PoseCliError
from posecli.settings import list_presets, load_preset_dict, load_settings, settings_to_yaml

runner = CliRunner()
SHIPPED = {
    "demo",
    "hrnet_w48_coco_384x288_dark",
    "hrnet_w48_coco_wholebody_384x288_dark_plus",
    "hrnet_w32_coco_256x192",
    "hrnet_w32_coco_wholebody_256x192_dark",
    "hrnetv2_w18_onehand10k_256x256_dark",
}


def test_shipped_presets_are_listed() -> None:
    assert set(list_presets()) >= SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_preset_validates_and_starts_with_its_command(name: str) -> None:
    settings = load_settings(name)
    _, path = load_preset_dict(name)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# posecli ") and f"--preset {name}" in first
    # the YAML dump reloads to the same settings
    assert load_settings(name).model_dump() == settings.model_dump()


def test_mmpose_recipe_values() -> None:
    s = load_settings("hrnet_w48_coco_wholebody_384x288_dark_plus")
    assert s.model.head.out_channels == 133
    assert s.model.backbone.extra.stage4.num_channels == [48, 96, 192, 384]
    assert list(s.data.image_size) == [288, 384] and list(s.data.heatmap_size) == [72, 96]
    assert s.data.sigma == 3 and s.data.unbiased_encoding
    assert s.train.optimizer.type == "Adam" and s.train.optimizer.lr == 5e-4
    assert s.train.lr_config.step == [170, 200] and s.train.lr_config.warmup_iters == 500
    assert s.train.lr_config.warmup_ratio == 0.001 and s.train.total_epochs == 210
    assert s.train.load_from.endswith("hrnet_w48_coco_384x288_dark-741844ba_20200812.pth")
    assert s.test.post_process == "unbiased" and s.test.modulate_kernel == 17 and s.test.shift_heatmap
    w32 = load_settings("hrnet_w32_coco_256x192")
    assert w32.data.sigma == 2 and not w32.data.unbiased_encoding and w32.test.post_process == "default"


def test_hrnetv2_onehand10k_recipe_values() -> None:
    """The values of MMPose's hrnetv2_w18_onehand10k_256x256_dark.py, as --print-config shows them."""
    result = runner.invoke(
        app, ["finetune", "--preset", "hrnetv2_w18_onehand10k_256x256_dark", "--print-config"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    s = yaml.safe_load(result.stdout)
    assert s["dataset"] == "onehand10k"
    extra, head = s["model"]["backbone"]["extra"], s["model"]["head"]
    assert extra["stage4"]["num_channels"] == [18, 36, 72, 144] and extra["stage4"]["multiscale_output"] is True
    assert extra["stage3"]["num_modules"] == 4 and extra["stage4"]["num_modules"] == 3
    assert extra["upsample"] == {"mode": "bilinear", "align_corners": False}
    assert head["in_channels"] == [18, 36, 72, 144] and head["in_index"] == [0, 1, 2, 3]
    assert head["input_transform"] == "resize_concat" and head["align_corners"] is False
    assert head["num_conv_layers"] == 1 and head["num_conv_kernels"] == [1] and head["final_conv_kernel"] == 1
    assert head["out_channels"] == 21 and head["num_deconv_layers"] == 0
    data, train, test = s["data"], s["train"], s["test"]
    assert data["image_size"] == [256, 256] and data["heatmap_size"] == [64, 64]
    assert data["sigma"] == 2 and data["unbiased_encoding"] is True
    assert (data["rot_factor"], data["scale_factor"], data["flip_prob"]) == (90, 0.3, 0.5)
    assert data["prob_half_body"] == 0 and data["shift_prob"] == 0  # no half-body, no centre shift in the config
    assert train["optimizer"]["type"] == "Adam" and train["optimizer"]["lr"] == 5e-4
    assert train["lr_config"]["step"] == [170, 200] and train["lr_config"]["warmup_iters"] == 500
    assert train["lr_config"]["warmup_ratio"] == 0.001 and train["total_epochs"] == 210
    assert train["batch_size"] == 64 and train["eval_interval"] == 10 and train["save_best"] == "AUC"
    assert train["pretrained"].endswith("/hrnetv2_w18-00eb2006.pth")  # open-mmlab://msra/hrnetv2_w18
    assert test["flip_test"] and test["post_process"] == "unbiased" and test["shift_heatmap"]
    assert test["modulate_kernel"] == 11 and test["batch_size"] == 32


def _write_v2_preset(tmp_path: Path, mutate) -> Path:
    data, _ = load_preset_dict("hrnetv2_w18_onehand10k_256x256_dark")
    mutate(data)
    path = tmp_path / "v2.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["model"]["head"].update(in_channels=[18, 36, 72, 140]), "sum 266"),
        (lambda d: d["model"]["backbone"]["extra"]["stage4"].update(multiscale_output=False), "one feature map"),
        (lambda d: d["model"]["head"].update(input_transform=None), "lists need input_transform"),
        (lambda d: d["model"]["head"].update(input_transform="multiple_select"), "multiple_select"),
        (lambda d: d["model"]["head"].update(in_index=[0, 1, 2]), "same length"),
        (lambda d: d["model"]["backbone"]["extra"]["stage3"].update(multiscale_output=False), "only stage4"),
        (lambda d: d["model"]["backbone"]["extra"]["upsample"].update(mode="nearest"), "bilinear upsampling only"),
        (lambda d: d["model"]["head"].update(num_conv_kernels=[2]), "odd size"),
        (lambda d: d["model"]["head"].update(in_index=[1, 2, 3, 0], in_channels=[36, 72, 144, 18]), "heatmap_size"),
    ],
    ids=["sum", "single-output", "no-transform", "multiple-select", "index-length", "stage3", "nearest", "even", "hm"],
)
def test_bad_hrnetv2_preset_exits_2_with_one_line(tmp_path: Path, mutate, needle: str) -> None:
    path = _write_v2_preset(tmp_path, mutate)
    result = runner.invoke(app, ["finetune", "--preset", str(path), "--print-config"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and needle in lines[0]
    assert "Traceback" not in result.output


def test_flags_override_preset() -> None:
    s = load_settings("demo", {"train.total_epochs": 3, "train.optimizer.lr": 0.01})
    assert s.train.total_epochs == 3 and s.train.optimizer.lr == 0.01


def _write_preset(tmp_path: Path, mutate) -> Path:
    data, _ = load_preset_dict("demo")
    mutate(data)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_preset_given_as_path(tmp_path: Path) -> None:
    path = _write_preset(tmp_path, lambda d: d["train"].update(total_epochs=7))
    assert load_settings(str(path)).train.total_epochs == 7


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["train"].update(total_epoch=3), "train.total_epoch"),
        (lambda d: d["test"].update(modulate_kernel=16), "modulate_kernel"),
        (lambda d: d["model"]["head"].update(out_channels=17), "out_channels"),
        (lambda d: d["data"].update(heatmap_size=[30, 40]), "heatmap_size"),
        (lambda d: d["train"].update(batch_size="many"), "batch_size"),
        (lambda d: d["model"]["head"].update(in_channels=32), "in_channels"),
    ],
    ids=["unknown-key", "even-kernel", "keypoint-mismatch", "heatmap-size", "wrong-type", "head-width"],
)
def test_bad_preset_exits_2_with_one_line(tmp_path: Path, mutate, needle: str) -> None:
    path = _write_preset(tmp_path, mutate)
    result = runner.invoke(app, ["finetune", "--preset", str(path), "--print-config"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and needle in lines[0]
    assert "Traceback" not in result.output


def test_keypoint_flag_mismatch_exits_2() -> None:
    result = runner.invoke(app, ["finetune", "--preset", "demo", "--keypoints", "17", "--print-config"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "23 keypoints" in lines[0] and "--dataset coco" in lines[0], result.stderr


def test_unknown_preset_exits_2() -> None:
    result = runner.invoke(app, ["finetune", "--preset", "no_such_preset"])
    assert result.exit_code == 2 and "unknown preset 'no_such_preset'" in result.stderr


def test_both_sources_refused() -> None:
    with pytest.raises(PoseCliError, match="Choose one"):
        load_settings("demo", {"train.pretrained": "a.pth"})


def test_load_from_flag_replaces_preset_pretrained() -> None:
    result = runner.invoke(
        app, ["finetune", "--preset", "hrnet_w32_coco_256x192", "--load-from", "x.pth", "--print-config"]
    )
    assert result.exit_code == 0, result.output
    train = yaml.safe_load(result.stdout)["train"]
    assert train["load_from"] == "x.pth" and train["pretrained"] is None


def test_print_config_is_resolved_yaml() -> None:
    result = runner.invoke(app, ["finetune", "--preset", "demo", "--epochs", "3", "--print-config"])
    assert result.exit_code == 0
    printed = yaml.safe_load(result.stdout)
    assert printed["train"]["total_epochs"] == 3
    assert printed == yaml.safe_load(settings_to_yaml(load_settings("demo", {"train.total_epochs": 3})))


def test_presets_show_reports_meta() -> None:
    result = runner.invoke(app, ["presets", "show", "hrnet_w48_coco_wholebody_384x288_dark_plus"])
    assert result.exit_code == 0
    assert "133 keypoints" in result.stdout and "lefthand[91:112]" in result.stdout


def test_help_does_not_import_torch() -> None:
    code = "import sys, posecli.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    out = subprocess.run([sys.executable, "-m", "posecli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("convert-dataset", "inspect-checkpoint", "finetune", "evaluate", "presets"):
        assert command in out.stdout


def test_several_preset_problems_make_one_line(tmp_path: Path) -> None:
    """Missing sections and an unknown key together: one `error:` line naming the file and every problem."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("foo: 1\n")
    result = runner.invoke(app, ["presets", "show", str(bad)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {bad}: ")
    for problem in ("model: Field required", "data: Field required", "foo = 1: unknown key"):
        assert problem in lines[0]
