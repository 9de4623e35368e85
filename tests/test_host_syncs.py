"""No host synchronisation in the hot path: the methods' ``select`` never waits for the device, and a
pruning call through the integration waits exactly once (twice for PTP, by design; see
integrations/handle.py).

On the CPU, ``HostSyncDetector`` flags the torch calls that would synchronise on CUDA; with a GPU,
``torch.cuda.set_sync_debug_mode`` checks the real thing.
"""
import pytest
import torch

import tiny_models as tm
from host_sync_detector import CudaSyncRecorder, HostSyncDetector
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply
from vtprune_kernels.integrations import handle as handle_module
from vtprune_kernels.integrations.host_reads import HostReads

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


def _method_calls(device):
    """name -> a call of that method's select on ``device`` (random scores, 6x6 grid, batch 3)."""
    g = torch.Generator().manual_seed(0)
    scores, features = torch.rand(3, 36, generator=g).to(device), torch.randn(3, 36, 8, generator=g).to(device)
    cls_regions = torch.randn(4, 16, generator=g).to(device)
    b, c = torch.rand(4, 9, generator=g).to(device), torch.rand(4, 9, generator=g).to(device)
    # a host mask of the tokens that may be kept, one rectangle per row (as LLaVA-NeXT passes it)
    valid = torch.zeros(3, 6, 6, dtype=torch.bool)
    valid[0], valid[1, 1:4], valid[2, :, 2:3] = True, True, True
    valid = valid.reshape(3, 36)
    return {
        "vispruner": lambda: VisPruner(keep=10, step=2).select(scores, features),
        "hivtp": lambda: HIVTP(layers=(0,)).select(scores, (6, 6)),
        "ptp": lambda: PTP().select(cls_regions, b, c, validate=False),
        "ptp-default": lambda: PTP().select(cls_regions, b, c),  # validates on the CPU only
        "random": lambda: Random(keep=10, seed=1).select((6, 6), 3, device=device),
        "uniform": lambda: Uniform(keep=10).select((6, 6), 3, device=device),
        "vispruner-valid": lambda: VisPruner(keep=10, step=2).select(scores, features, valid=valid),
        "hivtp-valid": lambda: HIVTP(layers=(0,)).select(scores, (6, 6), valid=valid),
        "random-valid": lambda: Random(keep=10, seed=1).select((6, 6), 3, device=device, valid=valid),
        "uniform-valid": lambda: Uniform(keep=10).select((6, 6), 3, device=device, valid=valid),
    }


def test_detector_flags_the_syncing_patterns():
    t = torch.tensor([1.0, 0.0, 2.0])
    with HostSyncDetector(package_only=False) as detector:
        bool(t.any())
        t.nonzero()
        t[t > 0]
        torch.nonzero_static(t, size=2)
        t.index_select(0, torch.tensor([0, 2]))
    assert [s.op for s in detector.syncs] == ["aten._local_scalar_dense.default", "aten.nonzero.default", "aten.index.Tensor"]


WITH_VALID = ["vispruner-valid", "hivtp-valid", "random-valid", "uniform-valid"]


@pytest.mark.parametrize("name", ["vispruner", "hivtp", "ptp", "random", "uniform", *WITH_VALID])
def test_method_select_reads_no_device_data(name):
    call = _method_calls("cpu")[name]
    with HostSyncDetector() as detector:
        keep = call()
    assert keep.dtype == torch.bool
    assert detector.syncs == []


def test_ptp_validates_its_weights_only_where_it_is_free_or_asked():
    # CPU tensors: the C++ kernels check the values themselves, so the wrapper reads nothing
    calls = _method_calls("cpu")
    with HostSyncDetector() as detector:
        calls["ptp-default"]()
    assert not any(s.op == "aten._local_scalar_dense.default" for s in detector.syncs)
    with pytest.raises(ValueError, match="weights"):
        PTP().select(torch.full((3, 8), float("nan")), torch.rand(3, 4), torch.rand(3, 4))


@requires_cuda
def test_ptp_unvalidated_nan_weights_give_equal_budgets_on_cuda():
    # the CUDA kernel does not check values (no sync): NaN weights fall back to equal shares
    nan = torch.full((3, 8), float("nan"), device="cuda")
    keep = PTP(prune_ratio=0.5).select(nan, torch.rand(3, 4, device="cuda"), torch.rand(3, 4, device="cuda"))
    assert keep.sum(1).tolist() == [2, 2, 2]


