"""``posecli finetune``: resolve the settings (preset + flags), then run the training loop with a Rich report."""

from __future__ import annotations

import os

import typer

from posecli.engine.train import FinetuneSummary, finetune
from posecli.errors import PoseCliError
from posecli.options import FinetuneOptions
from posecli.report import RichTrainReport
from posecli.settings import load_settings, settings_to_yaml


def run(opts: FinetuneOptions) -> FinetuneSummary | None:
    """Fine-tune, or print the resolved settings; processes other than rank 0 end errors quietly (rank 0 reports)."""
    settings = load_settings(opts.preset, opts.overrides)
    if opts.print_config:
        typer.echo(settings_to_yaml(settings), nl=False)
        return None
    assert opts.work_dir is not None
    try:
        return finetune(
            settings,
            opts.work_dir,
            device=opts.device,
            resume=opts.resume,
            overwrite=opts.overwrite,
            report=RichTrainReport(),
        )
    except PoseCliError:
        if int(os.environ.get("RANK", "0")) != 0:
            raise SystemExit(2) from None
        raise
