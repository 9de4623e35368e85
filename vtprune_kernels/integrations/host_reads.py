"""The integration's reads of device data on the host, batched into as few synchronisations as possible.

Rebuilding a prompt is host work: the new ``input_ids`` hold as many placeholders as the method
kept, a number only the device knows. So a pruning call reads device data on the host once, by
design: the keep masks, together with the prompt (``input_ids``, ``attention_mask``, ``labels``)
whose copies were started at the beginning of the call without waiting. ``HostReads`` issues every
device-to-host copy asynchronously (``non_blocking``: pinned destinations) and synchronises the
stream only when the host needs the data; ``syncs`` counts those synchronisations (0 on the CPU).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Set

import torch


class HostReads:
    """Host copies of one call's device tensors.

    ``HostReads(**prompt)`` starts copying the named prompt tensors (None allowed) without waiting;
    ``fetch(*tensors)`` copies more and synchronises once; ``get(name)`` returns a prompt tensor's
    host copy, synchronising only while that copy is pending (a CPU tensor is returned as is).
    """

    def __init__(self, **prompt: Optional[torch.Tensor]):
        self.syncs = 0
        self._devices: Set[torch.device] = set()  # devices with copies not yet waited for
        self._pending = {name for name, t in prompt.items() if t is not None and self._on_device(t)}
        self._prompt: Dict[str, Optional[torch.Tensor]] = {name: self._copy(t) for name, t in prompt.items()}

    @staticmethod
    def _on_device(t: torch.Tensor) -> bool:
        return t.device.type == "cuda"

    @staticmethod
    def _synchronise(device: torch.device):
        torch.cuda.current_stream(device).synchronize()

    def _copy(self, t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if t is None or not self._on_device(t):
            return t
        self._devices.add(t.device)
        return t.detach().to("cpu", non_blocking=True)  # valid once _wait() has run

    def _wait(self):
        if not self._devices:
            return
        for device in self._devices:
            self._synchronise(device)
        self._devices.clear()
        self._pending.clear()
        self.syncs += 1

    def fetch(self, *tensors: torch.Tensor) -> List[torch.Tensor]:
        """CPU copies of ``tensors`` (completing the pending prompt copies too), with one synchronisation."""
        copies = [self._copy(t) for t in tensors]
        self._wait()
        return copies

    def get(self, name: str) -> Optional[torch.Tensor]:
        """The host copy of prompt tensor ``name`` (synchronising first if its copy is still pending)."""
        if name in self._pending:
            self._wait()
        return self._prompt[name]
