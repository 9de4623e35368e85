"""Turn pytest-benchmark JSON (``make bench``) into the README's figures and ratios.

    python benchmarks/plot_results.py bench_out/benchmarks.json --out docs

Writes ``<out>/bench_end_to_end.png`` (prefill with and without pruning; VisPruner's image stage
through the package vs eager ``output_attentions``: time and peak memory) when the end-to-end
benchmarks ran, ``<out>/bench_ops.png`` (every other benchmark group) when such groups exist,
and prints a Markdown summary with the ratios the README quotes (with the attention_scores table:
vtprune per CPU capability against the blocked and eager formulations and the roofline, from
``bench_attention_scores.py``; its run prints the same table). Only numbers found in the JSON
are used.

Comparisons use the paired timings the benchmarks record (the two calls alternate,
the fastest run of each is kept: both see the same load of a shared machine); other times are
the fastest round (``stats.min``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Tuple

END_TO_END_GROUPS = (
    "prefill clip_l",
    "prefill llm_heavy",
    "image stage llm_heavy",
    "score extraction clip_l batch 2",
)
FRACTIONS = ("0.75", "0.5", "0.25")


def load(paths: List[str]) -> List[dict]:
    """All benchmarks of the given JSON files; each keeps its file's ``machine_info`` as "_machine"."""
    benchmarks = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for b in data.get("benchmarks", []):
            b["_machine"] = data.get("machine_info", {})
            benchmarks.append(b)
    return benchmarks


def _info(named: Dict[str, dict], name: str, *keys: str) -> Optional[Tuple[float, ...]]:
    """extra_info values of benchmark ``name`` (None when it did not run or lacks one)."""
    b = named.get(name)
    if b is None or any(k not in b["extra_info"] for k in keys):
        return None
    return tuple(b["extra_info"][k] for k in keys)


def prefill_pairs(named: Dict[str, dict]) -> List[Tuple[str, str, float, float]]:
    """(model, label, unpruned s, pruned s) of every paired prefill comparison that ran."""
    pairs = []
    for fraction in FRACTIONS:
        got = _info(named, f"test_prefill_clip_l_vispruner[{fraction}]", "paired_unpruned_s", "paired_pruned_s")
        if got:
            pairs.append(("clip_l", f"{round(float(fraction) * 100)}% kept", *got))
    got = _info(named, "test_prefill_llm_heavy_vispruner_25", "paired_unpruned_s", "paired_pruned_s")
    if got:
        pairs.append(("llm_heavy", "25% kept", *got))
    return pairs


def summary(benchmarks: List[dict]) -> str:
    """Markdown lines with the ratios the README quotes (only those whose benchmarks ran)."""
    named = {b["name"]: b for b in benchmarks}
    lines = []

    times = _info(named, "test_score_extraction_eager_output_attentions", "paired_package_s", "paired_eager_s")
    memory = _info(named, "test_score_extraction_package", "peak_extra_bytes")
    eager_memory = _info(named, "test_score_extraction_eager_output_attentions", "peak_extra_bytes")
    if times and memory and eager_memory:
        (package_s, eager_s), (pm,), (em,) = times, memory, eager_memory
        line = (
            f"- VisPruner image stage, CLIP-L-shaped tower, batch 2: package {package_s:.2f} s, eager + output_attentions "
            f"{eager_s:.2f} s ({eager_s / package_s:.2f}x faster); peak extra tensor memory {pm / 2**20:.0f} MiB vs "
            f"{em / 2**20:.0f} MiB ({em / pm:.1f}x less)"
        )
        rss = _info(named, "test_score_extraction_package", "peak_extra_rss_bytes")
        eager_rss = _info(named, "test_score_extraction_eager_output_attentions", "peak_extra_rss_bytes")
        if rss and eager_rss:
            line += f"; peak extra resident memory {rss[0] / 2**20:.0f} MiB vs {eager_rss[0] / 2**20:.0f} MiB ({eager_rss[0] / rss[0]:.1f}x less)"
        lines.append(line + ".")

    for model, label, unpruned, pruned in prefill_pairs(named):
        what = "CLIP-L-shaped tower + 12-layer LLM, 1 image (576 visual tokens)" if model == "clip_l" else (
            "LLM-heavy model, 5 images (2880 visual tokens)")
        lines.append(f"- Prefill, {what}, {label}: {pruned:.2f} s vs {unpruned:.2f} s unpruned ({unpruned / pruned:.2f}x faster).")

    heavy = _info(named, "test_prefill_llm_heavy_vispruner_25", "paired_unpruned_s")
    stage = _info(named, "test_image_stage_llm_heavy[vispruner]", "paired_vispruner_s", "paired_uniform_s", "score_s", "select_s")
    if heavy and stage:
        (unpruned,), (vis, uni, score, select) = heavy, stage
        lines.append(
            f"- Pruning overhead, LLM-heavy model: scoring {score * 1e3:.0f} ms + selection {select * 1e3:.0f} ms = "
            f"{100 * (score + select) / unpruned:.1f}% of the unpruned prefill; image stage with VisPruner {vis * 1e3:.0f} ms "
            f"vs Uniform {uni * 1e3:.0f} ms (net {100 * (vis - uni) / unpruned:+.1f}%)."
        )
    for stage, what in (("capture", "tower layers 0-9 + scoring"), ("scores", "scoring of the 4 layers")):
        for tower in ("clip_l", "internvit"):
            got = _info(named, f"test_hivtp_{stage}[{tower}-with_lse]", "paired_with_lse_s", "paired_without_lse_s")
            if got:
                lines.append(
                    f"- HIVTP {what}, {tower}: with the tower's log-sum-exp {got[0] * 1e3:.1f} ms, without "
                    f"{got[1] * 1e3:.1f} ms ({got[1] / got[0]:.2f}x)."
                )
    table = attention_table_lines(attention_comparison_rows(benchmarks))
    if table:
        lines += [""] + table
    return "\n".join(lines)


