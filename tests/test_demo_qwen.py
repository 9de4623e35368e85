"""The demo on Qwen2.5-VL / Qwen3-VL: pictures from flattened patches, every method through a session,
and loading a local Qwen folder.

transformers builds the Qwen-VL processor with torchvision (its video processor), which has no CPU
build for this torch: here the session gets the inputs a processor would make (Qwen2-VL's image
processor, PIL backend, plus the prompt's placeholders), and ``load_checkpoint`` must say that
torchvision is missing. Where torchvision is installed the whole ``vtprune demo --model`` runs.
"""
import importlib.util
import types

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_models as tm
from vtprune_kernels.demo.byte_tokenizer import byte_tokenizer
from vtprune_kernels.demo.qwen_panels import patches_to_pixels
from vtprune_kernels.demo.sample_image import sample_image

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def _image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil()


def test_patches_to_pixels_inverts_the_processor_layout():
    rgb = np.random.default_rng(0).integers(0, 256, (84, 140, 3), dtype=np.uint8)  # 6 x 10 patches: no resize
    processor = _image_processor()
    out = processor(images=Image.fromarray(rgb), return_tensors="pt")
    pixels = patches_to_pixels(out["pixel_values"], out["image_grid_thw"][0], patch=14)
    mean, std = torch.tensor(processor.image_mean)[:, None, None], torch.tensor(processor.image_std)[:, None, None]
    want = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(pixels, want, atol=1e-5, rtol=1e-5)


def test_demo_session_runs_every_method_on_a_qwen_model():
    """One model suffices here (the integration tests cover both families): the session's Qwen
    plumbing (image stage arguments, token counts, panels from flattened patches)."""
    from vtprune_kernels.demo.session import DemoSession, run_session

    model = tm.qwen2_5_vl(depth=10)
    image_processor = _image_processor()
    pixels = image_processor(images=sample_image(112).resize((112, 84)), return_tensors="pt")
    grid = pixels["image_grid_thw"]
    assert grid.tolist() == [[1, 6, 8]]  # 3 x 4 = 12 merged tokens
    ids, mask, types_ = tm.qwen_prompts([[("image", grid[0].tolist())]])
    inputs = dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=types_, **pixels)
    processor = types.SimpleNamespace(tokenizer=byte_tokenizer(), image_processor=image_processor)
    session = DemoSession(model, processor, inputs, 12, repeats=1, max_new_tokens=2)
    baseline, results = run_session(session, ["vispruner", "hivtp", "ptp", "random", "uniform"], keep=3, progress=False)
    assert baseline.visual_tokens == 12
    by_name = {r.name: r for r in results}
    assert "PTP needs a vision tower with a [CLS] token" in by_name["PTP"].skipped
    for name in ("VisPruner", "HIVTP", "Random", "Uniform"):
        r = by_name[name]
        assert r.skipped is None, (name, r.skipped)
        assert len(r.panels) == 1 and r.panels[0].keep.shape == (3, 4)
        assert int(r.panels[0].keep.sum()) == r.kept_tokens
    assert by_name["VisPruner"].kept_tokens == by_name["Random"].kept_tokens == by_name["Uniform"].kept_tokens == 3
    assert by_name["VisPruner"].score_s is not None
    assert len(session.input_panels()) == 1 and session.input_panels()[0].image.size == (112, 84)


def _save_checkpoint(path, build=tm.qwen2_5_vl):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    build(depth=10).save_pretrained(path)
    Qwen2VLImageProcessorPil().save_pretrained(path)
    byte_tokenizer().save_pretrained(path)


@pytest.mark.skipif(HAS_TORCHVISION, reason="checks the message for a machine without torchvision")
@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_loading_a_qwen_folder_without_torchvision_says_so(tmp_path, name):
    from vtprune_kernels.demo.checkpoint import load_checkpoint
    from vtprune_kernels.demo.errors import DemoInputError

    _save_checkpoint(tmp_path, getattr(tm, name))
    with pytest.raises(DemoInputError, match=f"{name} processor with torchvision"):
        load_checkpoint(str(tmp_path))
