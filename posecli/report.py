"""Everything posecli shows in the terminal with Rich: tables, progress bars, and the lines around them.

The commands call these; library modules (datasets, checkpoints, engine, ...) never print: the training loop
reports through the ``RichTrainReport`` it is given, downloads and evaluation through progress callbacks.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import typer
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from posecli.checkpoints.sources import human_bytes
from posecli.files import plural
from posecli.models import count_parameters

if TYPE_CHECKING:
    from posecli.checkpoints import LoadReport
    from posecli.datasets.coco_format import CheckReport
    from posecli.engine.data import RunData
    from posecli.engine.train import Trainer


# ----------------------------------------------------------------------------------------------- metrics
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metrics_table(metrics: dict[str, Any], per_keypoint: bool = False) -> RenderableType:
    """The overall metrics (in their order: AP/AR, WholeBody parts, PCK/AUC/EPE), then per-keypoint on request."""
    overall = Table(title="Metrics", title_justify="left")
    overall.add_column("metric")
    overall.add_column("value", justify="right")
    for name, value in metrics.items():
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            overall.add_row(name, _fmt(value, 2 if name == "EPE" else 4))
    parts: list[RenderableType] = [overall]
    table_rows = metrics.get("per_keypoint")
    if per_keypoint and isinstance(table_rows, dict) and table_rows:
        columns = list(next(iter(table_rows.values())).keys())
        per_kpt = Table(title="Per keypoint", title_justify="left")
        per_kpt.add_column("#", justify="right")
        per_kpt.add_column("keypoint")
        for column in columns:
            per_kpt.add_column("EPE (px)" if column == "EPE" else column, justify="right")
        for i, (name, row) in enumerate(table_rows.items()):
            per_kpt.add_row(str(i), name, *(_fmt(row.get(c), 2 if c == "EPE" else 4) for c in columns))
        parts.append(per_kpt)
    for warning in metrics.get("warnings") or []:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Group(*parts)


def validation_table(metrics: dict[str, float], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    wanted = ["AP", "AP .5", "AP .75", "AR", *(k for k in metrics if k.endswith("_AP")), "PCK@0.2", "EPE"]
    keys = [k for k in wanted if k in metrics]
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(*(f"{metrics[k]:.4f}" for k in keys))
    return table


def print_metrics(metrics: dict[str, Any], per_keypoint: bool, title: str) -> None:
    """A title line, then the metrics table (evaluate)."""
    console = Console()
    console.print(Text(title, style="bold"))  # Text: paths with [brackets] are not markup
    console.print(metrics_table(metrics, per_keypoint=per_keypoint))


def print_warning(text: str) -> None:
    """One yellow 'warning:' line."""
    Console().print(Text(f"warning: {text}", style="yellow"))


def print_note(text: str) -> None:
    """One plain line on stderr (what posecli chose for the user), apart from the results on stdout."""
    Console(stderr=True, highlight=False).print(Text(text), soft_wrap=True)


def print_written(paths: list[Path]) -> None:
    """A 'wrote PATH' line per file."""
    console = Console()
    for path in paths:
        console.print(Text(f"wrote {path}"))


# ---------------------------------------------------------------------------------------------- progress
@contextlib.contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar over ``total`` items (e.g. boxes to evaluate); yields ``advance(n)``."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@contextlib.contextmanager
def download_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A download's progress on stderr (bytes, speed); yields ``advance(number of bytes)``."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)


# ------------------------------------------------------------------------------------------ convert --check
def print_check_report(report: CheckReport) -> None:
    """Print the summary table, labelled keypoints per name, then every problem (one line each)."""
    console = Console(highlight=False)
    summary = Table(title=f"{report.ann_file}", title_justify="left")
    for col in ("images", "people", "people with keypoints", "labelled keypoints", "problems (fatal)"):
        summary.add_column(col, justify="right")
    summary.add_row(
        str(report.num_images),
        str(report.num_annotations),
        str(report.num_with_keypoints),
        str(report.num_labelled),
        f"{len(report.problems)} ({report.num_fatal})",
    )
    console.print(summary)
    if report.labelled_per_name:
        per = Table("keypoint", "labelled", "visible (v=2)")
        for name, n in report.labelled_per_name.items():
            per.add_row(name, str(n), str(report.visible_per_name.get(name, 0)))
        console.print(per)
    if report.img_dir is None:
        typer.echo("images on disk not checked (give --img-dir)")
    for problem in report.problems:  # plain echo: file names may contain Rich markup characters
        typer.echo(problem.line())
    typer.echo(
        "no problems found" if not report.problems else f"{len(report.problems)} problem(s), {report.num_fatal} fatal"
    )


# ------------------------------------------------------------------------------------------------ inspect
def _keys_cell(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")


def _rounded(value: Any) -> Any:
    """Floats to 4 significant decimals, inside dicts and lists too."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _meta_cell(key: str, value: Any) -> str:
    """One meta entry for the inspect table: metrics rounded, settings and long texts summarised (--json has all)."""
    if key == "settings" and isinstance(value, dict):
        return f"recorded ({', '.join(value)}; --json prints them)"
    if key == "metrics" and isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v, 2 if k == 'EPE' else 4)}" for k, v in value.items())
    if isinstance(value, str) and (value.count("\n") or len(value) > 80):
        return f"text, {value.count(chr(10)) + 1} lines (--json prints it)"
    if isinstance(value, dict | list):
        text = json.dumps(_rounded(value))
        return text if len(text) <= 200 else f"{len(value)} entries (--json prints them)"
    return str(_rounded(value))