def attention_comparison_rows(benchmarks: List[dict]) -> List[Dict]:
    """The extra_info of every benchmark that recorded paired comparisons (pytest-benchmark JSON)."""
    return [b["extra_info"] for b in benchmarks if "paired_blocked_s" in b.get("extra_info", {})]


def attention_table_lines(rows: List[Dict]) -> List[str]:
    """One line per vtprune row: its time, the paired baselines, the roofline and the ratios."""
    if not rows:
        return []
    lines = [
        f"attention_scores on {rows[0]['cpu_model']} (paired: the two calls alternate, fastest of each)",
        "",
        "| shape | threads | ISA | vtprune | blocked torch | eager | roofline | vs blocked | vs eager | x roofline |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        # one query row is a matrix-vector product, bound by reading K: the GEMM + exp roofline does not apply
        one_row = r["query_rows"] == 1
        lines.append(
            f"| {r['shape']} | {r['threads']} | {r['cpu_capability']} | {r['vtprune_s'] * 1e3:.3g} ms | "
            f"{r['paired_blocked_s'] * 1e3:.3g} ms | {r['paired_eager_s'] * 1e3:.3g} ms | "
            f"{'-' if one_row else format(r['roofline_s'] * 1e3, '.3g') + ' ms'} | "
            f"{r['paired_blocked_s'] / r['paired_vtprune_vs_blocked_s']:.2f}x | "
            f"{r['paired_eager_s'] / r['paired_vtprune_vs_eager_s']:.2f}x | "
            f"{'-' if one_row else format(r['x_roofline'], '.2f')} |"
        )
    lines.append("roofline = the GEMM at torch's sgemm rate + the exps at torch's exp rate, measured paired with each "
                 "row on its threads (" + ", ".join(f"{r['sgemm_gflops']:.0f}" for r in rows) + " GFLOP/s; " +
                 ", ".join(f"{r['exp_gps']:.2f}" for r in rows) + " G exp/s)")
    return lines


def _annotated_bars(ax, labels, values, colors, unit: str, ratio_of: List[Tuple[int, int]], word: str):
    """Bars; each (base, other) in ``ratio_of`` writes "values[base] / values[other] x word" on other."""
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(unit)
    for base, other in ratio_of:
        ax.annotate(f"{values[base] / values[other]:.2f}x {word}", (other, values[other]), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 2), textcoords="offset points")


