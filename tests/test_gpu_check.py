"""benchmarks/gpu_check.py (``make gpu-check``): its pieces that need no GPU.

The whole dry run (``make gpu-check DRY_RUN=1``) is its own step of ``make test``; here: the time
budget, the build command and environment, test collection parsing and sharding, outcome and
benchmark parsing, and the reports written from a run's results.
"""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gpu_check
_spec.loader.exec_module(gpu_check)


def test_step_limits_fit_the_default_budget_and_every_step_has_one():
    limits = gpu_check.step_timeouts()
    assert list(limits) == gpu_check.step_names()
    assert sum(limits.values()) <= gpu_check.DEFAULT_BUDGET_S <= 420  # 8 minutes on the lent GPU, start-up included
    assert all(v > 0 for v in limits.values())
    assert all((REPO / b.path).is_file() for b in gpu_check.BENCHMARKS)
    assert all((REPO / f).is_file() for f in gpu_check.GPU_TEST_FILES)


def test_budget_gives_unused_time_to_later_steps_and_keeps_theirs():
    now = [0.0]
    budget = gpu_check.Budget(100, {"a": 30, "b": 20, "c": 50}, clock=lambda: now[0])
    assert budget.limit("a") == 30  # the others are promised 70
    now[0] = 5  # a took 5 s of its 30
    assert budget.limit("b") == 45
    now[0] = 60  # b ran over what it was promised alone, not into c's share
    assert budget.limit("c") == 40
    now[0] = 101
    assert budget.limit("c") == 0
    with pytest.raises(ValueError, match="over the budget"):
        gpu_check.Budget(10, {"a": 6, "b": 6})


def test_build_command_uses_no_network_and_the_visible_gpu(monkeypatch):
    argv = gpu_check.build_command("/usr/bin/python3")
    assert argv[:4] == ["/usr/bin/python3", "-m", "pip", "install"]
    assert {"--no-build-isolation", "--no-deps", "--no-index", "-e"} <= set(argv)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.delenv("MAX_JOBS", raising=False)
    env = gpu_check.build_env({"capability": "9.0"})
    assert env["TORCH_CUDA_ARCH_LIST"] == "9.0" and int(env["MAX_JOBS"]) >= 1
    assert "TORCH_CUDA_ARCH_LIST" not in gpu_check.build_env({})  # no GPU seen: setup.py decides
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    monkeypatch.setenv("MAX_JOBS", "3")
    assert gpu_check.build_env({"capability": "9.0"}) == {"TORCH_CUDA_ARCH_LIST": "8.0;9.0", "MAX_JOBS": "3"}


def test_collection_parsing_and_shards():
    text = (
        "$ python -m pytest --collect-only -q tests/test_a.py\n"
        "tests/test_a.py::test_x[1-float16]\n"
        "tests/test_a.py::test_x[2-float16]\n"
        "tests/test_b.py::test_y\n"
        "\n=============== warnings summary ===============\n"
        "tests/test_b.py::test_y\n"
        "  /x/y.py:1: DeprecationWarning: old\n"
        "3 tests collected in 1.0s\n"
    )
    nodes = gpu_check.collected_node_ids(text)
    assert nodes == ["tests/test_a.py::test_x[1-float16]", "tests/test_a.py::test_x[2-float16]", "tests/test_b.py::test_y"]
    shards = gpu_check.shard(nodes, 2)
    assert shards == [[nodes[0], nodes[2]], [nodes[1]]]
    assert gpu_check.shard(nodes, 10) == [[n] for n in nodes]
    assert gpu_check.shard([], 4) == []


def test_outcomes_from_verbose_log_and_junit(tmp_path):
    log = (
        "tests/test_a.py::test_x[1] PASSED                [ 33%]\n"
        "tests/test_a.py::test_x[2] FAILED                [ 66%]\n"
        "tests/test_b.py::test_y SKIPPED (needs a CUDA device) [100%]\n"
    )
    outcomes = gpu_check.parse_outcomes(log)
    assert outcomes == {"tests/test_a.py::test_x[1]": "PASSED", "tests/test_a.py::test_x[2]": "FAILED",
                        "tests/test_b.py::test_y": "SKIPPED"}  # fmt: skip
    junit = tmp_path / "j.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase classname="tests.test_c" name="test_z"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_c" name="test_w"/></testsuite></testsuites>'
    )
    assert gpu_check.parse_junit(junit) == {"tests/test_c.py::test_z": "FAILED", "tests/test_c.py::test_w": "PASSED"}
    assert gpu_check.parse_junit(tmp_path / "missing.xml") == {}
    summary = gpu_check.summarise_outcomes({**outcomes, **gpu_check.parse_junit(junit)}, expected=6)
    assert summary["counts"] == {"PASSED": 2, "FAILED": 2, "SKIPPED": 1}
    assert summary["failures"] == ["tests/test_a.py::test_x[2]", "tests/test_c.py::test_z"]
    assert summary["collected"] == 6 and summary["finished"] == 5


