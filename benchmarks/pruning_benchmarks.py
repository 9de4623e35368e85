"""The two end-to-end measurements every model family gets: prefill, and the image stage.

``bench_prefill``: one prefill (the whole model on the prompt, last position's logits), unpruned
or with VisPruner keeping ``keep`` per image; a pruned one is also timed paired with the
unpruned prefill (``extra_info["paired_unpruned_s"]`` / ``["paired_pruned_s"]``).

``bench_image_stage``: ``handle.prepare_inputs`` (vision tower, [scoring, selection,] projector on
the kept tokens, prompt rebuild) with VisPruner or Uniform at the same budget; records the
selection time, the time inside ``vtprune::attention_scores``, and for VisPruner a paired timing
against Uniform (``["paired_vispruner_s"]`` / ``["paired_uniform_s"]``): both run the same tower
and rebuild the same prompt, so their difference is the pruning overhead.
"""
from __future__ import annotations

import statistics

import torch
from timing import paired_best
from vlm_models import prefill, visual_tokens

import vtprune_kernels
from vtprune_kernels import Uniform, VisPruner
from vtprune_kernels.demo.measure import synchronize
from vtprune_kernels.demo.session import scoring_seconds, timed


def bench_prefill(benchmark, model, inputs, keep=None, *, device, rounds: dict, pairs: int = 3):
    def unpruned():
        prefill(model, inputs)
        synchronize(device)

    def pruned():
        with vtprune_kernels.apply(model, VisPruner(keep=keep)):
            unpruned()

    benchmark.extra_info["device"] = str(device)
    benchmark.extra_info["visual_tokens"] = visual_tokens(model, inputs)
    if keep is None:
        benchmark.pedantic(unpruned, **rounds)
        return
    with vtprune_kernels.apply(model, VisPruner(keep=keep)) as handle:
        benchmark.pedantic(unpruned, **rounds)
    benchmark.extra_info["kept_tokens"] = sum(s.numel() for s in handle.last_selection)
    benchmark.extra_info["paired_unpruned_s"], benchmark.extra_info["paired_pruned_s"] = paired_best(unpruned, pruned, pairs)


@torch.inference_mode()
def _prepare(model, inputs, method, device):
    with vtprune_kernels.apply(model, method) as handle:
        handle.prepare_inputs(**inputs)
    synchronize(device)


def bench_image_stage(benchmark, model, inputs, method_name: str, keep: int, *, device, rounds: dict, pairs: int = 3):
    method = timed(VisPruner(keep=keep) if method_name == "vispruner" else Uniform(keep=keep), device)
    with vtprune_kernels.apply(model, method) as handle, torch.inference_mode():

        def call():
            handle.prepare_inputs(**inputs)
            synchronize(device)

        benchmark.pedantic(call, **rounds)
        benchmark.extra_info["select_s"] = statistics.median(method.seconds)
        score_s = scoring_seconds(call, device)
        benchmark.extra_info["score_s"] = 0.0 if score_s is None else score_s
    benchmark.extra_info["device"] = str(device)
    benchmark.extra_info["kept_tokens"] = sum(s.numel() for s in handle.last_selection)
    if method_name == "vispruner":
        benchmark.extra_info["paired_vispruner_s"], benchmark.extra_info["paired_uniform_s"] = paired_best(
            lambda: _prepare(model, inputs, VisPruner(keep=keep), device),
            lambda: _prepare(model, inputs, Uniform(keep=keep), device),
            pairs,
        )
