"""vtprune_kernels: fused kernels for training-free visual-token pruning in VLMs.

- ``vtprune_kernels.ops``: the five ops (also ``torch.ops.vtprune.*``), with ``backend=`` selection.
- ``vtprune_kernels.reference``: plain PyTorch oracles of the ops.
- ``vtprune_kernels.apply(model, method)``: prune a transformers VLM's visual tokens (``integrations``);
  ``vtprune_kernels.remove(model)`` undoes it.
- ``vtprune_kernels.methods``: the pruning methods (VisPruner, HIVTP, PTP) and baselines (Random, Uniform).
"""
from . import _library  # noqa: F401  (registers torch.ops.vtprune.*)
from . import ops, reference
from .methods import HIVTP, PTP, Random, Uniform, VisPruner
from .integrations import PruningHandle, apply, remove

__version__ = "0.1.0"

__all__ = ["ops", "reference", "__version__", "VisPruner", "HIVTP", "PTP", "Random", "Uniform", "apply", "remove", "PruningHandle"]
