"""The CUDA training path: bf16 autocast + channels_last, fp16 with a grad scaler, torch.compile, and the
out-of-memory message. Run on a GPU machine with `pytest -m gpu` (benchmarks/gpu_check.sh does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_train import finetune, records, tiny_preset  # tests/ is on sys.path under pytest

from posecli.errors import PoseCliError

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _preset(tmp_path: Path, **train: Any) -> Path:
    preset = tiny_preset()
    preset["train"].update({"total_epochs": 1, **train})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def _cuda(*args: Any) -> Any:
    from typer.testing import CliRunner

    from posecli.cli import app

    return CliRunner().invoke(app, ["finetune", "--device", "cuda", *map(str, args)])


def test_bf16_autocast_and_channels_last_by_default(tmp_path: Path) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    result = _cuda("--preset", _preset(tmp_path), "--work-dir", tmp_path / "w")
    assert result.exit_code == 0, result.output
    assert "autocast bf16, channels_last" in result.output
    last = torch.load(tmp_path / "w" / "last.pth", map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float32 for k, v in last["state_dict"].items() if v.is_floating_point())
    train = [r for r in records(tmp_path / "w") if r["type"] == "train"]
    assert train and all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    assert train[-1]["memory_mb"] > 0
    assert last["scaler"] == {} or not last["scaler"].get("_enabled", False)  # bf16 needs no scaler


def test_fp16_trains_with_a_grad_scaler(tmp_path: Path) -> None:
    result = _cuda("--preset", _preset(tmp_path), "--work-dir", tmp_path / "w", "--amp", "fp16")
    assert result.exit_code == 0, result.output
    assert "autocast fp16 + grad scaler" in result.output
    last = torch.load(tmp_path / "w" / "last.pth", map_location="cpu", weights_only=True)
    assert last["scaler"]["scale"] > 0  # the scaler state is saved for resuming
    resumed = _cuda("--preset", _preset(tmp_path), "--work-dir", tmp_path / "w", "--amp", "fp16", "--resume",
                    "--epochs", "2")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output


def test_compile(tmp_path: Path) -> None:
    result = _cuda("--preset", _preset(tmp_path), "--work-dir", tmp_path / "w", "--compile")
    assert result.exit_code == 0, result.output
    assert "torch.compile" in result.output
    last = torch.load(tmp_path / "w" / "last.pth", map_location="cpu", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in last["state_dict"])


def test_out_of_memory_names_the_batch_size_and_a_size_that_fits(tmp_path: Path, monkeypatch: Any) -> None:
    from posecli.engine.train import finetune as run
    from posecli.settings import load_settings

    preset = tiny_preset()
    preset["data"].update({"image_size": [192, 256], "heatmap_size": [48, 64]})
    preset["train"].update({"batch_size": 512, "total_epochs": 1})
    preset["data"]["synthetic"]["num_train"] = 400  # enough people for a batch of 512? no: the first batch is all
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(preset))
    settings = load_settings(str(path))
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 1.5 * 2**30 / total))  # a 1.5 GiB GPU
    try:
        with pytest.raises(PoseCliError) as err:
            run(settings, tmp_path / "w", device="cuda")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    message = str(err.value)
    assert "CUDA out of memory at batch size" in message and "pass --batch-size" in message
    suggested = int(message.split("pass --batch-size ")[1].split()[0])
    assert 1 <= suggested < 512


def test_cpu_run_is_unaffected_by_cuda_flags(tmp_path: Path) -> None:
    # channels_last/compile defaults only act on CUDA: the CPU run of the same preset still works
    result = finetune("--preset", _preset(tmp_path), "--work-dir", tmp_path / "cpu")
    assert result.exit_code == 0, result.output
    assert "channels_last" not in result.output
