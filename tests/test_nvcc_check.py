"""The nvcc provider of check-kernels: every CUDA kernel compiles for sm_80 and sm_90 with no spill.

Runs nvcc on the real sources (no GPU needed); skipped where nvcc is missing."""
import pytest

from vtprune_kernels.kernel_check import nvcc

pytestmark = pytest.mark.skipif(nvcc.find_nvcc() is None, reason="needs nvcc (CUDA toolkit)")

DTYPES = ("float", "__half", "__nv_bfloat16")
# Every kernel template with every score dtype must be instantiated (explicit instantiation in the .cu).
EXPECTED = (
    {"region_topk_mask.cu:build_region_segments_kernel"}
    | {f"region_topk_mask.cu:region_topk_select_kernel<{t}, {n}>" for t in DTYPES for n in (32, 256)}
    | {f"window_argmax_mask.cu:window_argmax_{kind}_kernel<{t}>" for t in DTYPES for kind in ("thread", "warp")}
    | {f"cosine_dedup_mask.cu:cosine_dedup_kernel<{t}>" for t in DTYPES}
    | {f"cosine_gram.cu:cosine_{kind}_kernel<{t}>" for t in DTYPES for kind in ("norms", "gram")}
    | {f"allocate_budget.cu:allocate_budget_kernel<{t}>" for t in DTYPES + ("double",)}
)


@pytest.fixture(scope="module")
def rows():
    return nvcc.collect((80, 90))


def test_every_kernel_compiles_without_spills(rows):
    bad = [r for r in rows if not r.ok]
    assert not bad, "\n".join(f"{r.kernel} sm_{r.arch}: error={r.error} spills={r.spill_bytes}" for r in bad)
    for r in rows:
        assert r.registers is not None and 0 < r.registers <= 255, r
        assert r.spill_bytes == 0, r
        assert r.shared_bytes is not None and r.shared_bytes < 48 * 1024, r  # static shared memory


def test_every_instantiation_is_reported_for_both_archs(rows):
    for arch in (80, 90):
        names = {r.kernel for r in rows if r.arch == arch}
        missing = EXPECTED - names
        assert not missing, f"sm_{arch}: missing {sorted(missing)}"


def test_parser_reads_registers_spills_and_smem():
    # The layout ptxas -v prints (CUDA 12-13), with one spilling kernel.
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_80'
ptxas info    : Function properties for _Z3fooPf
    8 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 4096 bytes smem, 360 bytes cmem[0]
ptxas info    : Compiling entry function '_Z3barv' for 'sm_90'
ptxas info    : Function properties for _Z3barv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers
"""
    foo, bar = nvcc.parse_ptxas(log, "x.cu")
    assert (foo.kernel, foo.arch, foo.registers, foo.spill_bytes, foo.shared_bytes) == ("x.cu:foo", 80, 255, 20, 4096)
    assert not foo.ok
    assert (bar.kernel, bar.arch, bar.registers, bar.spill_bytes, bar.shared_bytes) == ("x.cu:bar", 90, 12, 0, 0)
    assert bar.ok


def test_short_names_drop_namespaces_and_arguments():
    text = "void vtprune::cuda::(anonymous namespace)::k<float, 256>(float const*, long const*, int)"
    assert nvcc._short_name(text) == "k<float, 256>"
    assert nvcc._short_name("plain_kernel(int*)") == "plain_kernel"


def test_compile_error_becomes_an_error_row(tmp_path):
    broken = tmp_path / "broken.cu"
    broken.write_text("__global__ void k(int* p) { p[0] = undefined_name; }\n")
    rows = nvcc.collect((80, 90), sources=[broken])
    assert [r.arch for r in rows] == [80, 90]
    assert all(r.error and "undefined_name" in r.error and not r.ok for r in rows)
