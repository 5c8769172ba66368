"""The documentation holds together: relative links and anchors resolve, the README stays short, commands are real."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import typer

from posecli.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "README_zh-CN.md", *(ROOT / "docs").rglob("*.md")])
README_MAX_LINES = 120

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def _split(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, code-block lines) of a Markdown page."""
    prose: list[str] = []
    code: list[str] = []
    in_code = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
            continue
        (code if in_code else prose).append(line)
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation and symbols dropped, spaces to hyphens."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().lower()
    kept = [c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LNM"]
    return "".join(kept).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in _split(page.read_text(encoding="utf-8"))[0]:
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    """Link targets in a page's prose (not in code blocks or code spans)."""
    prose = _split(page.read_text(encoding="utf-8"))[0]
    return [m.group(1) for line in prose for m in _LINK.finditer(_CODE_SPAN.sub("", line))]


def test_pages_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "README_zh-CN.md", "docs/REFUSALS.md", "docs/ARCHITECTURE.md"} <= names
    assert any(n.startswith("docs/zh-CN/") for n in names)


def test_slug_follows_github() -> None:
    assert slug("Fine-tuning without `--preset`") == "fine-tuning-without---preset"
    assert slug("HRNetV2 (hands and faces)") == "hrnetv2-hands-and-faces"
    assert slug("posecli 会拒绝什么，以及如何处理") == "posecli-会拒绝什么以及如何处理"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if _EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_is_short() -> None:
    for name in ("README.md", "README_zh-CN.md"):
        lines = (ROOT / name).read_text(encoding="utf-8").count("\n")
        assert lines <= README_MAX_LINES, f"{name}: {lines} lines, over {README_MAX_LINES} (move details to docs/)"


def test_one_demo_time() -> None:
    """Every page that times the demo gives the same figure."""
    figures = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        figures.update(re.findall(r"about\s+(\d+)\s+s\b", text))  # only the demo is timed in prose
        figures.update(re.findall(r"约\s*(\d+)\s*秒", text))
    assert len(figures) == 1, f"the demo time differs between pages: {sorted(figures)}"
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for stale in ("about a minute", "a few minutes", "48–56", "约一分钟", "约几分钟", "需要几分钟"):
            assert stale not in text, f"{page.relative_to(ROOT)} still says {stale!r} about the demo"


def _commands() -> dict[str, Any]:
    """Every posecli command by its full name ('finetune', 'presets import', ...)."""
    root = typer.main.get_command(app)
    out: dict[str, Any] = {}
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        out[name] = cmd
        if hasattr(cmd, "commands"):  # a group such as `presets`
            for sub, subcmd in cmd.commands.items():
                out[f"{name} {sub}"] = subcmd
    return out


def _invocations(page: Path) -> list[str]:
    """Text after each `posecli ` in code blocks (comments dropped) and in code spans that start with it."""
    prose, code = _split(page.read_text(encoding="utf-8"))
    chunks = [line.split(" # ")[0] for line in code]
    chunks += [m.group(2) for line in prose for m in _CODE_SPAN.finditer(line) if m.group(2).startswith("posecli ")]
    out = []
    for chunk in chunks:
        parts = re.split(r"(?:^|(?<=[\s;(]))posecli\s+", chunk)
        out.extend(p for p in parts[1:] if re.match(r"[a-z][a-z-]*(\s|$)", p))
    return out


def test_command_examples_use_real_commands_and_options() -> None:
    commands = _commands()
    problems = []
    for page in PAGES:
        for inv in _invocations(page):
            words = inv.split()
            name = words[0]
            if len(words) > 1 and f"{name} {words[1]}" in commands:
                name = f"{name} {words[1]}"
            if name not in commands:
                problems.append(f"{page.name}: unknown command in `posecli {inv.strip()}`")
                continue
            params = commands[name].params
            known = {opt for p in params for opt in (*p.opts, *getattr(p, "secondary_opts", ()))} | {"--help"}
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", inv):
                if flag not in known:
                    problems.append(f"{page.name}: `posecli {name}` has no {flag} (in `posecli {inv.strip()}`)")
    assert not problems, "\n".join(problems)
