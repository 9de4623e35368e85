"""vtprune_kernels: fused kernels for training-free visual-token pruning in VLMs.

- ``vtprune_kernels.ops``: the five ops (also ``torch.ops.vtprune.*``), with ``backend=`` selection.
- ``vtprune_kernels.reference``: plain PyTorch oracles of the ops.
"""
from . import _library  # noqa: F401  (registers torch.ops.vtprune.*)
from . import ops, reference

__version__ = "0.1.0"

__all__ = ["ops", "reference", "__version__"]
