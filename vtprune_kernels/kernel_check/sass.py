"""SASS of a compiled kernel: the instructions of its exp loop per ``MUFU.EX2`` (``instr/ex2``).

The attention-scoring passes are meant to be bound by the exp unit (MUFU: 16 ``ex2`` per SM per
clock on sm_80/sm_90, against 128 other instructions issued per SM per clock, i.e. 8 per ``ex2``).
A loop body that issues more than 8 instructions per ``MUFU.EX2`` is bound by instruction issue,
not by the exp unit. This module counts it from the cubin, without a GPU:

1. ``disassemble``: ``cuobjdump -sass`` (the one bundled with triton, or the CUDA toolkit's).
2. ``parse``: one ``Instruction`` (address, opcode, text) per SASS instruction line.
3. ``loops``: every back-edge branch (a ``BRA`` whose target lies at or before it, excluding the
   ``BRA`` to itself that ends every kernel) delimits a loop body [target, branch].
4. ``exp_loop``: the steady-state tile loop. Candidates are the innermost loops holding a
   ``MUFU.EX2`` (software pipelining puts a loop's whole body between the target and the
   back-edge; outer loops, e.g. over row blocks around a loop over heads, contain an inner exp
   loop and are skipped). Among them, those with the most ``MUFU.EX2`` hold full tiles (tail
   tiles are smaller); of those, the one with the fewest instructions is the interior-tile loop:
   the kernels (triton_kernels/tiles.py) run the same full tile masked on boundary tiles (the
   causal diagonal) and unmasked on every other, and the masks only add instructions. This is
   the loop that runs on all but a few tiles of a long sequence.
5. ``instructions_per_ex2``: instructions in that body (``NOP`` excluded) / ``MUFU.EX2`` in it.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

_LINE = re.compile(r"/\*(?P<addr>[0-9a-f]{4,})\*/\s+(?P<text>[^;]*);")
_PREDICATE = re.compile(r"^@!?U?P[T0-9]+\s+")
_HEX = re.compile(r"0x[0-9a-f]+")


@dataclasses.dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str  # with modifiers, without the predicate: "MUFU.EX2", "BRA", "FFMA.FTZ"
    text: str

    @property
    def branch_target(self) -> Optional[int]:
        """The absolute target of a direct branch (``BRA 0x10a0``), else None."""
        if self.opcode.split(".")[0] != "BRA":
            return None
        targets = _HEX.findall(self.text.split(None, 1)[1] if " " in self.text else "")
        return int(targets[-1], 16) if targets else None


def find_cuobjdump() -> Optional[str]:
    """cuobjdump bundled with triton, else on the PATH or under $CUDA_HOME / /usr/local/cuda."""
    try:
        import triton

        bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("cuobjdump")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/cuobjdump")
    return str(default) if default.is_file() else None


def disassemble(cubin: bytes, cuobjdump: Optional[str] = None) -> str:
    """The ``cuobjdump -sass`` listing of a cubin."""
    tool = cuobjdump or find_cuobjdump()
    if tool is None:
        raise RuntimeError("cuobjdump not found (triton's bundled one, the PATH, or $CUDA_HOME/bin)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        proc = subprocess.run([tool, "-sass", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"cuobjdump failed: {proc.stderr.strip()[:300]}")
    return proc.stdout


def parse(listing: str) -> List[Instruction]:
    """Instructions of a ``cuobjdump -sass`` / ``nvdisasm`` listing, in address order."""
    out = []
    for line in listing.splitlines():
        match = _LINE.search(line)
        if not match:
            continue
        text = " ".join(match["text"].split())
        if not text:
            continue
        body = _PREDICATE.sub("", text)
        out.append(Instruction(int(match["addr"], 16), body.split()[0], text))
    return out


def loops(instructions: List[Instruction]) -> List[Tuple[int, int]]:
    """(first, last) instruction indices of each loop body: from a back-edge's target to the back-edge."""
    index_of = {ins.address: i for i, ins in enumerate(instructions)}
    found = []
    for i, ins in enumerate(instructions):
        target = ins.branch_target
        if target is not None and target < ins.address and target in index_of:
            found.append((index_of[target], i))
    return found


def _count_ex2(instructions: List[Instruction], first: int, last: int) -> int:
    return sum(ins.opcode.startswith("MUFU.EX2") for ins in instructions[first : last + 1])


def exp_loop(instructions: List[Instruction]) -> Optional[Tuple[int, int]]:
    """The interior-tile exp loop (module doc, step 4); None when no loop computes an exp."""
    with_exp = [(a, b) for a, b in loops(instructions) if _count_ex2(instructions, a, b)]
    innermost = [
        (a, b) for a, b in with_exp if not any((c, d) != (a, b) and a <= c and d <= b for c, d in with_exp)
    ]
    if not innermost:
        return None
    return max(innermost, key=lambda span: (_count_ex2(instructions, *span), span[0] - span[1], -span[0]))


def instructions_per_ex2(listing: str) -> Optional[float]:
    """SASS instructions (NOPs excluded) per ``MUFU.EX2`` in the exp loop of a listing (one kernel)."""
    instructions = parse(listing)
    span = exp_loop(instructions)
    if span is None:
        return None
    body = [ins for ins in instructions[span[0] : span[1] + 1] if ins.opcode != "NOP"]
    return len(body) / _count_ex2(instructions, *span)
