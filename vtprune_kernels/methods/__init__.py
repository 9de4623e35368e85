"""Pruning methods: scores in, keep mask out (docs/design.md section 3)."""
from .base import Captured, Needs, PruningMethod
from .baselines import Random, Uniform
from .hivtp import HIVTP
from .pixel_shuffle_pooling import pixel_shuffle_pool
from .ptp import PTP
from .vispruner import VisPruner

__all__ = [
    "Captured",
    "Needs",
    "PruningMethod",
    "VisPruner",
    "HIVTP",
    "PTP",
    "Random",
    "Uniform",
    "pixel_shuffle_pool",
]
