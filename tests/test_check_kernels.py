"""check-kernels, Triton provider: ahead-of-time compilation of the shipped kernel configurations."""
import pytest

from vtprune_kernels.kernel_check import sass, triton_aot
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
    """The row pass and both column-pass kinds (one program per head; every head) of InternViT's
    bf16 d=64 for sm_90 and sm_80: no spill, and at most 8 SASS instructions per exp in the
    interior-tile loop at sm_90 (what the MUFU allows: 128 issue slots / 16 ex2 per SM per clock)."""
    wanted = [
        configs.row_lse_variant(64, "bfloat16"),
        configs.column_scores_variant(64, "bfloat16", configs.column_mode("mean", "mean")),
        configs.column_scores_variant(64, "float16", configs.column_mode("max", "mean")),
    ]
    rows = triton_aot.collect(archs=(80, 90), variants=wanted, workers=2)
    assert [(r.kernel, r.arch) for r in rows] == [(f"triton/{v.name}", a) for v in wanted for a in (80, 90)]
    for row in rows:
        assert row.error is None, row
        assert 0 < row.registers <= 255 and row.spill_bytes == 0 and row.shared_bytes > 0
        assert row.ok
        assert row.instr_per_ex2 is not None and row.instr_per_ex2 > 2  # at least the FFMA and ex2
        if row.arch == 90:
            assert row.instr_per_ex2 <= 8, row


# A cut-down cuobjdump -sass listing: a prologue, a masked loop (more instructions per ex2), the
# interior loop, an outer loop around both, the tail self-branch every kernel ends with.
SASS = """
        code for sm_90a
                Function : column_scores_kernel
        /*0000*/                   LDC R1, c[0x0][0x28] ;                    /* 0x00000a00ff017b82 */
        /*0010*/                   MUFU.EX2 R2, R2 ;                          /* 0x0000000200027308 */
        /*0020*/                   ISETP.GT.AND P0, PT, R3, R4, PT ;
        /*0030*/                   FSEL R5, R5, -INF , P0 ;
        /*0040*/                   FFMA R5, R5, R6, -R7 ;
        /*0050*/                   MUFU.EX2 R5, R5 ;
        /*0060*/                   FADD R8, R8, R5 ;
        /*0070*/              @!P1 BRA 0x20 ;
        /*0080*/                   FFMA R5, R5, R6, -R7 ;
        /*0090*/                   MUFU.EX2 R5, R5 ;
        /*00a0*/                   NOP ;
        /*00b0*/                   FADD R8, R8, R5 ;
        /*00c0*/              @!P2 BRA 0x80 ;
        /*00d0*/              @!P3 BRA 0x20 ;
        /*00e0*/                   EXIT ;
        /*00f0*/                   BRA 0xf0;
"""


def test_sass_exp_loop_is_the_leanest_innermost_loop():
    instructions = sass.parse(SASS)
    assert [i.opcode for i in instructions[:3]] == ["LDC", "MUFU.EX2", "ISETP.GT.AND"]
    assert instructions[7].branch_target == 0x20 and instructions[0].branch_target is None
    assert sorted(sass.loops(instructions)) == [(2, 7), (2, 13), (8, 12)]  # not the self-branch
    assert sass.exp_loop(instructions) == (8, 12)  # innermost, one ex2 each, fewest instructions
    assert sass.instructions_per_ex2(SASS) == 4.0  # FFMA, MUFU.EX2, FADD, BRA (the NOP not counted)
    assert sass.instructions_per_ex2(SASS.replace("MUFU.EX2", "MUFU.RCP")) is None


def test_unknown_variant_is_an_error_row():
    bogus = configs.Variant("row_lse", "float16", 64, configs.LaunchConfig(1, 1, 1, 1))
    (row,) = triton_aot.collect(archs=(90,), variants=[bogus], workers=1)
    assert isinstance(row, KernelReport) and row.error == "unknown variant" and not row.ok
