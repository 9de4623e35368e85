"""Number and text formatting for the demo's terminal tables (``vtprune_kernels.text_table``)."""
from __future__ import annotations

from typing import Optional


def mib(nbytes: Optional[int]) -> str:
    """Bytes as MiB with one decimal ("n/a" for None)."""
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.1f}"


def ms(seconds: Optional[float]) -> str:
    """Seconds as milliseconds with one decimal ("n/a" for None)."""
    return "n/a" if seconds is None else f"{1e3 * seconds:.1f}"


def printable(text: str, limit: int = 60) -> str:
    """``text`` on one line with control characters escaped, cut to ``limit`` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
