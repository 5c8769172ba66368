"""Every command's --help reads well in an 80-column terminal: each option's names whole, a description and a default
for each, nothing wider than 80 columns, an example block; usage errors are one line with exit 2."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from posecli import __version__
from posecli.cli import app
from posecli.commands.help import option_help

runner = CliRunner()
ROOT = typer.main.get_command(app)
COMMANDS = [
    ["finetune"],
    ["evaluate"],
    ["predict"],
    ["export"],
    ["inspect-checkpoint"],
    ["convert-dataset"],
    ["presets", "list"],
    ["presets", "show"],
    ["presets", "import"],
    ["presets", "export-mmpose"],
]


def _command(path: list[str]):
    cmd = ROOT
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return cmd


def _help(args: list[str], columns: int = 80) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_fits_80_columns_with_every_option_whole(path: list[str]) -> None:
    text = _help(path)
    lines = text.splitlines()
    too_wide = [line for line in lines if len(line) > 80]
    assert not too_wide, too_wide
    assert "…" not in text  # Rich's ellipsis: something was cut
    options = [p for p in _command(path).params if getattr(p, "param_type_name", "") == "option"]
    for param in options:
        for name in [*param.opts, *param.secondary_opts]:
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{name} not whole in:\n{text}"
        described = option_help(param)
        assert described.strip(), f"{param.opts[0]} has no description"
        assert "[default:" in described, f"{param.opts[0]} says no default: {described}"
        first_words = " ".join(described.split()[:2])
        assert first_words in " ".join(text.split()), f"{param.opts[0]}: '{first_words}' not shown"
    # choices are shown whole on one line, e.g. <default|unbiased|none>
    for choice in re.findall(r"<[a-z0-9_|]+", text):
        assert re.search(re.escape(choice) + r"[a-z0-9_|]*>", text), choice
    assert "Examples" in text and f"posecli {' '.join(path)}" in text.split("Examples", 1)[1]


def test_finetune_help_groups_options_into_panels() -> None:
    text = _help(["finetune"])
    panels = re.findall(r"╭─ (.+?) ─", text)
    assert panels == ["Model and checkpoint", "Data", "Schedule", "Runtime", "Output", "Examples"]
    assert "--freeze-backbone-epochs" in text and "--freeze-bn" in text and "--no-freeze-bn" in text
    assert "<auto|bf16|fp16|none>" in text and "<auto|cpu|cuda>" in text


def test_evaluate_help_keeps_the_post_process_choices_on_one_line() -> None:
    text = _help(["evaluate"])
    assert "<default|unbiased|none>" in text


@pytest.mark.parametrize("columns", [60, 100, 200])
def test_help_at_other_widths(columns: int) -> None:
    text = _help(["predict"], columns)
    assert max(len(line) for line in text.splitlines()) <= min(columns, 120)
    assert "--detector-weights" in text and "…" not in text


def test_group_help_and_version() -> None:
    text = _help([])
    assert "--version" in text and "finetune" in text and "inspect-checkpoint" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"posecli {__version__}"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["evaluate", "--post-process", "x"],
            "error: --post-process: 'x' is not one of default, unbiased, none (see `posecli evaluate --help`)",
        ),
        (["finetune", "--bogus"], "error: No such option: --bogus (see `posecli finetune --help`)"),
        (["presets", "import", "c.py"], "error: Missing option '--out' / '-o' (see `posecli presets import --help`)"),
        (["finetune", "--epochs", "many"], "error: --epochs: "),
        (["nosuch"], "error: No such command 'nosuch'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], line: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr


@pytest.mark.parametrize("columns", [80, 200])
def test_presets_list_never_cuts_names(columns: int) -> None:
    from posecli.settings import list_presets, load_settings

    result = runner.invoke(app, ["presets", "list"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= columns and "…" not in result.output
    words = set(re.findall(r"[\w.\-]+", result.output))
    for name in list_presets():
        settings = load_settings(name)
        source = settings.train.load_from or settings.train.pretrained
        assert name in words
        assert source is None or source.rsplit("/", 1)[-1] in words, source
        assert str(settings.model.head.out_channels) in words


@pytest.mark.parametrize(
    ("path", "usage"),
    [
        (["predict"], "Usage: posecli predict [OPTIONS] SOURCES..."),
        (["convert-dataset"], "Usage: posecli convert-dataset [OPTIONS] [SRC]"),
        (["inspect-checkpoint"], "Usage: posecli inspect-checkpoint [OPTIONS] CHECKPOINT"),
        (["presets", "import"], "Usage: posecli presets import [OPTIONS] CONFIG"),
    ],
)
def test_usage_names_arguments_as_their_panel_does(path: list[str], usage: str) -> None:
    assert _help(path).splitlines()[0] == usage
