"""PNG charts of a study (matplotlib, Agg): speed by model and backend, thread scaling,
prefill vs decode across prompt lengths, and peak memory. One colour per backend throughout."""

from __future__ import annotations

from pathlib import Path

PALETTE = {"llamalab": "#1f77b4", "reference": "#7f7f7f", "llama.cpp": "#ff7f0e", "transformers": "#d62728"}
EXTRA_COLOURS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True, "font.size": 9,
                         "axes.titlesize": 10, "legend.frameon": False})
    return plt


def colours(backends: list[str]) -> dict[str, str]:
    out, extra = {}, iter(EXTRA_COLOURS * 4)
    for b in backends:
        out[b] = PALETTE.get(b) or next(extra)
    return out


def _median(c: dict, metric: str):
    return (c["metrics"].get(metric) or {}).get("median")


def _find(cells, **kw):
    for c in cells:
        if c["status"] == "ok" and all(c[k] == v for k, v in kw.items()):
            return c
    return None


def _label_bars(ax, bars, values, fmt="{:.0f}"):
    for bar, v in zip(bars, values):
        if v:
            ax.annotate(fmt.format(v) if v >= 10 else f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")


def _grouped_bars(ax, models, backends, value, col, log=False, fmt="{:.0f}"):
    import numpy as np

    n = max(len(backends), 1)
    width = 0.8 / n
    x = np.arange(len(models))
    for i, b in enumerate(backends):
        vals = [value(m, b) for m in models]
        bars = ax.bar(x + (i - (n - 1) / 2) * width, [v or 0 for v in vals], width, label=b, color=col[b])
        _label_bars(ax, bars, vals, fmt)
    ax.set_xticks(x, [_short(m) for m in models])
    if log and any(value(m, b) for m in models for b in backends):
        ax.set_yscale("log")
    ax.margins(y=0.15)


def _short(model: str) -> str:
    return model.replace(" (synth ", "\n(synth ").replace(".gguf", "").replace("-Instruct", "")


def speed_chart(cells, models, backends, threads, prompts, path: Path, col) -> tuple[str, str] | None:
    """Grouped bars: generation tokens/s (shortest prompt) and prompt tokens/s (longest prompt), most threads."""
    plt = _plt()
    t = max(threads)
    with_data = [p for p in prompts if any(c["prompt"] == p and c["status"] == "ok" and c["threads"] == t for c in cells)]
    if not with_data:
        return None
    short, long_ = with_data[0], with_data[-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, p, title in ((axes[0], "gen_tps", short, f"generation tokens/s ({short} prompt)"),
                                 (axes[1], "prompt_tps", long_, f"prompt processing tokens/s ({long_} prompt)")):
        def value(m, b):
            c = _find(cells, model=m, backend=b, threads=t, prompt=p)
            return _median(c, metric) if c else None

        _grouped_bars(ax, models, backends, value, col, log=True)
        ax.set_title(f"{title}, {t} thread{'s' if t > 1 else ''}")
        ax.set_ylabel("tokens/s (log scale)")
    _legend(fig, axes[0])
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path)
    plt.close(fig)
    return path.name, "Tokens per second by model and backend"


def _legend(fig, ax):
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.0))


def scaling_chart(cells, models, backends, threads, prompts, path: Path, col) -> tuple[str, str] | None:
    """Tokens/s against thread count: one panel per model, decode solid, prefill dashed."""
    if len(threads) < 2:
        return None
    plt = _plt()
    with_data = [p for p in prompts if any(c["prompt"] == p and c["status"] == "ok" for c in cells)]
    short, long_ = with_data[0], with_data[-1]
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models) + 1, 3.6), squeeze=False)
    for ax, m in zip(axes[0], models):
        for b in backends:
            for metric, p, style in (("gen_tps", short, "-"), ("prompt_tps", long_, "--")):
                pts = [(t, _median(c, metric)) for t in threads if (c := _find(cells, model=m, backend=b, threads=t,
                                                                                prompt=p))]
                pts = [(t, v) for t, v in pts if v]
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=col[b], label=b if style == "-" else None)
        ax.set_title(_short(m).replace("\n", " "))
        ax.set_xticks(threads)
        ax.set_xlabel("threads")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("tokens/s (log)")
    _legend(fig, axes[0][0])
    fig.text(0.99, 0.01, f"solid: generation ({short} prompt) · dashed: prompt processing ({long_} prompt)",
             ha="right", fontsize=8, color="#555")
    fig.tight_layout(rect=(0, 0.04, 1, 0.9))
    fig.savefig(path)
    plt.close(fig)
    return path.name, "Thread scaling"


def prefill_decode_chart(cells, models, backends, threads, prompts, n_prompts, path: Path, col):
    """Prefill and decode tokens/s against prompt length, one panel per model, most threads."""
    if len(prompts) < 2:
        return None
    plt = _plt()
    t = max(threads)
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models) + 1, 3.6), squeeze=False)
    for ax, m in zip(axes[0], models):
        for b in backends:
            for metric, style in (("prompt_tps", "--"), ("gen_tps", "-")):
                pts = [(n_prompts[p], _median(c, metric)) for p in prompts
                       if (c := _find(cells, model=m, backend=b, threads=t, prompt=p))]
                pts = [(x, v) for x, v in pts if v]
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=col[b], label=b if style == "-" else None)
        ax.set_title(_short(m).replace("\n", " "))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("prompt tokens")
    axes[0][0].set_ylabel("tokens/s (log)")
    _legend(fig, axes[0][0])
    fig.text(0.99, 0.01, f"solid: decode (generation) · dashed: prefill (prompt) · {t} thread{'s' if t > 1 else ''}",
             ha="right", fontsize=8, color="#555")
    fig.tight_layout(rect=(0, 0.04, 1, 0.9))
    fig.savefig(path)
    plt.close(fig)
    return path.name, "Prefill vs decode across prompt lengths"


def memory_chart(cells, models, backends, threads, prompts, path: Path, col):
    """Peak RSS per model and backend (the largest over its cells)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(models) + 3), 4))

    def value(m, b):
        vals = [_median(c, "peak_rss_mib") for c in cells if c["model"] == m and c["backend"] == b
                and c["status"] == "ok"]
        vals = [v for v in vals if v]
        return max(vals) if vals else None

    _grouped_bars(ax, models, backends, value, col)
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_title("peak resident memory per runtime process (the largest over its cells)")
    _legend(fig, ax)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(path)
    plt.close(fig)
    return path.name, "Peak memory"


def study_charts(result: dict, out_dir: Path) -> list[tuple[str, str]]:
    """Write every chart the data supports; returns (file name, caption) pairs."""
    cells = result["cells"]
    models = [m["label"] for m in result["models"]]
    backends = [b["backend"] for b in result["backends"] if any(c["backend"] == b["backend"] and c["status"] == "ok"
                                                               for c in cells)]
    if not backends:
        return []
    threads = sorted(result["meta"]["threads"])
    prompts = list(result["meta"]["prompts"])
    col = colours([b["backend"] for b in result["backends"]])
    made = [
        speed_chart(cells, models, backends, threads, prompts, out_dir / "tokens_per_s.png", col),
        scaling_chart(cells, models, backends, threads, prompts, out_dir / "thread_scaling.png", col),
        prefill_decode_chart(cells, models, backends, threads, prompts, result["meta"]["prompts"],
                             out_dir / "prefill_vs_decode.png", col),
        memory_chart(cells, models, backends, threads, prompts, out_dir / "memory.png", col),
    ]
    return [m for m in made if m]
