"""``--help`` pages and usage errors that read well in an 80-column terminal.

``cli.py`` turns a command's parameters into plain rows (:class:`HelpRow`: the option's names and metavar, its
help) grouped in panels; this module lays them out with Rich. Names and metavars are never cut or split: a row's
left cell is one name per line (a long metavar gets its own line), and where even that leaves too little room for
the description, the description goes under the names instead of beside them.
"""

from __future__ import annotations

import enum
import io
import os
import shutil
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

MAX_WIDTH = 120  # wider help lines are hard to read
_NAME_CELL_MAX = 30  # widest left cell (names + metavar) before the metavar moves to its own line
_MIN_HELP_WIDTH = 28  # narrower than this, descriptions go under the names


@dataclass
class HelpRow:
    """One option or argument: its names (``-p``, ``--preset``, ``--no-x``), metavar and description."""

    names: list[str]
    metavar: str = ""
    help: str = ""

    def cell_lines(self, limit: int = _NAME_CELL_MAX) -> list[str]:
        """The left cell: ``-p, --preset NAME`` on one line when it fits, else one name per line."""
        short = [n for n in self.names if not n.startswith("--")]
        long = [n for n in self.names if n.startswith("--")]
        first = ", ".join(short + long[:1]) if short else (long[0] if long else "")
        lines = [first, *long[1:]] if short or long else []
        if self.metavar:
            if lines and len(lines[0]) + 1 + len(self.metavar) <= limit:
                lines[0] = f"{lines[0]} {self.metavar}"
            else:
                lines.append(f"  {self.metavar}")
        return lines


@dataclass
class HelpPage:
    """A command's help: usage line, description, panels of rows, and an examples block (the epilog)."""

    usage: str
    description: str = ""
    panels: list[tuple[str, list[HelpRow]]] = field(default_factory=list)
    examples: str = ""


def terminal_width() -> int:
    """The width to lay help out for: $COLUMNS or the terminal's, at most MAX_WIDTH."""
    return max(40, min(MAX_WIDTH, shutil.get_terminal_size((80, 24)).columns))


def _rows_table(rows: list[HelpRow], inner: int) -> RenderableType:
    left = max((len(line) for row in rows for line in row.cell_lines()), default=0)
    if inner - left - 2 < _MIN_HELP_WIDTH:  # stacked: names, then the description indented under them
        parts: list[RenderableType] = []
        for row in rows:
            parts.append(Text("\n".join(row.cell_lines()), style="bold cyan", no_wrap=True, overflow="fold"))
            if row.help:
                parts.append(Padding(Text(row.help), (0, 0, 0, 4)))
        return Group(*parts)
    table = Table.grid(padding=(0, 2), expand=True)
    table.add_column(no_wrap=True, width=left, style="bold cyan")
    table.add_column(ratio=1, overflow="fold")
    for row in rows:
        table.add_row(Text("\n".join(row.cell_lines())), Text(row.help))
    return table


def render_help(page: HelpPage, width: int | None = None, color: bool = True) -> str:
    """The help page as text (ANSI styles when ``color``) for a terminal ``width`` columns wide."""
    width = width or terminal_width()
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, force_terminal=color, no_color=not color, highlight=False, emoji=False, markup=False
    )
    console.print(Text(f"Usage: {page.usage}", style="bold"), overflow="fold")
    if page.description:
        console.print()
        console.print(Text(page.description.strip()))
    console.print()
    inner = width - 4  # panel borders and padding
    for title, rows in page.panels:
        if rows:
            console.print(Panel(_rows_table(rows, inner), title=title, title_align="left", border_style="dim"))
    if page.examples.strip():
        lines = [line.rstrip() for line in page.examples.strip("\n").splitlines()]
        text = Text("\n".join(lines), no_wrap=False, overflow="fold")
        console.print(Panel(text, title="Examples", title_align="left", border_style="dim"))
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())


# ------------------------------------------------------------------------------------- click objects -> rows
_TYPE_METAVARS = {"integer": "N", "int": "N", "float": "NUM", "text": "TEXT", "str": "TEXT", "path": "PATH"}


def _choices(param: object) -> list[str]:
    """The values a choice option takes (an Enum annotation in Typer >= 0.20, a click Choice before)."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    return [str(getattr(c, "value", c)) for c in getattr(getattr(param, "type", None), "choices", None) or ()]


def _type_name(param: object) -> str:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(annotation, type):
        return "path" if issubclass(annotation, os.PathLike) else annotation.__name__.lower()
    return str(getattr(getattr(param, "type", None), "name", ""))


def _metavar(param: object) -> str:
    """``<a|b|c>`` for a choice, the option's own metavar, else one word for its type; none for flags."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    choices = _choices(param)
    if choices:
        return "<" + "|".join(choices) + ">"
    if getattr(param, "metavar", None):
        return str(param.metavar)  # type: ignore[attr-defined]
    return _TYPE_METAVARS.get(_type_name(param), "VALUE")


