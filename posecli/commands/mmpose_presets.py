"""``posecli presets import | show --json | export-mmpose``: MMPose 0.x configs in and out, presets as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from posecli.errors import PoseCliError

_SECTION_ORDER = ("dataset", "model", "data", "train", "test")
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def meta_path_for(preset: Path) -> Path:
    """Where the dataset meta of an imported preset goes: ``PRESET.meta.yaml`` next to it."""
    return preset.with_name(f"{preset.stem}.meta.yaml")


def import_config(config: Path, out: Path) -> tuple[Any, Path | None]:
    """Read an MMPose config (executing nothing), write the preset (and its meta file) atomically."""
    import yaml

    from posecli.atomic import atomic_write_text, check_writable_dir
    from posecli.mmpose_config import config_to_settings, load_config
    from posecli.settings import validate_settings

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


def presets_import(
    config: Annotated[Path, typer.Argument(help="MMPose 0.x config .py (read, never executed).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Preset YAML to write.")],
) -> None:
    """Turn an MMPose 0.x top-down heatmap config into a posecli preset; prints what was mapped and ignored."""
    result, meta_path = import_config(config, out)
    typer.echo(f"wrote {out}" + (f" and {meta_path} (dataset_info)" if meta_path else ""))
    typer.echo(f"mapped {len(result.mapped)} config keys:")
    for key, target in result.mapped:
        typer.echo(f"  {key} -> {target}")
    typer.echo(f"ignored {len(result.ignored)} config keys:")
    for line in result.ignored:
        typer.echo(f"  {line}")


def show_json(preset: str) -> dict[str, Any]:
    """``{"settings": <resolved settings>, "dataset_meta": {...}}`` of a preset (dataset_meta null when unknown)."""
    from posecli.datasets.meta import resolve_meta
    from posecli.settings import load_settings

    settings = load_settings(preset)
    ann = settings.data.train_ann or settings.data.val_ann
    meta = None
    if settings.dataset is not None or ann is not None:
        meta = resolve_meta(settings.dataset, ann)
    dataset_meta = None
    if meta is not None:
        dataset_meta = {"num_keypoints": meta.num_keypoints, **meta.to_dict(), "notes": list(meta.notes)}
    return {"settings": settings.model_dump(mode="json"), "dataset_meta": dataset_meta}


def print_show_json(preset: str) -> None:
    """Print :func:`show_json` as one JSON object."""
    typer.echo(json.dumps(show_json(preset), indent=2))


def _settings_and_meta(source: str) -> tuple[Any, Any]:
    from posecli.datasets.meta import resolve_meta
    from posecli.settings import load_settings

    path = Path(source)
    if path.suffix in _CHECKPOINT_SUFFIXES:
        from posecli.checkpoints import read_checkpoint

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
    from posecli.atomic import atomic_write_text
    from posecli.mmpose_config import settings_to_config_text

    if out.suffix != ".py":
        raise PoseCliError("--out must be a .py file (MMPose configs are Python)", out)
    settings, meta = _settings_and_meta(source)
    text = settings_to_config_text(settings, meta, source)
    atomic_write_text(out, text)
    return text


def presets_export_mmpose(
    source: Annotated[str, typer.Argument(help="Preset name, preset YAML or posecli checkpoint (.pth).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="MMPose config .py to write.")],
) -> None:
    """Write an MMPose 0.x config (model, data_cfg, pipelines, test_cfg, dataset_info, schedule)."""
    text = export_config(source, out)
    extra = "" if "\nposecli = " not in text else " (settings MMPose has no word for are in its `posecli` dict)"
    typer.echo(f"wrote {out}: MMPose 0.x config{extra}")
