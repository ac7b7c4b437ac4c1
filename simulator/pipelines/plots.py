"""Stacked bar plot of the per-stage latency breakdown: one bar per request class (and one
for all requests), each segment a stage's mean time, so the bar's height is the mean E2E."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from profiling.atomicfile import savefig_atomic


def stage_means(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per stage (columns) for each class and for all requests (rows)."""
    done = frame[frame.finish_s.notna()]
    cols = [c for c in done.columns if c.startswith("stage_") and c.endswith("_s")]
    if not cols:   # a run without pipelines: the LLM call's queueing, prefill and decode
        done = done.assign(stage_queue_s=done.start_s - done.arrival_s,
                           stage_prefill_s=done.first_token_s - done.start_s,
                           stage_decode_s=done.finish_s - done.first_token_s)
        cols = ["stage_queue_s", "stage_prefill_s", "stage_decode_s"]
    if not cols or done.empty:
        return pd.DataFrame()
    table = done[cols].mean().to_frame("all").T
    if "request_class" in done and done.request_class.nunique() > 1:
        table = pd.concat([done.groupby("request_class")[cols].mean(), table])
    table.columns = [c[len("stage_"):-2] for c in cols]
    return table.loc[:, (table > 0).any(axis=0)]


def write_stage_plot(frame: pd.DataFrame, path: Path, title: str = "") -> Path | None:
    table = stage_means(frame)
    if table.empty:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(table) + 3), 4.2))
    bottom = np.zeros(len(table))
    for i, stage in enumerate(table.columns):
        v = table[stage].to_numpy()
        ax.bar(table.index.astype(str), v, bottom=bottom, label=stage, color=f"C{i % 10}")
        bottom += v
    ax.set_ylabel("mean time per request (s)")
    ax.set_title(f"{title}: per-stage latency breakdown" if title else "per-stage latency breakdown")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path
