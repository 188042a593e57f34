"""Markdown tables, the one way every report writes them."""
from __future__ import annotations

import math
from typing import Any, Iterable


def fmt(x, pct: bool = False, nd: int = 3) -> str:
    """A metric's value as reports show it: x100 with one decimal for a percentage, "–" for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:.{nd}f}"


def markdown_table(header: list[str], rows: Iterable[Iterable[Any]], align: str = "") -> list[str]:
    """The lines of a Markdown table. ``align``: one letter per column, ``l`` or ``r`` (default:
    the first column left, the others right); cells are written with ``str``."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"markdown_table: {len(header)} columns but alignment {align!r}")
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for row in rows:
        cells = [str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"markdown_table: a row of {len(cells)} cells under {len(header)} columns: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines
