"""The method names of the command line and the method objects they stand for.

``--keep`` is the number of visual tokens kept per image (per tile on tiled models):
VisPruner, Random and Uniform keep exactly that many; PTP keeps the same share of its tokens
(``prune_ratio = 1 - keep / tokens_per_tile``); HIVTP has no count budget (its count follows
from region ratio 25% and 2x2 windows, as published) and ignores ``--keep``.
"""
from __future__ import annotations

from typing import Iterable, List

from .errors import DemoInputError
from ..methods import HIVTP, PTP, PruningMethod, Random, Uniform, VisPruner

METHOD_NAMES = ("vispruner", "hivtp", "ptp", "random", "uniform")
USES_KEEP = {"vispruner": True, "hivtp": False, "ptp": True, "random": True, "uniform": True}


def parse_method_names(values: Iterable[str]) -> List[str]:
    """Names from repeated and/or comma-separated values, lower-cased, in order, without repeats.
    An unknown name raises DemoInputError listing the known ones."""
    names: List[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in METHOD_NAMES:
                raise DemoInputError(f"unknown method {name!r}: choose from {', '.join(METHOD_NAMES)}")
            if name not in names:
                names.append(name)
    return names


def build_method(name: str, keep: int, tokens_per_tile: int) -> PruningMethod:
    """The method called ``name`` keeping ``keep`` of ``tokens_per_tile`` tokens per tile."""
    if not 1 <= keep <= tokens_per_tile:
        raise DemoInputError(f"--keep must be between 1 and the {tokens_per_tile} visual tokens per tile, got {keep}")
    if name == "vispruner":
        return VisPruner(keep=keep)
    if name == "hivtp":
        return HIVTP()
    if name == "ptp":
        return PTP(prune_ratio=1.0 - keep / tokens_per_tile)
    if name == "random":
        return Random(keep=keep, seed=0)
    if name == "uniform":
        return Uniform(keep=keep)
    raise ValueError(f"unknown method {name!r}: choose from {', '.join(METHOD_NAMES)}")


def display_name(name: str) -> str:
    return {"vispruner": "VisPruner", "hivtp": "HIVTP", "ptp": "PTP", "random": "Random", "uniform": "Uniform"}[name]
