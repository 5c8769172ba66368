"""``posecli finetune``: resolve the settings (a preset, or the checkpoint's architecture + the keypoint set, and
the flags), then run the training loop with a Rich report."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from posecli.engine.train import FinetuneSummary, finetune
from posecli.errors import PoseCliError
from posecli.options import FinetuneOptions
from posecli.preset_resolution import Resolution, resolve_settings, source_file_name
from posecli.report import RichTrainReport, download_bar
from posecli.settings import settings_to_yaml


def run(opts: FinetuneOptions) -> FinetuneSummary | None:
    """Fine-tune, or print the resolved settings; processes other than rank 0 end errors quietly (rank 0 reports)."""
    resolution = resolve_settings(
        opts.source,
        mode=opts.mode,  # type: ignore[arg-type]
        keypoints=opts.keypoints,
        dataset=opts.dataset,
        train_ann=opts.train_ann,
        preset=opts.preset,
        overrides=opts.overrides,
        progress=download_bar,
    )
    settings = resolution.settings
    if opts.preset is None and int(os.environ.get("RANK", "0")) == 0:
        _explain(resolution)
    if opts.print_config:
        typer.echo(settings_to_yaml(settings), nl=False)
        return None
    work_dir = opts.work_dir or Path("work_dirs") / _run_name(opts, resolution)
    try:
        return finetune(
            settings,
            work_dir,
            device=opts.device,
            resume=opts.resume,
            overwrite=opts.overwrite,
            report=RichTrainReport(),
        )
    except PoseCliError:
        if int(os.environ.get("RANK", "0")) != 0:
            raise SystemExit(2) from None
        raise


def _explain(resolution: Resolution) -> None:
    """Which preset the settings were resolved to, why, and how to keep them (stderr: stdout may be a YAML file)."""
    typer.echo(f"resolved preset: {resolution.label}", err=True)
    for reason in resolution.reasons:
        typer.echo(f"  - {reason}", err=True)
    typer.echo("keep these settings: add --print-config > my.yaml to this command, then use --preset my.yaml", err=True)


def _run_name(opts: FinetuneOptions, resolution: Resolution) -> str:
    """The default work dir's name: the preset's, else the resolved preset's, else the checkpoint's file stem."""
    if opts.preset is not None:
        return Path(opts.preset).stem
    if resolution.preset is not None:
        return resolution.preset
    return Path(source_file_name(str(opts.source))).stem.split("-")[0]
