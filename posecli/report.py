"""Rich renderings of results for the terminal: the metrics table printed by `evaluate` and `finetune`."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


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