def _default_text(param: object) -> str:
    """`` [default: X]`` for an option whose help does not say its default already."""
    help_text = getattr(param, "help", None) or ""
    if "[default:" in help_text or getattr(param, "name", "") == "help":
        return ""
    default = getattr(param, "default", None)
    if getattr(param, "is_flag", False) and not getattr(param, "secondary_opts", None):
        return " [default: off]" if not default else " [default: on]"
    if default is None or callable(default):
        return ""
    if isinstance(default, bool):
        flags = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
        return f" [default: {flags[0] if default else flags[-1]}]"
    return f" [default: {getattr(default, 'value', default)}]"


def option_help(param: object) -> str:
    """An option's description with its default, as shown by --help."""
    return (getattr(param, "help", None) or "").strip() + _default_text(param)


def row_for(param: object) -> HelpRow:
    """The help row of a click parameter (option or argument)."""
    if getattr(param, "param_type_name", "") == "argument":
        name = str(getattr(param, "name", "")).upper()
        name += "..." if getattr(param, "nargs", 1) == -1 else ""
        name = name if getattr(param, "required", False) else f"[{name}]"
        return HelpRow([name], "", (getattr(param, "help", None) or "").strip())
    names = sorted(getattr(param, "opts", []), key=lambda n: n.startswith("--"))
    return HelpRow([*names, *getattr(param, "secondary_opts", [])], _metavar(param), option_help(param))


def page_for(command: object, ctx: object, default_panel: str = "Options") -> HelpPage:
    """A click command's help page: parameters grouped by their ``rich_help_panel`` in order of first use."""
    panels: dict[str, list[HelpRow]] = {}
    help_row = None
    for param in command.get_params(ctx):  # type: ignore[attr-defined]
        if getattr(param, "hidden", False):
            continue
        if getattr(param, "name", "") == "help":
            help_row = row_for(param)
            continue
        if getattr(param, "param_type_name", "") == "argument":
            panel = "Arguments"
        else:
            panel = getattr(param, "rich_help_panel", None) or default_panel
        panels.setdefault(panel, []).append(row_for(param))
    if help_row is not None:
        (list(panels.values())[-1] if panels else panels.setdefault(default_panel, [])).append(help_row)
    ordered = sorted(panels.items(), key=lambda item: item[0] != "Arguments")  # arguments first, then as declared
    usage = " ".join([ctx.command_path, *_usage_pieces(command, ctx)])  # type: ignore[attr-defined]
    return HelpPage(usage, command.help or "", ordered, command.epilog or "")  # type: ignore[attr-defined]


def group_page_for(group: object, ctx: object) -> HelpPage:
    """A command group's help page: its options, then its commands with their one-line help."""
    page = page_for(group, ctx)
    rows = []
    for name in group.list_commands(ctx):  # type: ignore[attr-defined]
        sub = group.get_command(ctx, name)  # type: ignore[attr-defined]
        if sub is not None and not getattr(sub, "hidden", False):
            rows.append(HelpRow([name], "", (sub.help or "").strip().split("\n")[0]))
    page.panels.append(("Commands", rows))
    return page


def _usage_pieces(command: object, ctx: object) -> list[str]:
    """``[OPTIONS]`` and the arguments as the Arguments panel names them: ``SOURCES...``, ``[SRC]``."""
    pieces = []
    params = command.get_params(ctx)  # type: ignore[attr-defined]
    if any(getattr(p, "param_type_name", "") != "argument" for p in params):
        pieces.append("[OPTIONS]")
    for param in params:
        if getattr(param, "param_type_name", "") != "argument":
            continue
        name = (param.metavar or param.name).upper()
        name += "..." if param.nargs == -1 else ""
        pieces.append(name if param.required else f"[{name}]")
    return pieces


# -------------------------------------------------------------------------------------------- usage errors
def usage_error_line(exc: object) -> str:
    """A click usage error as one line: ``--post-process: 'x' is not one of default, unbiased, none``."""
    import re

    param = getattr(exc, "param", None)
    message = str(getattr(exc, "message", "") or "").strip()
    kind = type(exc).__name__
    if kind == "MissingParameter" or not message or param is None:
        message = exc.format_message()  # type: ignore[attr-defined]
    message = re.sub(r"^Value error, ", "", message.strip()).rstrip(".")
    if param is not None and kind != "MissingParameter":
        choices = _choices(param)
        found = re.search(r"'([^']*)' is not (?:one of|a valid)", message)
        if choices and found:
            message = f"'{found.group(1)}' is not one of {', '.join(choices)}"
        opts = getattr(param, "opts", None)
        label = opts[0] if opts and str(opts[0]).startswith("-") else str(getattr(param, "name", "")).upper()
        message = f"{label}: {message}"
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return message + hint
