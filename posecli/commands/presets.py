"""``posecli presets list | show [--json] | import | export-mmpose``: the shipped presets, one preset resolved (YAML
or JSON), and MMPose 0.x configs in and out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from posecli.atomic import atomic_write_text, check_writable_dir
from posecli.datasets.meta import DatasetMeta, resolve_meta
from posecli.errors import PoseCliError
from posecli.mmpose_config import ImportResult, config_to_settings, load_config, settings_to_config_text
from posecli.settings import Settings, list_presets, load_settings, settings_to_yaml, validate_settings

_SECTION_ORDER = ("dataset", "model", "data", "train", "test")
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


# ------------------------------------------------------------------------------------------------ list, show
def run_list() -> None:
    """The shipped presets: dataset, keypoint count, input size and starting checkpoint (a table when it fits the
    terminal, else one block per preset: names and file names are what users copy, so they are never cut)."""
    rows = []
    for name in list_presets():
        s = load_settings(name)
        source = s.train.load_from or s.train.pretrained
        # the file name says which checkpoint; `presets show` prints the whole URL
        shown = "-" if source is None else source.rsplit("/", 1)[-1] + ("" if s.train.load_from else " (backbone)")
        size = "x".join(map(str, s.data.image_size))
        rows.append((name, str(s.dataset), str(s.model.head.out_channels), size, shown))
    console = Console(highlight=False)
    headers = ("preset", "dataset", "keypoints", "input (w x h)", "starts from")
    table = Table(*(Column(h, no_wrap=True) for h in headers))
    for row in rows:
        table.add_row(*row)
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    if sum(widths) + 3 * len(widths) + 1 <= console.width:  # cells, padding and borders
        console.print(table)
        return
    for name, dataset, keypoints, size, shown in rows:
        console.print(Text(name, style="bold"))
        console.print(Text(f"  {dataset}, {keypoints} keypoints, input {size} (w x h)"))
        console.print(Text(f"  starts from {shown}", overflow="fold"))


def run_show(name: str, as_json: bool = False) -> None:
    """A preset's resolved settings (YAML) and a summary of its dataset metadata, or both as one JSON object."""
    if as_json:
        typer.echo(json.dumps(show_json(name), indent=2))
        return
    settings = load_settings(name, {})
    typer.echo(settings_to_yaml(settings), nl=False)
    ann = settings.data.train_ann or settings.data.val_ann
    if settings.dataset is None and ann is None:
        typer.echo("# dataset: inferred from the training annotations' categories when they are given")
        return
    meta = resolve_meta(settings.dataset, ann)
    typer.echo(
        f"# dataset meta '{meta.name}': {meta.num_keypoints} keypoints, {len(meta.flip_pairs)} flip pairs, "
        f"parts {', '.join(f'{k}[{a}:{b}]' for k, (a, b) in meta.parts.items())}"
    )
    for note in meta.notes:
        typer.echo(f"# note: {note}")


def show_json(preset: str) -> dict[str, Any]:
    """``{"settings": <resolved settings>, "dataset_meta": {...}}`` of a preset (dataset_meta null when unknown)."""
    settings = load_settings(preset)
    ann = settings.data.train_ann or settings.data.val_ann
    meta = None
    if settings.dataset is not None or ann is not None:
        meta = resolve_meta(settings.dataset, ann)
    dataset_meta = None
    if meta is not None:
        dataset_meta = {"num_keypoints": meta.num_keypoints, **meta.to_dict(), "notes": list(meta.notes)}
    return {"settings": settings.model_dump(mode="json"), "dataset_meta": dataset_meta}


# ------------------------------------------------------------------------------------------------ import
def meta_path_for(preset: Path) -> Path:
    """Where the dataset meta of an imported preset goes: ``PRESET.meta.yaml`` next to it."""
    return preset.with_name(f"{preset.stem}.meta.yaml")


def import_config(config: Path, out: Path) -> tuple[ImportResult, Path | None]:
    """Read an MMPose config (executing nothing), write the preset (and its meta file) atomically."""
    if out.suffix not in (".yaml", ".yml"):
        raise PoseCliError("--out must be a .yaml preset file", out)
    if out.is_dir():
        raise PoseCliError("--out is a folder, not a preset file", out)
    result = config_to_settings(load_config(config), str(config))
    settings = {k: result.settings[k] for k in _SECTION_ORDER if k in result.settings}
    meta_path = meta_path_for(out) if result.meta is not None else None
    if meta_path is not None:
        settings["dataset"] = meta_path.name  # resolved next to the preset when it is loaded
    validate_settings({**settings, "dataset": None if meta_path else settings.get("dataset")}, str(config))
    check_writable_dir(out.parent if str(out.parent) else Path("."), "the preset's folder")

    header = (
        f"# posecli finetune --preset {out} --train-ann TRAIN.json --train-img-dir IMAGES/ "
        "--val-ann VAL.json --val-img-dir IMAGES/\n"
        f"# Imported from the MMPose config {config} by `posecli presets import`.\n"
    )
    if meta_path is not None:
        meta_text = f"# Dataset meta imported from the dataset_info of {config}.\n" + yaml.safe_dump(
            result.meta.to_dict(), sort_keys=False, default_flow_style=None
        )
        atomic_write_text(meta_path, meta_text)
    atomic_write_text(out, header + yaml.safe_dump(settings, sort_keys=False, default_flow_style=None))
    return result, meta_path


def run_import(config: Path, out: Path) -> None:
    """``presets import``: write the preset, then list what was mapped and what was ignored."""
    result, meta_path = import_config(config, out)
    typer.echo(f"wrote {out}" + (f" and {meta_path} (dataset_info)" if meta_path else ""))
    typer.echo(f"mapped {len(result.mapped)} config keys:")
    for key, target in result.mapped:
        typer.echo(f"  {key} -> {target}")
    typer.echo(f"ignored {len(result.ignored)} config keys:")
    for line in result.ignored:
        typer.echo(f"  {line}")


# ------------------------------------------------------------------------------------------------ export
def _settings_and_meta(source: str) -> tuple[Settings, DatasetMeta]:
    path = Path(source)
    if path.suffix in _CHECKPOINT_SUFFIXES:
        from posecli.checkpoints import read_checkpoint  # torch: imported only for a checkpoint

        if not path.is_file():
            raise PoseCliError("checkpoint not found", path)
        ckpt = read_checkpoint(path)
        settings, meta = ckpt.settings(), ckpt.dataset_meta()
        if settings is None or meta is None:
            raise PoseCliError(
                "records no posecli settings (not a posecli checkpoint): export the preset it was trained with", path
            )
        return settings, meta
    settings = load_settings(source)
    return settings, resolve_meta(settings.dataset, settings.data.train_ann or settings.data.val_ann)


def export_config(source: str, out: Path) -> str:
    """Write the MMPose 0.x config of a preset or a posecli checkpoint to ``out`` (atomically); returns the text."""
    if out.suffix != ".py":
        raise PoseCliError("--out must be a .py file (MMPose configs are Python)", out)
    settings, meta = _settings_and_meta(source)
    text = settings_to_config_text(settings, meta, source)
    atomic_write_text(out, text)
    return text


def run_export_mmpose(source: str, out: Path) -> None:
    """``presets export-mmpose``: write the config and say where settings without an MMPose name went."""
    text = export_config(source, out)
    extra = "" if "\nposecli = " not in text else " (settings MMPose has no word for are in its `posecli` dict)"
    typer.echo(f"wrote {out}: MMPose 0.x config{extra}")
