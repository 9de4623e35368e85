"""Finds, on any device, the torch calls that would synchronise the host with a CUDA stream.

``HostSyncDetector`` is a ``TorchDispatchMode`` recording every op that reads device data on the host
or gives a result whose shape depends on the data: ``.item()`` / ``bool()`` / ``int()`` / ``float()``
(``aten._local_scalar_dense``), ``nonzero`` (``nonzero_static`` is fine), boolean-mask indexing and
assignment, ``masked_select``, ``unique``, ``bincount``, ``repeat_interleave`` without
``output_size``, ``torch.equal``, copies from another device to the CPU. On a CUDA machine each of
them is a host sync; on the CPU they run silently, which is why this detector exists.
(``tensor.tolist()`` and pageable host-to-device copies do not reach the dispatcher: the CUDA tests
with ``torch.cuda.set_sync_debug_mode`` cover them.)

Each record names the op and the innermost Python frame of the ``vtprune_kernels`` package that
issued it (records from other code, e.g. transformers' model files, are not kept).
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import List, NamedTuple, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

_ALWAYS_SYNC = {
    aten._local_scalar_dense.default,
    aten.item.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten.equal.default,
    aten.allclose.default,
    aten.bincount.default,
    aten._unique.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
}
_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}

PACKAGE_DIR = os.sep + "vtprune_kernels" + os.sep


class Sync(NamedTuple):
    op: str
    where: str  # "path/to/vtprune_kernels/file.py:line"


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else []
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


def _syncs(func, args, kwargs) -> bool:
    if func in _ALWAYS_SYNC:
        return True
    if func in _INDEXING:
        return _bool_index(args)
    if func is aten.repeat_interleave.Tensor:
        return kwargs.get("output_size") is None
    if func is aten._to_copy.default:
        target = kwargs.get("device")
        return target is not None and torch.device(target).type == "cpu" and args[0].device.type != "cpu"
    return False


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_SKIPPED_FILES = (__file__, warnings.__file__)


def package_call_site() -> Optional[str]:
    """``file:line`` of the code running the current torch call, if it is vtprune_kernels code: the
    innermost frame outside torch, the warnings module and this file (a sync inside transformers'
    code is not ours)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_TORCH_DIR) and filename not in _SKIPPED_FILES:
            return f"{filename}:{frame.f_lineno}" if PACKAGE_DIR in filename else None
        frame = frame.f_back
    return None


class CudaSyncRecorder:
    """Context manager: with ``torch.cuda.set_sync_debug_mode("warn")``, ``sites`` lists the call site
    (``package_call_site``) of every host synchronisation torch reports, None for code outside
    vtprune_kernels. (``catch_warnings(record=True)`` alone would name torch's own Python wrappers.)"""

    def __enter__(self):
        self.sites: List[Optional[str]] = []
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("always")
        warnings.showwarning = self._record
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def _record(self, message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            self.sites.append(package_call_site())

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        self._catch.__exit__(*exc)
        return False


class HostSyncDetector(TorchDispatchMode):
    """Context manager; ``syncs`` lists the would-be host syncs issued from vtprune_kernels code
    while ``armed`` (set ``armed = False`` to stop recording, e.g. once a call reached its host phase)."""

    def __init__(self, *, package_only: bool = True):
        super().__init__()
        self.package_only = package_only
        self.armed = True
        self.syncs: List[Sync] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.armed and _syncs(func, args, kwargs):
            where = package_call_site()
            if where is not None or not self.package_only:
                self.syncs.append(Sync(str(func), where or "<outside vtprune_kernels>"))
        return func(*args, **kwargs)