def plot_end_to_end(benchmarks: List[dict], path: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = {b["name"]: b for b in benchmarks}
    panels = []
    for model, title in (("clip_l", "Prefill, CLIP-L tower + 12-layer LLM"), ("llm_heavy", "Prefill, LLM-heavy, 2880 visual tokens")):
        pairs = [p for p in prefill_pairs(named) if p[0] == model]
        if pairs:
            panels.append(("prefill", title, pairs))
    times = _info(named, "test_score_extraction_eager_output_attentions", "paired_package_s", "paired_eager_s")
    if times:
        panels.append(("stage", "VisPruner image stage, CLIP-L, batch 2", times))
    memory = [(_info(named, f"test_score_extraction_{p}", "peak_extra_bytes"), _info(named, f"test_score_extraction_{p}", "peak_extra_rss_bytes"))
              for p in ("eager_output_attentions", "package")]
    if all(m[0] for m in memory):
        panels.append(("memory", "VisPruner image stage: peak extra memory", memory))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4.3))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (kind, title, data) in zip(axes, panels):
        if kind == "prefill":
            labels, values, colors, ratios = [], [], [], []
            for _, label, unpruned, pruned in data:
                labels += ["unpruned", label]
                values += [unpruned, pruned]
                colors += ["tab:gray", "tab:blue"]
                ratios.append((len(values) - 2, len(values) - 1))
            _annotated_bars(ax, labels, values, colors, "prefill (s), fastest of paired runs", ratios, "faster")
        elif kind == "stage":
            package_s, eager_s = data
            _annotated_bars(ax, ["eager + output_attentions", "vtprune package"], [eager_s, package_s],
                            ["tab:gray", "tab:blue"], "time (s), fastest of paired runs", [(0, 1)], "faster")
        else:
            (eager_alloc, eager_rss), (pkg_alloc, pkg_rss) = data
            labels = ["eager, tensors", "package, tensors"]
            values = [eager_alloc[0] / 2**20, pkg_alloc[0] / 2**20]
            ratios = [(0, 1)]
            if eager_rss and pkg_rss:
                labels += ["eager, resident", "package, resident"]
                values += [eager_rss[0] / 2**20, pkg_rss[0] / 2**20]
                ratios.append((2, 3))
            _annotated_bars(ax, labels, values, ["tab:gray", "tab:blue"] * 2, "peak extra memory (MiB)", ratios, "less")
        ax.set_title(title, fontsize=9)
    machine = benchmarks[0]["_machine"]
    fig.suptitle(f"{machine.get('cpu', {}).get('brand_raw', '')}, {machine.get('cpu', {}).get('count', '?')} cores", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _duration(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def plot_ops(benchmarks: List[dict], path: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    groups: Dict[str, List[dict]] = {}
    for b in benchmarks:
        if b.get("group") not in END_TO_END_GROUPS:
            groups.setdefault(b.get("group") or "ungrouped", []).append(b)
    if not groups:
        return False
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    tallest = max(len(v) for v in groups.values())
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, (0.4 * tallest + 1.4) * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, (group, items) in zip(flat, sorted(groups.items())):
        items = sorted(items, key=lambda b: b["stats"]["min"])
        fastest = [b["stats"]["min"] for b in items]
        ax.barh(range(len(items)), fastest, color="tab:blue")
        ax.set_yticks(range(len(items)), [b["name"].replace("test_", "") for b in items], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(fastest[0] / 3, fastest[-1] * 10)
        ax.xaxis.set_minor_formatter(NullFormatter())
        for i, t in enumerate(fastest):
            ax.annotate(_duration(t) + (f" ({t / fastest[0]:.1f}x)" if i else ""), (t, i), va="center", fontsize=7,
                        xytext=(3, 0), textcoords="offset points")
        ax.set_xlabel("fastest round (s, log scale)", fontsize=8)
        ax.set_title(group, fontsize=8)
    for ax in flat[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="pytest-benchmark JSON file(s)")
    parser.add_argument("--out", default="docs", help="folder for the PNGs (default: docs)")
    args = parser.parse_args(argv)
    benchmarks = load(args.json)
    if not benchmarks:
        print("plot_results: no benchmarks in " + ", ".join(args.json), file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    for name, plot in (("bench_end_to_end.png", plot_end_to_end), ("bench_ops.png", plot_ops)):
        path = os.path.join(args.out, name)
        if plot(benchmarks, path):
            print(f"wrote {path}")
    text = summary(benchmarks)
    if text:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