def print_inspect(info: dict[str, Any], report: LoadReport | None) -> None:
    console = Console()
    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    facts.add_row("checkpoint", info["file"])
    facts.add_row("format", info["format_title"])
    facts.add_row("file size", f"{human_bytes(info['file_size'])} ({info['file_size']:,} bytes)")
    sha_note = ""
    if info["hash_matches_name"] is not None:
        sha_note = (
            " (matches the file name)"
            if info["hash_matches_name"]
            else f" [red](the file name says {info['name_sha256_prefix']})[/red]"
        )
    facts.add_row("sha256", f"{info['sha256_prefix']}{sha_note}")
    facts.add_row("tensors", f"{info['num_tensors']:,} ({info['num_params']:,} parameters)")
    if info["backbone_widths"]:
        facts.add_row("backbone", f"{info['backbone']}, stage4 widths {info['backbone_widths']}")
    facts.add_row("keypoints", str(info["num_keypoints"]) if info["num_keypoints"] is not None else "- (no head)")
    if info["keypoint_names"]:
        facts.add_row("keypoint names", f"({info['keypoint_names_source']}) " + ", ".join(info["keypoint_names"]))
    if info["input_size"]:
        facts.add_row("input size", "{} x {} (w x h)".format(*info["input_size"]))
    for key, value in info["meta"].items():
        facts.add_row(f"meta.{key}", _meta_cell(key, value))
    if info["extras"]:
        facts.add_row("other entries", ", ".join(info["extras"]))
    console.print(facts)
    if report is None:
        return
    plan = Table("load_from plan", "tensors", "keys")
    for label, keys in (
        ("loaded", report.loaded),
        ("transplanted", report.transplanted),
        ("re-initialised", report.reinitialized),
        ("missing", report.missing),
        ("unexpected", report.unexpected),
        ("mismatched", [k for k, _, _ in report.mismatched]),
    ):
        plan.add_row(label, str(len(keys)), _keys_cell(keys))
    console.print(plan)
    if report.row_map:
        rows = report.transplanted_rows()
        pairs = ", ".join(f"{r['index']}<-{r['from_index']} {r['name'] or ''}".rstrip() for r in rows[:8])
        more = f", ... (+{len(rows) - 8})" if len(rows) > 8 else ""
        console.print(f"{len(rows)} keypoint rows transplanted (model row <- checkpoint row): {pairs}{more}")
    if report.old_names_source != "unknown":
        console.print(f"checkpoint keypoint names: {report.old_names_source}")
    console.print(report.summary())


