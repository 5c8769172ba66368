"""The CPU/device split of training data: uint8 crops from the workers, normalisation and targets per batch on the
device (here the CPU, CI's device), equal to the all-on-CPU items; the same loss curve and weights as the old
pipeline; a loss read once per log interval; persistent workers that follow the epoch."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from test_train import finetune, tiny_preset, write_preset

from posecli.datasets.meta import load_builtin
from posecli.datasets.synthetic import generate_synthetic_dataset
from posecli.engine import data as data_module
from posecli.engine.batch import prepare_train_batch
from posecli.engine.data import EpochIndexed, EpochSampler, build_dataset, build_train_loader, default_workers
from posecli.engine.distributed import DistInfo
from posecli.settings import DataSettings, TrainSettings

torch.set_num_threads(1)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """6 synthetic COCO-17 images (annotation file, image folder)."""
    ann = generate_synthetic_dataset(tmp_path_factory.mktemp("people"), 6, keypoints="coco", image_size=96, seed=4)
    return ann, ann.parent / "images"


def data_settings(**changes: Any) -> DataSettings:
    base = {"image_size": [48, 64], "heatmap_size": [12, 16], "sigma": 2.0, "flip_prob": 0.5, "rot_prob": 1.0}
    return DataSettings(**(base | changes))


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return torch.utils.data.default_collate(items)


@pytest.mark.parametrize(
    "changes",
    [{}, {"unbiased_encoding": True, "sigma": 1.5}, {"use_different_joint_weights": True}],
    ids=["msra", "unbiased", "joint-weights"],
)
def test_device_batch_equals_the_all_on_cpu_items(people: tuple[Path, Path], changes: dict[str, Any]) -> None:
    ann, img_dir = people
    meta, data = load_builtin("coco"), data_settings(**changes)
    device_set = build_dataset(ann, img_dir, meta, data, train=True, rng_seed=7)
    cpu_set = build_dataset(ann, img_dir, meta, data, train=True, rng_seed=7, with_target=True)
    item = device_set[2]
    # the worker's item: the uint8 crop and keypoints, nothing per-pixel beyond the warp
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (64, 48, 3)
    assert "target" not in item and "target_weight" not in item
    assert item["keypoints"].shape == (17, 3) and item["keypoints"].dtype == torch.float32
    batch = collate([device_set[i] for i in range(4)])
    reference = collate([cpu_set[i] for i in range(4)])
    images, target, weight = prepare_train_batch(batch, CPU, device_set.codec, torch.contiguous_format)
    assert images.dtype == torch.float32 and images.shape == (4, 3, 64, 48) and images.is_contiguous()
    assert torch.equal(images, reference["image"])  # bit for bit
    assert target.dtype == torch.float32 and torch.equal(target, reference["target"])
    assert torch.equal(weight, reference["target_weight"])
    assert target.amax() > 0.99 and weight.sum() > 10  # real targets, not zeros (unbiased peaks are off-grid)
    # channels_last as the CUDA path asks for it: same values, channels_last strides
    cl, _, _ = prepare_train_batch(batch, CPU, device_set.codec, torch.channels_last)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, images)
    # an all-on-CPU batch passes through unchanged
    again = prepare_train_batch(reference, CPU, cpu_set.codec, torch.contiguous_format)
    assert all(torch.equal(a, b) for a, b in zip(again, (images, target, weight), strict=True))


def test_persistent_workers_follow_the_epoch(people: tuple[Path, Path]) -> None:
    ann, img_dir = people
    data = data_settings(flip_prob=0.5, rot_prob=1.0, rot_factor=40)
    cfg = TrainSettings(batch_size=3, workers=2, seed=5)
    info = DistInfo(0, 1, 0, CPU, None)

    def epochs(loader: torch.utils.data.DataLoader, sampler: EpochSampler, which: list[int]) -> dict[int, list]:
        out = {}
        for epoch in which:
            sampler.set_epoch(epoch)
            out[epoch] = [(b["index"].tolist(), b["rotation"].tolist(), b["image"]) for b in loader]
        return out

    ds = build_dataset(ann, img_dir, load_builtin("coco"), data, train=True, rng_seed=cfg.seed)
    loader, sampler = build_train_loader(ds, cfg, info)
    assert loader.persistent_workers and loader.num_workers == 2 and loader.prefetch_factor == 4
    run = epochs(loader, sampler, [0, 1])
    fresh_ds = build_dataset(ann, img_dir, load_builtin("coco"), data, train=True, rng_seed=cfg.seed)
    fresh_loader, fresh_sampler = build_train_loader(fresh_ds, cfg, info)
    fresh = epochs(fresh_loader, fresh_sampler, [1])  # a fresh run's epoch 2 (e.g. after --resume)
    rotations = [{i: r for idx, rot, _ in run[e] for i, r in zip(idx, rot, strict=True)} for e in (0, 1)]
    assert rotations[0].keys() == rotations[1].keys() and rotations[0] != rotations[1]  # epoch 2 draws anew
    for (i1, r1, x1), (i2, r2, x2) in zip(run[1], fresh[1], strict=True):
        assert i1 == i2 and r1 == r2 and torch.equal(x1, x2)
    # and the same items as the dataset gives without workers
    direct = EpochIndexed(ds)
    index, _, images = run[1][0]
    assert torch.equal(images[0], direct[(1, index[0])]["image"])


def test_workers_default_to_the_available_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(12)))
    assert default_workers() == 12
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers(distributed=True) == 3  # torchrun: the cores shared among this machine's processes
    assert default_workers(distributed=False) == 12
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert default_workers(distributed=True) == 1
    cfg = TrainSettings()
    assert cfg.workers is None  # the default: per core
    ds_info = DistInfo(0, 1, 0, CPU, None)

    class Tiny(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(6)))
    loader, _ = build_train_loader(Tiny(), cfg, ds_info)  # type: ignore[arg-type]
    assert loader.num_workers == 6 and loader.prefetch_factor == 2 and not loader.pin_memory


# ------------------------------------------------------------------------------------ the loss curve
def losses(work: Path) -> list[float]:
    recs = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["type"] == "train"]


def test_device_targets_give_the_loss_curve_and_weights_of_the_all_on_cpu_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSECLI_CACHE", str(tmp_path / "cache"))
    preset = tiny_preset()
    preset["data"]["unbiased_encoding"] = True
    preset["data"]["synthetic"]["num_train"] = 10
    preset["train"]["total_epochs"] = 3
    path = write_preset(tmp_path / "tiny.yaml", preset)
    device = finetune("--preset", path, "--work-dir", tmp_path / "device")
    assert device.exit_code == 0, device.output
    # the old pipeline: targets and normalisation in the dataset (the workers), on the CPU
    monkeypatch.setattr(data_module, "build_dataset", functools.partial(data_module.build_dataset, with_target=True))
    cpu = finetune("--preset", path, "--work-dir", tmp_path / "cpu")
    assert cpu.exit_code == 0, cpu.output
    a, b = losses(tmp_path / "device"), losses(tmp_path / "cpu")
    assert len(a) == len(b) >= 9 and all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert a[0] != a[-1]  # it trained
    wa = torch.load(tmp_path / "device" / "last.pth", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "cpu" / "last.pth", weights_only=True)["state_dict"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)


def test_loss_is_read_once_per_log_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSECLI_CACHE", str(tmp_path / "cache"))
    preset = tiny_preset()
    preset["data"]["synthetic"]["num_train"] = 12  # 13 people (batch 4): 4 steps an epoch
    preset["train"] |= {"total_epochs": 1, "log_interval": 3}
    reads: list[int] = []
    from posecli.engine.train import Trainer

    original = Trainer._sum_loss_and_stop

    def counted(self: Trainer, loss_sum: torch.Tensor) -> tuple[float, bool]:
        reads.append(self.state.global_iter)
        return original(self, loss_sum)

    monkeypatch.setattr(Trainer, "_sum_loss_and_stop", counted)
    result = finetune("--preset", write_preset(tmp_path / "t.yaml", preset), "--work-dir", tmp_path / "w")
    assert result.exit_code == 0, result.output
    steps = [json.loads(x) for x in (tmp_path / "w" / "log.jsonl").read_text().splitlines()]
    train = [r for r in steps if r["type"] == "train"]
    n = max(r["iter"] for r in train)
    assert reads == [i for i in range(1, n + 1) if i % 3 == 0 or i == n]  # every 3rd step and the epoch's end
    assert [r["iter"] for r in train] == reads


def test_non_finite_loss_names_the_iteration_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSECLI_CACHE", str(tmp_path / "cache"))
    preset = tiny_preset()
    preset["data"]["synthetic"]["num_train"] = 12
    preset["train"] |= {"total_epochs": 2, "log_interval": 3}
    preset["train"]["optimizer"]["lr"] = 1e30
    preset["train"]["lr_config"]["warmup"] = None
    work = tmp_path / "w"
    result = finetune("--preset", write_preset(tmp_path / "t.yaml", preset), "--work-dir", work)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert re.search(
        r"training stopped: the loss is (nan|inf) in iterations 1-3 \(epoch 1, steps 1-3 of the epoch;", text
    )
    assert not (work / "last.pth").exists()
    last = [json.loads(x) for x in (work / "log.jsonl").read_text().splitlines()][-1]
    assert last["type"] == "error" and (last["first_iter"], last["iter"]) == (1, 3)
    assert yaml.safe_load((work / "config.yaml").read_text())["train"]["log_interval"] == 3