@requires_cuda
@pytest.mark.parametrize("name", ["vispruner", "hivtp", "ptp", "ptp-default", "random", "uniform", *WITH_VALID])
def test_method_select_never_syncs_on_cuda(name):
    call = _method_calls("cuda")[name]
    expected = call()  # warm-up (kernel loading, allocator growth)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        keep = call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(keep, expected)


# --- the integration: one host read per call ---------------------------------------------------------


class _ReadsAsIfOnTheGpu(HostReads):
    """HostReads that treats the prompt as device-resident (as with CUDA inputs; image sizes and grids
    stay on the host, as a processor returns them) and, instead of synchronising, disarms the
    detector: what runs before the first read is the device phase, where nothing may read device data."""

    detector: HostSyncDetector = None
    HOST_SIDE = ("image_sizes", "image_grid_thw", "video_grid_thw")

    def __init__(self, **prompt):
        host_side = {name: prompt.pop(name, None) for name in self.HOST_SIDE}
        super().__init__(**prompt)
        self._prompt.update(host_side)

    @staticmethod
    def _on_device(t):
        return True

    def _synchronise(self, device):
        self.detector.armed = False


def _calls():
    """(family, method name, model builder, method, inputs builder, expected synchronisations)."""
    llava_ids, llava_mask = tm.make_prompts([[25], [25]])
    intern_ids, intern_mask = tm.make_prompts([[27], [9]], wrap_images=True)
    next_sizes = torch.tensor([[70, 120], [40, 40]])

    def llava_inputs(model):
        return dict(input_ids=llava_ids, attention_mask=llava_mask, pixel_values=tm.pixels(2, 70))

    def internvl_inputs(model):
        return dict(input_ids=intern_ids, attention_mask=intern_mask, pixel_values=tm.pixels(4, 84, seed=7))

    def next_inputs(model):
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        cfg = model.config
        tiles = [image_size_to_num_patches(s, cfg.image_grid_pinpoints, cfg.vision_config.image_size) for s in next_sizes]
        px = tm.pixels(2, 42, tiles=max(tiles), seed=3)
        with torch.no_grad():
            full = model.model.get_image_features(pixel_values=px, image_sizes=next_sizes).pooler_output
        ids, mask = tm.make_prompts([[f.shape[0]] for f in full])
        return dict(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=next_sizes)

    def next_video_inputs(model):
        """One image (LLaVA-NeXT tiles) in the first row, a 2-frame video in the second."""
        px, sizes = tm.pixels(1, 84, tiles=3, seed=4), torch.tensor([[84, 160]])
        videos = tm.pixels(1, 84, tiles=2, seed=5)
        with torch.no_grad():
            (image,) = model.model.get_image_features(pixel_values=px, image_sizes=sizes).pooler_output
        ids, mask = tm.make_prompts([[image.shape[0]], [18]])
        ids[1][ids[1] == tm.IMAGE_TOKEN] = tm.VIDEO_TOKEN
        return dict(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=sizes, pixel_values_videos=videos)

    def qwen_inputs(model):
        images, videos = [(1, 6, 10), (1, 4, 6)], [(2, 4, 4)]
        rows = [[("image", images[0])], [("image", images[1]), ("video", videos[0])]]
        ids, mask, types = tm.qwen_prompts(rows, per_frame_runs=type(model).__name__.startswith("Qwen3"))
        return dict(
            input_ids=ids, attention_mask=mask, mm_token_type_ids=types, pixel_values=tm.qwen_pixels(images),
            image_grid_thw=torch.tensor(images), pixel_values_videos=tm.qwen_pixels(videos), video_grid_thw=torch.tensor(videos),
        )

    def paddle_inputs(model):
        images = [(1, 6, 10), (1, 4, 6)]
        ids, mask, types = tm.qwen_prompts([[("image", images[0])], [("image", images[1])]])
        return dict(
            input_ids=ids, attention_mask=mask, mm_token_type_ids=types, pixel_values=tm.paddle_pixels(images),
            image_grid_thw=torch.tensor(images),
        )

    return [
        ("llava", "vispruner", tm.llava_clip, lambda: VisPruner(keep=7, step=2), llava_inputs, 1),
        ("llava", "hivtp", tm.llava_clip, lambda: HIVTP(layers=(0, 1)), llava_inputs, 1),
        ("llava", "random", tm.llava_clip, lambda: Random(keep=6), llava_inputs, 1),
        ("llava-next", "vispruner", tm.llava_next, lambda: VisPruner(keep=4, step=2), next_inputs, 1),
        ("llava-next", "hivtp", tm.llava_next, lambda: HIVTP(layers=(0, 1)), next_inputs, 1),  # on the unpadded rectangles
        ("llava-next", "uniform", tm.llava_next, lambda: Uniform(keep=4), next_inputs, 1),
        ("llava-next", "random", tm.llava_next, lambda: Random(keep=4), next_inputs, 1),
        ("llava-next-video", "vispruner", tm.llava_next_video, lambda: VisPruner(keep=4, step=2), next_video_inputs, 1),
        ("internvl", "uniform", tm.internvl, lambda: Uniform(keep=4), internvl_inputs, 1),
        ("internvl", "hivtp", tm.internvl, lambda: HIVTP(layers=(0, 1), region_ratio=0.5), internvl_inputs, 1),
        ("internvl", "ptp", tm.internvl, lambda: PTP(vision_layer=1, llm_layer=1), internvl_inputs, 2),
        ("qwen2_5_vl", "vispruner", tm.qwen2_5_vl, lambda: VisPruner(keep=3, step=2), qwen_inputs, 1),
        ("qwen2_5_vl", "hivtp", tm.qwen2_5_vl, lambda: HIVTP(layers=(1, 3)), qwen_inputs, 1),
        ("qwen2_vl", "uniform", tm.qwen2_vl, lambda: Uniform(keep=2), qwen_inputs, 1),
        ("qwen3_vl", "random", tm.qwen3_vl, lambda: Random(keep=2), qwen_inputs, 1),
        ("paddleocr_vl", "vispruner", tm.paddleocr_vl, lambda: VisPruner(keep=3, step=2), paddle_inputs, 1),
    ]


