"""Peak extra memory of one call on the CPU, in a fresh process (resident pages). CUDA figures
come from the allocator (``vtprune_kernels.demo.measure.peak_memory``).

CPU, how: a child Python process imports the benchmark module, asks its case factory for
``(call, warm_up)``, runs ``warm_up()`` (a tiny case: thread pools and BLAS start-up), resets the
process's high-water mark of resident memory (``5`` written to ``/proc/self/clear_refs``), runs
``call()`` once and reports the high-water mark minus the resident size just before the call.
Every page the call touches counts, whoever allocated it: torch tensors, a kernel's own
buffers, BLAS workspace. A fresh process keeps earlier calls' freed pages out of the picture.
Linux only (``None`` elsewhere).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Optional


_CHILD = r"""
import importlib, re, sys
sys.path.insert(0, {folder!r})
def status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
call, warm_up = getattr(importlib.import_module({module!r}), {factory!r})(*{args!r})
warm_up()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
call()
print("PEAK_EXTRA_BYTES", status("VmHWM") - before)
"""


def cpu_peak_extra_bytes(module: str, factory: str, *args) -> Optional[int]:
    """Peak extra resident bytes of ``call()`` where ``call, warm_up = module.factory(*args)``."""
    if not sys.platform.startswith("linux"):
        return None
    folder = os.path.dirname(os.path.abspath(__file__))
    code = _CHILD.format(folder=folder, module=module, factory=factory, args=tuple(args))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"PEAK_EXTRA_BYTES (-?\d+)", out).group(1))
