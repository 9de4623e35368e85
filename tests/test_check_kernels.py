"""check-kernels, Triton provider: ahead-of-time compilation of the shipped kernel configurations."""
import pytest

from vtprune_kernels.kernel_check import triton_aot
from vtprune_kernels.kernel_check.report import PROVIDERS, KernelReport
from vtprune_kernels.triton_kernels import configs

PTXAS_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'column_scores_kernel' for 'sm_90a'
ptxas info    : Function properties for column_scores_kernel
    24 bytes stack frame, 16 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 122 registers, used 1 barriers, 24 bytes cumulative stack size
"""


def test_parse_ptxas_log():
    assert triton_aot.parse_ptxas_log(PTXAS_LOG) == {"registers": 122, "spill_bytes": 24}
    with pytest.raises(RuntimeError, match="could not read"):
        triton_aot.parse_ptxas_log("ptxas info    : 0 bytes gmem\n")


def test_provider_is_registered():
    assert "vtprune_kernels.kernel_check.triton_aot" in PROVIDERS


def test_variants_are_unique_and_cover_every_mode_dtype_and_head_dim():
    variants = configs.all_variants()
    names = [v.name for v in variants]
    assert len(names) == len(set(names))
    # 3 dtypes x 3 head-dim buckets x (row_lse + 5 column modes)
    assert len(variants) == 3 * 3 * 6
    assert {v.block_d for v in variants} == {64, 128, 256}


def test_compiles_shipped_configurations_without_spills():
    """One row-lse and one column-pass variant (InternViT's bf16 d=64) for sm_90 and sm_80."""
    wanted = [
        configs.row_lse_variant(64, "bfloat16"),
        configs.column_scores_variant(64, "bfloat16", configs.column_mode("mean", "mean")),
    ]
    rows = triton_aot.collect(archs=(80, 90), variants=wanted, workers=2)
    assert [(r.kernel, r.arch) for r in rows] == [(f"triton/{v.name}", a) for v in wanted for a in (80, 90)]
    for row in rows:
        assert row.error is None, row
        assert 0 < row.registers <= 255 and row.spill_bytes == 0 and row.shared_bytes > 0
        assert row.ok


def test_unknown_variant_is_an_error_row():
    bogus = configs.Variant("row_lse", "float16", 64, configs.LaunchConfig(1, 1, 1, 1))
    (row,) = triton_aot.collect(archs=(90,), variants=[bogus], workers=1)
    assert isinstance(row, KernelReport) and row.error == "unknown variant" and not row.ok
