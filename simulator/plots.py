"""PNG plots of a run: latency CDFs, throughput and batch size over time, KV memory use."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from profiling.atomicfile import savefig_atomic


def save_png(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay ``fig`` out, write it to ``path`` as PNG (atomically, folders made) and close it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    savefig_atomic(fig, p, dpi=dpi, format="png")
    plt.close(fig)
    return p


def write_plots(result, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = result.requests
    done = df[df.finish_s.notna()]
    paths = []

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, col, label in zip(axes, ("ttft_s", "tpot_s", "e2e_s"), ("TTFT", "TPOT", "E2E")):
        x = np.sort(done[col].dropna().to_numpy())
        if x.size:
            ax.plot(x, np.arange(1, x.size + 1) / x.size)
        ax.set_xlabel(f"{label} (s)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result.scenario.name}: latency CDFs")
    fig.tight_layout()
    paths.append(out / "latency_cdf.png")
    savefig_atomic(fig, paths[-1], dpi=100)
    plt.close(fig)

    span = float(done.finish_s.max()) if len(done) else 1.0
    bins = np.linspace(0, max(span, 1e-9), 101)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    tok, _ = np.histogram(done.finish_s, bins=bins, weights=done.output_tokens)
    a1.plot(bins[1:], tok / np.diff(bins), label="output tokens/s (by completion)")
    a1.set_ylabel("tokens/s")
    a1.legend(loc="upper right")
    for name in result.steps:
        s = result.step_frame(name)
        if len(s):
            a2.plot(*_binned(s.end_s, s.decode_seqs, bins), label=name, lw=0.8)
    a2.set_ylabel("decoding batch size")
    a2.set_xlabel("simulated time (s)")
    a2.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    paths.append(out / "throughput_batch.png")
    savefig_atomic(fig, paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 3.6))
    for name in result.steps:
        s = result.step_frame(name)
        total = max(result.kv_blocks.get(name, 1), 1)
        if len(s):
            ax.plot(*_binned(s.end_s, s.kv_blocks_used / total, bins), label=name, lw=0.8)
    ax.set_ylabel("KV blocks in use (fraction)")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    paths.append(out / "kv_memory.png")
    savefig_atomic(fig, paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _binned(t, y, bins):
    """Mean of ``y`` per time bin (keeps plots of 10^5 steps light)."""
    t, y = np.asarray(t), np.asarray(y, dtype=float)
    s, _ = np.histogram(t, bins=bins, weights=y)
    c, _ = np.histogram(t, bins=bins)
    with np.errstate(invalid="ignore"):
        return bins[1:], np.where(c > 0, s / np.maximum(c, 1), np.nan)


def write_scaling_plot(result, path: Path, bins: int = 120) -> Path:
    """Replicas over time (serving and billed) per autoscaled deployment, under the offered
    rate (arrivals per second, binned)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = result.scaling
    arrival = result.requests.arrival_s.dropna().to_numpy()
    end = max([float(r[-1, 0]) for r in rec.replicas.values()] + [float(arrival.max()) if arrival.size else 1.0])
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, height_ratios=(1, 1.4))
    edges = np.linspace(0, max(end, 1e-9), bins + 1)
    counts, _ = np.histogram(arrival, bins=edges)
    a1.step(edges[:-1], counts / np.diff(edges), where="post", color="0.3", lw=1)
    a1.set_ylabel("offered rate (req/s)")
    a1.grid(alpha=0.3)
    for name, r in rec.replicas.items():
        t, active, starting, draining = r.T
        a2.step(t, active, where="post", label=f"{name}: serving")
        a2.step(t, active + starting + draining, where="post", ls="--", label=f"{name}: billed")
    from matplotlib.ticker import MaxNLocator
    a2.yaxis.set_major_locator(MaxNLocator(integer=True))
    a2.set_ylim(bottom=0)
    a2.set_ylabel("replicas")
    a2.set_xlabel("simulated time (s)")
    a2.grid(alpha=0.3)
    a2.legend(loc="upper right", fontsize="small")
    fig.suptitle(f"{getattr(result.scenario, 'name', '')}: autoscaling")
    return save_png(fig, path, dpi=100)
