"""Plain-text tables for the terminal (no dependency beyond the standard library)."""
from __future__ import annotations

from typing import Optional, Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: Optional[str] = None) -> str:
    """A table with a rule under the header. ``align`` holds one of "l"/"r" per column
    (default: first column left, the others right)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    if any(len(r) != len(header) for r in cells):
        raise ValueError("format_table: every row needs one cell per header column")
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])
