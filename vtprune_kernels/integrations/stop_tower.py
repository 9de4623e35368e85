"""Leaving a vision tower's forward early: a forward hook on the last layer the method needs raises
``StopTower`` and the caller catches it, so later layers (and the merger) never run."""


class StopTower(Exception):
    """Raised by a hook to leave the tower's forward; caught by the code that called the tower."""
