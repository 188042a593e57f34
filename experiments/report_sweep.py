"""A grid's own outputs: sweep.jsonl, sweep.md and one figure gathering its cells' comparisons."""
from __future__ import annotations

import json
from pathlib import Path

from experiments.report import _cell, aggregate
from plots.curves import grid_bars, sweep_lines
from shared.files import write_text_atomic
from shared.tables import markdown_table


def write_sweep_outputs(out: Path, rows: list[dict], cells: list[tuple[str, dict]]) -> None:
    """sweep.jsonl (every row with its cell's values), sweep.md (last milestone per cell and arm, mean
    and range over seeds) and a figure: CIDEr and top-5 against the knob for one numeric key, per cell otherwise."""
    out = Path(out)
    write_text_atomic(out / "sweep.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in rows))
    keys = list(dict.fromkeys(k for _, values in cells for k in values))
    last = max(r["milestone"] for r in rows)
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    numeric = len(keys) == 1 and all(isinstance(v[keys[0]], (int, float)) for _, v in cells)
    figure = sweep_lines(rows, out, keys[0]) if numeric else grid_bars(rows, out, [n for n, _ in cells])
    table = []
    for name, values in cells:
        cells_md = []
        for a in arms:
            rs = [r for r in rows if r["cell"] == name and r["arm"] == a and r["milestone"] == last]
            g = aggregate(rs).get((a, last))
            cells_md += [_cell(g, "cider", False), _cell(g, "top5", True)] if g else ["–", "–"]
        table.append([*(values.get(k, "–") for k in keys), *cells_md])
    lines = [f"# Grid over {', '.join(f'`{k}`' for k in keys)}", "",
         f"Final milestone ({last:,} samples); mean over seeds, (min–max) with several. Per-cell reports: "
         + ", ".join(f"[{name}]({name}/report.md)" for name, _ in cells) + ".", "",
         *markdown_table([*keys, *(h for a in arms for h in (f"{a} CIDEr", f"{a} top-5 %"))], table,
                         "r" * (len(keys) + 2 * len(arms))),
         "", f"![grid]({figure.name})", ""]
    write_text_atomic(out / "sweep.md", "\n".join(lines))
