"""Leaving a vision tower's forward early: a forward hook on the last layer the method needs raises
``StopTower``, and the forward runs inside ``stopped_early``, which ends quietly there, so later
layers (and the merger) never run."""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

from torch.utils.hooks import RemovableHandle


class StopTower(Exception):
    """Raised by a hook to leave the tower's forward; ``stopped_early`` catches it."""


@contextlib.contextmanager
def stopped_early(handles: Iterable[RemovableHandle]) -> Iterator[None]:
    """Run the tower's forward inside: a ``StopTower`` raised in it ends the block without error;
    ``handles`` (the hooks registered for this run) are removed on the way out, whatever happens."""
    try:
        yield
    except StopTower:
        pass
    finally:
        for handle in handles:
            handle.remove()