CALLS = _calls()
_MODELS = {}


def _model(build):
    if build not in _MODELS:
        _MODELS[build] = build()
    return _MODELS[build]


@pytest.mark.parametrize("case", CALLS, ids=[f"{c[0]}-{c[1]}" for c in CALLS])
def test_integration_reads_device_data_once_per_call(case, monkeypatch):
    family, _, build, make_method, make_inputs, expected = case
    model = _model(build)
    inputs = make_inputs(model)
    detector = HostSyncDetector()
    monkeypatch.setattr(_ReadsAsIfOnTheGpu, "detector", detector)
    monkeypatch.setattr(handle_module, "HostReads", _ReadsAsIfOnTheGpu)
    with apply(model, make_method()) as handle, torch.no_grad():
        with detector:
            out = handle.prepare_inputs(**inputs)
    assert handle.last_host_syncs == expected
    # before the first read, i.e. while the scores, the selection and the gathers are enqueued
    assert detector.syncs == [], f"{family}: device data read on the host before the call's one read"
    assert out["input_ids"].shape[1] < inputs["input_ids"].shape[1]


@requires_cuda
@pytest.mark.parametrize("case", CALLS, ids=[f"{c[0]}-{c[1]}" for c in CALLS])
def test_integration_syncs_once_per_call_on_cuda(case):
    family, _, build, make_method, make_inputs, expected = case
    model = _model(build)
    inputs = make_inputs(model)
    cuda_model = model.to("cuda")
    try:
        cuda_inputs = {k: v.to("cuda") for k, v in inputs.items()}
        with apply(cuda_model, make_method()) as handle, torch.no_grad():
            handle.prepare_inputs(**cuda_inputs)  # warm-up
            torch.cuda.synchronize()
            with CudaSyncRecorder() as recorder:
                handle.prepare_inputs(**cuda_inputs)
        ours = [site for site in recorder.sites if site is not None]  # syncs in model code are not counted
        # image_sizes / grids on the GPU: read early (the tower needs them on the host)
        expected_here = expected + (1 if family in ("llava-next", "qwen2_5_vl", "qwen3_vl", "paddleocr_vl") else 0)
        assert handle.last_host_syncs == expected_here
        assert len(ours) == expected_here and all("host_reads.py" in site for site in ours), ours
    finally:
        model.to("cpu")
