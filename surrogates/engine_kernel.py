"""The kernel a serving engine would run for a query that names none.

Traces measure many kernel variants of one op on one GPU (TensorRT-LLM's own GEMMs,
DeepGEMM, vLLM's Triton fallback, ...), several times apart on small shapes. A simulator
query carries only a shape and a dtype. Averaging over variants would price every step
as a mix of the best and the worst kernels; an engine autotunes and runs its fastest
one. So at fit time we pick, per (GPU, dtype), the measured variant the fitted model
predicts fastest on that group's own shapes, and queries without a kernel get it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from .features import variant_keys

# Kinds whose variant an engine chooses (elementwise variants are different ops, not choices).
ENGINE_KINDS = ("gemm", "attn_prefill", "attn_decode", "collective")
_PROBE_ROWS = 400


def choose_engine_kernels(kind: str, pipe: Pipeline, train: pd.DataFrame, seed: int = 0,
                          per_gpu: bool = True) -> dict[tuple[str, str], tuple[str, str]]:
    """``{(hardware, dtype): (stack, kernel)}``: per group of ``train``, the measured variant
    with the lowest mean predicted log latency over a sample of that group's shapes.
    ``per_gpu=False`` pools the GPUs (key ``("*", dtype)``): the choice for a GPU never
    measured, made with the transfer pipeline."""
    if kind not in ENGINE_KINDS or "kernel" not in train:
        return {}
    rows = train.assign(stack=train["stack"] if "stack" in train else "",
                        dtype=train["dtype"].fillna("bf16").astype(str))
    rows = rows.assign(_variant=variant_keys(kind, rows).to_numpy())
    if not per_gpu:
        rows = rows.assign(_gpu="*")
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for (hw, dt), group in rows.groupby(["hardware" if per_gpu else "_gpu", "dtype"], sort=True):
        reps = group.drop_duplicates("_variant")[["stack", "kernel"]]
        if len(reps) < 2:
            continue  # one measured variant: nothing to choose, queries already get it
        probe = group.sample(min(len(group), _PROBE_ROWS), random_state=seed)
        probe = probe.drop(columns=[c for c in ("_variant", "_gpu") if c in probe])
        best, best_cost = None, np.inf
        for stack, kernel in reps.itertuples(index=False):
            cost = float(np.mean(np.log(pipe.predict(probe.assign(stack=stack, kernel=kernel)))))
            if cost < best_cost:
                best, best_cost = (stack, kernel), cost
        out[(str(hw), str(dt))] = best
    return out


def with_engine_kernel(frame: pd.DataFrame, choices: dict[tuple[str, str], tuple[str, str]],
                       hardware: str) -> pd.DataFrame:
    """``frame`` with the chosen (stack, kernel) filled in per dtype, when it names neither
    (a frame that names a kernel or a stack is the caller's choice and left as is)."""
    if not choices or "kernel" in frame or "stack" in frame:
        return frame
    dt = frame["dtype"].fillna("bf16").astype(str) if "dtype" in frame else pd.Series("bf16", index=frame.index)
    pick = [choices.get((hardware, d)) for d in dt]
    if not any(pick):
        return frame
    return frame.assign(stack=[p[0] if p else None for p in pick], kernel=[p[1] if p else None for p in pick])
