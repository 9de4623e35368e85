"""``make gpu-check``: build, GPU tests and GPU benchmarks on a CUDA machine, one JSON + one Markdown report.

For a machine lent for a few minutes, with a CUDA torch already installed and no network: it uses
the Python it is run with (no virtual environment, nothing downloaded) and

1. ``environment``: Python, torch/CUDA, GPU (name, capability, SMs, max SM clock), triton,
   transformers, nvcc, cores (a subprocess: a broken torch is a reported step, not a crash);
2. ``build``: ``pip install --no-build-isolation --no-deps --no-index -e .`` in place, with
   ``TORCH_CUDA_ARCH_LIST`` = the visible GPU's capability and ``MAX_JOBS`` = the core count
   (either kept when already set);
3. ``import``: the package loads with its CUDA kernels and Triton;
4. ``gpu-tests``: the GPU test files and every test marked ``gpu``, collected once and run as
   parallel pytest shards (each shard JIT-compiles the Triton kernels its tests need, so the
   compile time is shared across the cores);
5. the GPU benchmarks, one after the other (pytest-benchmark, short rounds): Triton
   ``attention_scores`` against eager, SDPA-based baselines and the exp bound; the float32 op
   against eager; the selection ops against torch; CLIP-L and InternViT towers with and without
   scoring;
6. ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``; every step's output in ``OUT/logs/``.

Every step has a time limit and the run keeps going after a failed or timed-out step. The limits
add up to the total budget (``--budget``, 360 s by default); time a step leaves unused goes to the
next ones. ``--dry-run`` (limits 4x looser) runs every GPU-independent part (the environment probe,
the import check, the collection of every GPU test and benchmark with ``--collect-only``, the
build command printed instead of run, and the reports) and fails if any of them fails: CI runs it.

Run: ``make gpu-check OUT=gpu_check_out`` (or ``python3 benchmarks/gpu_check.py --out DIR``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUDGET_S = 360.0
MAX_SHARDS = 8
DRY_RUN_SLACK = 4  # a dry run's time limits are this many times the real ones

# The GPU test files (every test in them needs CUDA, or runs the compiled kernels on CUDA tensors);
# tests marked ``gpu`` in any other file are added.
GPU_TEST_FILES = (
    "tests/test_cuda_ops.py",
    "tests/test_triton_gpu.py",
    "tests/test_host_syncs.py",
    "tests/test_triton_attention_scores.py",
    "tests/test_triton_tiles.py",
)
# Short pytest-benchmark rounds: the numbers are medians of a few runs of millisecond calls.
BENCH_OPTIONS = (
    "--benchmark-only",
    "--benchmark-min-rounds=3",
    "--benchmark-max-time=0.15",
    "--benchmark-warmup=off",
    "--benchmark-disable-gc",
)
# MUFU ex2 throughput per SM per clock on sm_80 / sm_90 (CUDA C++ Programming Guide, arithmetic
# instruction throughput); the exp bound of a kernel = exps / (SMs * this * max SM clock).
EX2_PER_SM_PER_CLOCK = 16


@dataclasses.dataclass
class StepResult:
    name: str
    status: str  # "ok", "failed", "timeout", "skipped", "dry-run"
    seconds: float = 0.0
    timeout_s: float = 0.0
    returncode: Optional[int] = None
    command: str = ""
    log: str = ""
    summary: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A benchmark step: a pytest-benchmark file, an optional ``-k`` selection."""

    name: str
    path: str
    timeout_s: float
    select: str = ""
    what: str = ""


BENCHMARKS = (
    Benchmark("bench-triton-attention", "benchmarks/bench_triton_attention.py", 30,
              what="Triton attention_scores (bf16, model sizes) vs eager, SDPA-based baselines, the exp bound"),
    Benchmark("bench-attention-fp32", "benchmarks/bench_attention_scores.py", 20, select="triton or eager-cuda",
              what="attention_scores float32 (LLaVA-NeXT, N=4096): Triton vs eager on the GPU"),
    Benchmark("bench-selection", "benchmarks/bench_selection_cuda.py", 30,
              what="selection ops: CUDA kernels vs torch formulations and the CPU kernels"),
    Benchmark("bench-towers", "benchmarks/bench_towers.py", 40,
              what="CLIP-L/14-336 and InternViT-300M towers (bf16) with and without scoring"),
)
# name -> time limit (s) of the fixed steps; with the benchmarks they add up to DEFAULT_BUDGET_S
STEP_TIMEOUTS = {"environment": 20, "build": 55, "import": 15, "gpu-tests": 150}