# ------------------------------------------------------------------------------------------------ finetune
class RichTrainReport:
    """The training loop's TrainReport (engine/events.py) on a Rich console: lines, tables and the live epoch bar."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)

    def message(self, text: str) -> None:
        """One line (Rich markup allowed)."""
        self.console.print(text)

    def note(self, text: str) -> None:
        """A yellow 'note:' line."""
        self.console.print(f"[yellow]note:[/] {text}")

    def download(self, description: str, total: int | None) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """A download's progress bar on stderr."""
        return download_bar(description, total)

    def loaded(self, source: str, mode: str, report: LoadReport) -> None:
        """What loading the starting checkpoint did: counts, transplanted rows, fresh keypoints."""
        self.console.print(f"{mode} [bold]{source}[/] ({report.format}): {report.summary()}")
        if report.row_map:
            names = report.new_names or []
            kept = {i for i, _ in report.row_map}
            renamed = [
                f"{r['name']}<-{r['from_name']}" for r in report.transplanted_rows() if r["name"] != r["from_name"]
            ]
            self.console.print(
                f"  head: {len(report.row_map)} of {len(names) or '?'} keypoint rows transplanted by name"
            )
            if renamed:
                self.console.print(f"  mapped: {', '.join(renamed[:8])}{' ...' if len(renamed) > 8 else ''}")
            fresh = [n for i, n in enumerate(names) if i not in kept]
            if fresh:
                self.console.print(
                    f"  new keypoints (fresh init): {', '.join(fresh[:10])}{' ...' if len(fresh) > 10 else ''}"
                )
        elif report.reinitialized:
            self.console.print(f"  re-initialised: {', '.join(report.reinitialized)}")

    def run_setup(self, trainer: Trainer, data: RunData, lr: float, lr_note: str) -> None:
        """The set-up: device and precision, data, model, batch and schedule."""
        cfg, info, console, memory_format = trainer.train_cfg, trainer.info, self.console, trainer.memory_format
        amp_text = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16 + grad scaler"}[trainer.amp_dtype]
        console.print(
            f"device {info.device}, {info.world_size} process{'es' if info.distributed else ''}"
            f"{f' ({info.backend})' if info.backend else ''}, autocast {amp_text}"
            f"{', channels_last' if memory_format == torch.channels_last else ''}"
            f"{', torch.compile' if cfg.compile else ''}"
            f"{', JPEG decode + warp on the GPU (--gpu-decode)' if cfg.gpu_decode else ''}"
        )
        for note in data.meta.notes:  # inferred names, defaulted sigmas, dropped skeleton links
            console.print(Text(f"note: dataset meta: {note}", style="yellow" if "sigma" in note else ""))
        num_val = len(data.val_set) if data.val_set is not None else 0
        console.print(
            f"data: {data.files.description}; {len(data.train_set)} training people, {num_val} validation people"
        )
        size = trainer.settings.data.image_size
        console.print(
            f"model: {count_parameters(trainer.raw) / 1e6:.2f} M parameters, {data.meta.num_keypoints} keypoints "
            f"({data.meta.name}), input {size[0]}x{size[1]}"
        )
        sched = cfg.lr_config
        console.print(
            f"global batch {cfg.batch_size * info.world_size} ({info.world_size} x {cfg.batch_size}), "
            f"lr {lr:.3g}{lr_note}"
            f"{f', backbone x{cfg.backbone_lr_mult:g}' if cfg.backbone_lr_mult != 1 else ''}, {cfg.optimizer.type}, "
            f"{sched.policy} schedule{f' {sched.step} x{sched.gamma:g}' if sched.policy == 'step' else ''}"
            f"{f', {sched.warmup} warmup {sched.warmup_iters} iters' if sched.warmup else ''}, "
            f"{plural(cfg.total_epochs, 'epoch')} of {plural(len(trainer.loader), 'step')}"
        )
        total_iters = cfg.total_epochs * len(trainer.loader)
        if sched.warmup and sched.warmup_iters > total_iters:
            console.print(
                Text(
                    f"warning: the {sched.warmup} warm-up lasts {plural(sched.warmup_iters, 'iteration')}, longer than "
                    f"the whole run ({plural(total_iters, 'iteration')}): the lr never reaches {lr:.3g}; lower "
                    "train.lr_config.warmup_iters in the preset (no preset: save one with --print-config > my.yaml)",
                    style="yellow",
                )
            )
        if cfg.freeze_backbone_epochs:
            console.print(f"backbone frozen for the first {cfg.freeze_backbone_epochs} epochs (the head trains alone)")
        if data.val_set is None:
            console.print("[yellow]note:[/] no validation set: no evaluation and no best.pth")

    @contextlib.contextmanager
    def epoch_bar(self, epoch: int, total_epochs: int, steps: int, done: int) -> Iterator[Callable[..., None]]:
        """A live bar over the epoch's steps (terminals only; it disappears when the epoch ends)."""
        progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/" + str(total_epochs)),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.6f}  lr {task.fields[lr]:.2e}"),
            TextColumn("data {task.fields[data]:.3f}s step {task.fields[step]:.3f}s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        )
        task = progress.add_task("", total=steps, completed=done, epoch=epoch, loss=0.0, lr=0.0, data=0.0, step=0.0)

        def update(loss: float, lr: float, data: float, step: float) -> None:
            progress.update(task, advance=1, loss=loss, lr=lr, data=data, step=step, epoch=epoch)

        with progress:
            yield update

    def epoch_done(
        self, epoch: int, total_epochs: int, stats: dict[str, float], lr: float, seconds: float, data_bound: bool
    ) -> None:
        """One line per epoch: mean loss, lr, data and step times (and a hint when loading is the bottleneck)."""
        data_share = stats["data_time"] / max(1e-9, stats["data_time"] + stats["step_time"])
        self.console.print(
            f"epoch {epoch}/{total_epochs}  loss {stats['loss']:.6f}  "
            f"lr {lr:.2e}  data {stats['data_time']:.3f}s  "
            f"step {stats['step_time']:.3f}s  ({seconds:.0f}s)"
            + (f"  [yellow]data-bound: loading takes {data_share:.0%} of the time (--workers)[/]" if data_bound else "")
        )

    def validation(self, metrics: dict[str, float], title: str, warnings: Sequence[str] = ()) -> None:
        """The metrics of an evaluation as one table row, then its caveats as yellow 'warning:' lines."""
        self.console.print(validation_table(metrics, title))
        for text in warnings:
            self.console.print(Text(f"warning: {text}", style="yellow"))

    def interrupted(self, text: str) -> None:
        """The run stopped on Ctrl-C."""
        self.console.print(f"[yellow]interrupted[/] {text}")

    def result(self, text: str) -> None:
        """The final result line, in bold."""
        self.console.print(f"[bold]{text}[/]")