def _benchmark_json(path):
    path.write_text(json.dumps({"benchmarks": [
        {"group": "g", "name": "two", "stats": {"median": 2e-3, "min": 1.9e-3, "mean": 2.1e-3, "rounds": 5},
         "extra_info": {"exp_count": 4e9}},
        {"group": "g", "name": "one", "stats": {"median": 1e-3, "min": 0.9e-3, "mean": 1.1e-3, "rounds": 7},
         "extra_info": {}},
    ]}))  # fmt: skip


def test_benchmark_rows_and_exp_bound(tmp_path):
    _benchmark_json(tmp_path / "b.json")
    rows = gpu_check.load_benchmarks(tmp_path / "b.json", "bench-x")
    assert [r["name"] for r in rows] == ["two", "one"] and rows[0]["step"] == "bench-x"
    assert gpu_check.load_benchmarks(tmp_path / "none.json", "bench-x") == []
    bound = gpu_check.exp_bound_per_s({"sm_count": 132, "max_sm_clock_mhz": 1980})
    assert bound == pytest.approx(132 * 16 * 1.98e9)
    assert gpu_check.exp_bound_per_s({"sm_count": 132}) is None
    (row,) = gpu_check.exp_bound_rows(rows, 4e12)
    assert row["exp_per_s"] == pytest.approx(2e12) and row["of_bound"] == pytest.approx(0.5)
    assert row["bound_ms"] == pytest.approx(1.0)
    assert "bound_ms" not in gpu_check.exp_bound_rows(rows, None)[0]


def test_reports_from_a_run(tmp_path):
    _benchmark_json(tmp_path / "b.json")
    check = gpu_check.GpuCheck(tmp_path / "out", dry_run=False, budget_s=gpu_check.DEFAULT_BUDGET_S, shards=2,
                               python=sys.executable)  # fmt: skip
    check.env_info = {"gpu": "NVIDIA H200", "capability": "9.0", "sm_count": 132, "max_sm_clock_mhz": 1980.0}
    check.results = [
        gpu_check.StepResult("build", "ok", 34.0, 75, 0, "pip install ...", str(tmp_path / "logs/build.log")),
        gpu_check.StepResult("gpu-tests", "failed", 80.0, 120, None, "2 shards", str(tmp_path / "logs")),
        gpu_check.StepResult("bench-towers", "timeout", 50.0, 50, None, "pytest ...", str(tmp_path / "logs/t.log")),
    ]
    check.tests = {"collected": 3, "counts": {"PASSED": 2, "FAILED": 1}, "failures": ["tests/test_a.py::test_x"]}
    check.benchmarks = gpu_check.load_benchmarks(tmp_path / "b.json", "bench-x")
    report = gpu_check.make_report(check, started=0.0)
    gpu_check.write_reports(report, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [s["status"] for s in data["steps"]] == ["ok", "failed", "timeout"]
    assert data["exp_bound"][0]["name"] == "two"
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "NVIDIA H200" in md and "| bench-towers | timeout |" in md
    assert "FAILED tests/test_a.py::test_x" in md
    assert "| one | 1.000 | 0.900 | 7 | 1.00 |" in md and "| two | 2.000 | 1.900 | 5 | 2.00 |" in md
    assert "## Against the exp bound" in md


def test_arguments():
    args = gpu_check.parse_args(["--out", "x", "--dry-run"])
    assert args.dry_run and args.out == Path("x") and args.budget == gpu_check.DEFAULT_BUDGET_S
    with pytest.raises(SystemExit):
        gpu_check.parse_args([])  # --out is required
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--out", "x", "--budget", "10"])
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--out", "x", "--shards", "0"])


def test_steps_that_fail_time_out_or_find_no_time_are_reported(tmp_path):
    rc, _ = gpu_check.run_logged([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "a.log", 30)
    assert rc == 3
    rc, seconds = gpu_check.run_logged([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "b.log", 0.5)
    assert rc is None and seconds < 20 and "killed after" in (tmp_path / "b.log").read_text()
    check = gpu_check.GpuCheck(tmp_path / "out", dry_run=True, budget_s=gpu_check.DEFAULT_BUDGET_S, shards=1,
                               python=sys.executable)  # fmt: skip
    check.budget.deadline = check.budget.clock() - 1  # the budget is spent
    check.environment()
    check.import_check()
    check.gpu_tests()
    check.benchmark(gpu_check.BENCHMARKS[0])
    assert [(r.name, r.status) for r in check.results] == [
        ("environment", "skipped"), ("import", "skipped"), ("gpu-tests", "skipped"), (gpu_check.BENCHMARKS[0].name, "skipped")
    ]
    assert check.env_info == {} and check.results[0].summary == {"reason": "no time left"}