def step_names() -> List[str]:
    return list(STEP_TIMEOUTS) + [b.name for b in BENCHMARKS]


def step_timeouts() -> Dict[str, float]:
    return {**STEP_TIMEOUTS, **{b.name: b.timeout_s for b in BENCHMARKS}}


class Budget:
    """Time limits: step i may use the total left minus what the steps after it are promised."""

    def __init__(self, total_s: float, timeouts: Dict[str, float], clock: Callable[[], float] = time.monotonic):
        if sum(timeouts.values()) > total_s + 1e-9:
            raise ValueError(f"the steps' time limits add up to {sum(timeouts.values())} s, over the budget of {total_s} s")
        self.clock = clock
        self.total_s = total_s
        self.deadline = clock() + total_s
        self.timeouts = dict(timeouts)

    def limit(self, name: str) -> float:
        names = list(self.timeouts)
        promised_later = sum(self.timeouts[n] for n in names[names.index(name) + 1 :])
        return max(0.0, self.deadline - self.clock() - promised_later)


# ------------------------------------------------------------------------------------- running


def run_logged(argv: Sequence[str], log: Path, timeout_s: float, env: Optional[dict] = None, cwd: Path = REPO):
    """(returncode or None on timeout, seconds): argv with stdout+stderr into ``log``; on timeout the
    whole process group is killed (pytest shards, pip's compiler jobs)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as out:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out.write(f"\n[gpu_check] killed after the step's time limit of {timeout_s:.0f} s\n")
            rc = None
    return rc, time.monotonic() - start


def run_parallel(jobs, timeout_s: float, env: dict):
    """run_logged for several (argv, log) at once; [(returncode or None, seconds)] in order."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(run_logged, argv, log, timeout_s, env) for argv, log in jobs]
        return [f.result() for f in futures]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def read_log(path: str) -> str:
    """A step's log, "" when the step did not run (skipped) or wrote none."""
    try:
        return Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return ""


def child_env(extra: Optional[dict] = None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


# ------------------------------------------------------------------------------------- environment

_PROBE = r"""
import json, os, platform, shutil, subprocess, sys
info = {"python": sys.version.split()[0], "executable": sys.executable, "cores": os.cpu_count(),
        "platform": platform.platform()}
def version(module):
    try:
        return __import__(module).__version__
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                    gpu_memory_gib=round(p.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
        if getattr(p, "clock_rate", None):  # kHz, where torch exposes it; nvidia-smi's max clock wins below
            info["max_sm_clock_mhz"] = p.clock_rate / 1000
except Exception as exc:
    info["torch"] = f"unavailable ({type(exc).__name__}: {exc})"
for name in ("triton", "transformers", "pytest", "pytest_benchmark"):
    info[name] = version(name)
def first_line(cmd, pick=lambda lines: lines[0]):
    if shutil.which(cmd[0]) is None:
        return None
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
    return pick(out) if out else None
try:
    info["nvcc"] = first_line(["nvcc", "--version"], lambda lines: [l for l in lines if "release" in l][-1:] or None)
    info["nvcc"] = info["nvcc"][0].split("release")[-1].strip(" ,") if info["nvcc"] else None
    smi = first_line(["nvidia-smi", "--query-gpu=clocks.max.sm,driver_version", "--format=csv,noheader,nounits"])
    if smi:
        clock, driver = [s.strip() for s in smi.split(",")[:2]]
        info.update(max_sm_clock_mhz=float(clock), driver=driver)
except Exception as exc:
    info["tools_error"] = repr(exc)
print("GPU_CHECK_ENV " + json.dumps(info))
"""


def parse_probe(log_text: str) -> dict:
    for line in log_text.splitlines():
        if line.startswith("GPU_CHECK_ENV "):
            return json.loads(line[len("GPU_CHECK_ENV ") :])
    return {}


def arch_list(env_info: dict) -> Optional[str]:
    """TORCH_CUDA_ARCH_LIST for the build: the visible GPU's capability ("9.0"), else None."""
    cap = env_info.get("capability")
    return cap if isinstance(cap, str) and re.fullmatch(r"\d+\.\d+", cap) else None


def build_command(python: str) -> List[str]:
    return [python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-e", "."]


def build_env(env_info: dict) -> dict:
    extra = {"MAX_JOBS": os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)}
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or arch_list(env_info)
    if arch:
        extra["TORCH_CUDA_ARCH_LIST"] = arch
    return extra


_IMPORT_CHECK = (
    "import json, torch, vtprune_kernels; from vtprune_kernels import _library; "
    "print('GPU_CHECK_IMPORT ' + json.dumps({'cuda_kernels': bool(_library.HAS_CUDA_KERNELS), "
    "'triton': bool(_library.HAS_TRITON), 'cuda': torch.cuda.is_available()}))"
)


# ------------------------------------------------------------------------------------- tests

_OUTCOME = re.compile(r"^(?P<node>\S+::\S+) (?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


_NODE_ID = re.compile(r"^[\w./-]+\.py::\S.*$")


def collected_node_ids(log_text: str) -> List[str]:
    """Test ids from ``pytest --collect-only -q`` output, in order, without repeats."""
    return list(dict.fromkeys(line.rstrip() for line in log_text.splitlines() if _NODE_ID.match(line.rstrip())))


def shard(items: Sequence[str], n: int) -> List[List[str]]:
    """Round-robin split into at most n non-empty shards (neighbouring parametrizations spread out)."""
    n = max(1, min(n, len(items)))
    return [list(items[i::n]) for i in range(n)] if items else []


def parse_outcomes(log_text: str) -> Dict[str, str]:
    """test id -> outcome from ``pytest -v`` output (what finished before any kill)."""
    outcomes = {}
    for line in log_text.splitlines():
        m = _OUTCOME.match(line.strip())
        if m:
            outcomes[m["node"]] = m["outcome"]
    return outcomes


def parse_junit(path: Path) -> Dict[str, str]:
    """test id -> outcome from a junit XML file (empty if missing or unreadable)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    outcomes = {}
    for case in root.iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        node = f"{module}.py::{case.get('name')}"
        if case.find("failure") is not None:
            outcomes[node] = "FAILED"
        elif case.find("error") is not None:
            outcomes[node] = "ERROR"
        elif case.find("skipped") is not None:
            outcomes[node] = "SKIPPED"
        else:
            outcomes[node] = "PASSED"
    return outcomes


def summarise_outcomes(outcomes: Dict[str, str], expected: int) -> dict:
    counts: Dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    bad = sorted(node for node, o in outcomes.items() if o in ("FAILED", "ERROR"))
    return {"collected": expected, "finished": len(outcomes), "counts": counts, "failures": bad[:50]}


# ------------------------------------------------------------------------------------- benchmarks


def load_benchmarks(path: Path, step: str) -> List[dict]:
    """Rows of a pytest-benchmark JSON file (empty if missing)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    rows = []
    for b in data.get("benchmarks", []):
        stats = b.get("stats", {})
        rows.append({
            "step": step, "group": b.get("group") or "", "name": b.get("name", ""),
            "median_s": stats.get("median"), "min_s": stats.get("min"), "mean_s": stats.get("mean"),
            "rounds": stats.get("rounds"), "extra_info": b.get("extra_info", {}),
        })  # fmt: skip
    return rows


def exp_bound_per_s(env_info: dict) -> Optional[float]:
    """MUFU ex2 throughput of the GPU (exps per second), from its SM count and max SM clock."""
    sms, mhz = env_info.get("sm_count"), env_info.get("max_sm_clock_mhz")
    if not sms or not mhz:
        return None
    return float(sms) * EX2_PER_SM_PER_CLOCK * float(mhz) * 1e6


def exp_bound_rows(benchmarks: List[dict], bound: Optional[float]) -> List[dict]:
    """Benchmarks that report ``extra_info.exp_count``: achieved exp rate and time vs the exp bound."""
    rows = []
    for b in benchmarks:
        count = b["extra_info"].get("exp_count")
        if not count or not b["median_s"]:
            continue
        row = {"name": b["name"], "group": b["group"], "median_ms": b["median_s"] * 1e3,
               "exp_per_s": count / b["median_s"]}  # fmt: skip
        if bound:
            row.update(bound_ms=count / bound * 1e3, of_bound=count / bound / b["median_s"])
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------- the run


class GpuCheck:
    def __init__(self, out: Path, dry_run: bool, budget_s: float, shards: Optional[int], python: str):
        self.out = out
        self.logs = out / "logs"
        self.dry_run = dry_run
        self.python = python
        # a dry run times nothing and must not fail on a slow, shared CI machine: looser limits
        slack = DRY_RUN_SLACK if dry_run else 1
        self.budget = Budget(budget_s * slack, {k: v * slack for k, v in step_timeouts().items()})
        self.shards = shards
        self.results: List[StepResult] = []
        self.env_info: dict = {}
        self.tests: dict = {}
        self.benchmarks: List[dict] = []

    # each step returns its StepResult; none raises
    def _record(self, result: StepResult) -> StepResult:
        self.results.append(result)
        mark = {"ok": "ok", "dry-run": "dry-run"}.get(result.status, result.status.upper())
        print(f"[gpu_check] {result.name:<24} {mark:<8} {result.seconds:6.1f} s  (limit {result.timeout_s:.0f} s)",
              flush=True)  # fmt: skip
        return result

    def _run(self, name: str, argv: Sequence[str], env_extra: Optional[dict] = None) -> StepResult:
        limit = self.budget.limit(name)
        log = self.logs / f"{name}.log"
        if limit <= 1:
            return StepResult(name, "skipped", 0.0, limit, None, " ".join(argv), "", {"reason": "no time left"})
        rc, seconds = run_logged(argv, log, limit, child_env(env_extra))
        status = "timeout" if rc is None else ("ok" if rc == 0 else "failed")
        return StepResult(name, status, seconds, limit, rc, " ".join(argv), str(log))

    def environment(self) -> None:
        result = self._run("environment", [self.python, "-c", _PROBE])
        self.env_info = parse_probe(read_log(result.log))
        if result.status == "ok" and not self.env_info:
            result.status = "failed"
        result.summary = {**result.summary, **self.env_info}
        self._record(result)

    def build(self) -> None:
        argv = build_command(self.python)
        env_extra = build_env(self.env_info)
        shown = " ".join(f"{k}={v}" for k, v in env_extra.items()) + " " + " ".join(argv)
        if self.dry_run:
            log = self.logs / "build.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"dry run: would run (in {REPO})\n$ {shown}\n")
            print(f"[gpu_check] build (dry run): {shown}", flush=True)
            self._record(StepResult("build", "dry-run", 0.0, self.budget.limit("build"), None, shown, str(log),
                                    {"env": env_extra}))  # fmt: skip
            return
        result = self._run("build", argv, env_extra)
        result.command = shown
        result.summary.update(env=env_extra)
        self._record(result)

    def import_check(self) -> None:
        result = self._run("import", [self.python, "-c", _IMPORT_CHECK])
        text = read_log(result.log)
        found = [line for line in text.splitlines() if line.startswith("GPU_CHECK_IMPORT ")]
        result.summary.update(json.loads(found[-1].split(" ", 1)[1]) if found else {})
        if result.status == "ok" and not self.dry_run:
            missing = [k for k in ("cuda", "cuda_kernels", "triton") if not result.summary.get(k)]
            if missing:
                result.status = "failed"
                result.summary["missing"] = missing
        self._record(result)

    def gpu_tests(self) -> None:
        start = time.monotonic()
        name = "gpu-tests"
        limit = self.budget.limit(name)
        if limit <= 1:
            self._record(StepResult(name, "skipped", 0.0, limit, None, "", "", {"reason": "no time left"}))
            return
        pytest = [self.python, "-m", "pytest", "-p", "no:cacheprovider"]
        # one collection: the GPU files, then the tests marked gpu elsewhere
        collect_log = self.logs / "gpu-tests-collect.log"
        marked_log = self.logs / "gpu-tests-collect-marked.log"
        files = [f for f in GPU_TEST_FILES if (REPO / f).exists()]
        others = [f"--ignore={f}" for f in files]
        (rc1, _), (rc2, _) = run_parallel(
            [(pytest + ["--collect-only", "-q", *files], collect_log),
             (pytest + ["--collect-only", "-q", "-m", "gpu", "tests", *others], marked_log)],
            limit, child_env(),
        )  # fmt: skip
        text, marked_text = read_log(str(collect_log)), read_log(str(marked_log))
        nodes = list(dict.fromkeys(collected_node_ids(text) + collected_node_ids(marked_text)))
        summary = {"collected": len(nodes), "files": files}
        # pytest exits 5 when nothing is selected by -m gpu: not an error
        collect_ok = rc1 == 0 and rc2 in (0, 5) and nodes
        if self.dry_run or not collect_ok:
            status = "failed" if not collect_ok else "ok"
            if rc1 is None or rc2 is None:
                status = "timeout"
            self._record(StepResult(name, status, time.monotonic() - start, limit, rc1 if rc1 else rc2,
                                    " ".join(pytest + ["--collect-only", "-q", *files]), str(collect_log), summary))  # fmt: skip
            self.tests = summary
            return
        n = self.shards or max(1, min(MAX_SHARDS, (os.cpu_count() or 2) // 2))
        shards = shard(nodes, n)
        threads = str(max(1, (os.cpu_count() or 1) // len(shards)))
        env = child_env({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        procs = []
        for i, ids in enumerate(shards):
            log = self.logs / f"gpu-tests-shard{i}.log"
            junit = self.out / f"gpu-tests-shard{i}.xml"
            argv = pytest + ["-v", "-rfE", f"--junitxml={junit}", *ids]
            out = open(log, "w")
            out.write(f"$ pytest ... {len(ids)} tests\n")
            out.flush()
            procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                           start_new_session=True), out, log, junit))  # fmt: skip
        timed_out = False
        for proc, out, _, _ in procs:
            remaining = limit - (time.monotonic() - start)
            try:
                proc.wait(timeout=max(remaining, 0.1))
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                out.write(f"\n[gpu_check] killed after the step's time limit of {limit:.0f} s\n")
            out.close()
        outcomes: Dict[str, str] = {}
        for proc, _, log, junit in procs:
            outcomes.update(parse_outcomes(read_log(str(log))))
            outcomes.update(parse_junit(junit))
        summary.update(summarise_outcomes(outcomes, len(nodes)))
        summary["shards"] = len(shards)
        failed = any(p.returncode not in (0, None) for p, *_ in procs) or summary["failures"]
        status = "timeout" if timed_out else ("failed" if failed else "ok")
        self.tests = summary
        self._record(StepResult(name, status, time.monotonic() - start, limit, None,
                                f"{len(shards)} pytest shards over {len(nodes)} tests", str(self.logs), summary))  # fmt: skip

    def benchmark(self, bench: Benchmark) -> None:
        json_out = self.out / f"{bench.name}.json"
        argv = [self.python, "-m", "pytest", "-p", "no:cacheprovider", bench.path, "-q"]
        argv += ["-k", bench.select] if bench.select else []
        if self.dry_run:
            argv += ["--collect-only"]
        else:
            argv += [*BENCH_OPTIONS, f"--benchmark-json={json_out}"]
        result = self._run(bench.name, argv)
        text = read_log(result.log)
        if self.dry_run:
            result.summary.update(collected=len(collected_node_ids(text)))
            if result.status == "ok" and not result.summary["collected"]:
                result.status = "failed"
        else:
            rows = load_benchmarks(json_out, bench.name)
            self.benchmarks += rows
            result.summary.update(benchmarks=len(rows), what=bench.what)
            if result.status == "ok" and not rows:
                result.status = "failed"  # everything skipped: no GPU, or a missing dependency
        self._record(result)

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        started = time.time()
        self.environment()
        self.build()
        self.import_check()
        self.gpu_tests()
        for bench in BENCHMARKS:
            self.benchmark(bench)
        report = make_report(self, started)
        write_reports(report, self.out)
        print(f"[gpu_check] reports: {self.out / 'gpu_check.json'}, {self.out / 'gpu_check.md'}", flush=True)
        bad = [r.name for r in self.results if r.status not in ("ok", "dry-run")]
        if bad:
            print(f"[gpu_check] steps not ok: {', '.join(bad)}", file=sys.stderr)
        return 1 if bad else 0


# ------------------------------------------------------------------------------------- reports


def make_report(check: GpuCheck, started: float) -> dict:
    bound = exp_bound_per_s(check.env_info)
    return {
        "dry_run": check.dry_run,
        "started_unix": started,
        "seconds": round(time.time() - started, 1),
        "budget_s": check.budget.total_s,
        "environment": check.env_info,
        "steps": [dataclasses.asdict(r) for r in check.results],
        "tests": check.tests,
        "benchmarks": check.benchmarks,
        "exp_bound_per_s": bound,
        "exp_bound": exp_bound_rows(check.benchmarks, bound),
    }


def _fmt_ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def render_markdown(report: dict) -> str:
    env = report.get("environment", {})
    title = "GPU check (dry run)" if report.get("dry_run") else "GPU check"
    lines = [f"# {title}", ""]
    machine = env.get("gpu") or "no GPU"
    lines.append(
        f"Machine: {machine} (sm {env.get('capability', '-')}, {env.get('sm_count', '-')} SMs, "
        f"max SM clock {env.get('max_sm_clock_mhz', '-')} MHz), {env.get('cores', '-')} cores; "
        f"Python {env.get('python', '-')}, torch {env.get('torch', '-')} (CUDA {env.get('torch_cuda', '-')}), "
        f"triton {env.get('triton', '-')}, transformers {env.get('transformers', '-')}, nvcc {env.get('nvcc', '-')}."
    )
    lines += ["", f"Total {report.get('seconds', 0):.0f} s (budget {report.get('budget_s', 0):.0f} s).", ""]
    lines += ["## Steps", "", "| step | status | seconds | limit s | log |", "|---|---|---:|---:|---|"]
    for s in report["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['timeout_s']:.0f} | {Path(s['log']).name} |")
    tests = report.get("tests") or {}
    if tests:
        counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(tests.get("counts", {}).items())) or "none run"
        lines += ["", "## GPU tests", "", f"{tests.get('collected', 0)} collected; {counts}."]
        for node in tests.get("failures", []):
            lines.append(f"- FAILED {node}")
    groups: Dict[str, List[dict]] = {}
    for b in report.get("benchmarks", []):
        groups.setdefault(b["group"] or b["step"], []).append(b)
    if groups:
        lines += ["", "## Benchmarks", "", "Median of short rounds (pytest-benchmark); x = median / fastest median in the group."]
        for group, rows in groups.items():
            fastest = min((r["median_s"] for r in rows if r["median_s"]), default=None)
            lines += ["", f"### {group}", "", "| benchmark | median ms | min ms | rounds | x |", "|---|---:|---:|---:|---:|"]
            for r in rows:
                ratio = f"{r['median_s'] / fastest:.2f}" if fastest and r["median_s"] else "-"
                lines.append(f"| {r['name']} | {_fmt_ms(r['median_s'])} | {_fmt_ms(r['min_s'])} | {r['rounds']} | {ratio} |")
    if report.get("exp_bound"):
        bound = report.get("exp_bound_per_s")
        head = f"{bound:.3g} exp/s = SMs x {EX2_PER_SM_PER_CLOCK} ex2/clock x max SM clock" if bound else "unknown (no SM clock)"
        lines += ["", "## Against the exp bound", "", f"Bound: {head}.", "",
                  "| benchmark | median ms | exp/s | bound ms | of bound |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        for r in report["exp_bound"]:
            lines.append(
                f"| {r['name']} | {r['median_ms']:.3f} | {r['exp_per_s']:.3g} | "
                f"{r.get('bound_ms', float('nan')):.3f} | {r.get('of_bound', float('nan')):.2f} |"
            )
    return "\n".join(lines) + "\n"


def write_reports(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu_check.md").write_text(render_markdown(report))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="report directory (created)")
    parser.add_argument("--dry-run", action="store_true", help="only the GPU-independent steps (CI)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="total seconds for all steps")
    parser.add_argument("--shards", type=int, default=None, help=f"parallel pytest shards (default: cores / 2, at most {MAX_SHARDS})")
    parser.add_argument("--python", default=sys.executable, help="interpreter with torch (default: this one)")
    args = parser.parse_args(argv)
    if args.budget < sum(step_timeouts().values()):
        parser.error(f"--budget must be at least {sum(step_timeouts().values())} s (the steps' time limits)")
    if args.shards is not None and args.shards < 1:
        parser.error("--shards must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    check = GpuCheck(args.out.resolve(), args.dry_run, args.budget, args.shards, args.python)
    return check.run()


if __name__ == "__main__":
    sys.exit(main())
