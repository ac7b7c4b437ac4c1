"""vLLM-style step-time tables: one row per engine step (a CSV you log from vLLM).

Expected columns (one per line; units in the names):

==================  =========================================================
step_time_ms        wall time of the step, ms (or ``latency_ms``)
num_prefill_tokens  new prompt tokens computed in the step
num_decode_tokens   decode tokens (= decoding sequences) in the step
model               model name or alias from the model catalog
tp                  tensor-parallel degree (optional, default 1)
hardware            device (optional when ``--hardware`` is given)
batch_size          sequences in the step (optional: prefill sequences when no
                    ``num_prefill_seqs``)
num_prefill_seqs    sequences contributing prompt tokens (optional, default 1)
context_tokens      total KV length over the decoding sequences (optional;
                    alias ``kv_tokens``); prefill steps take ``prefill_context_tokens``
dtype               optional, default bf16
==================  =========================================================

Pure prefill steps become ``step_prefill`` (batch = prefill sequences, q_len = tokens per
sequence); pure decode steps ``step_decode`` (batch = decode tokens, kv_len = mean
context). A step mixing prefill and decode has no single-kind shape: it is quarantined
with that reason (log with chunked prefill off, or split the step).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..schema import quarantine_rows
from .base import FormatReader, ReadOptions, ReadOutput, read_csv, require_columns, source_label

FORMAT = "vllm-steps"
REQUIRED = ("num_prefill_tokens", "num_decode_tokens", "model")


def matches(path: Path) -> bool:
    return path.suffix == ".csv"


def read(path: Path, opts: ReadOptions) -> ReadOutput:
    df = read_csv(path, FORMAT)
    require_columns(df, REQUIRED, path, "vLLM step-time CSV")
    lat_col = next((c for c in ("step_time_ms", "latency_ms") if c in df), None)
    if lat_col is None:
        raise InputError("not a vLLM step-time CSV: missing column step_time_ms", file=path)
    if "hardware" not in df and not opts.hardware:
        raise InputError("no 'hardware' column: pass --hardware", file=path)
    n = len(df)
    num = lambda c, d=np.nan: pd.to_numeric(df[c], errors="coerce").to_numpy(float) if c in df else np.full(n, d)  # noqa: E731
    pre, dec = num("num_prefill_tokens"), num("num_decode_tokens")
    pseqs = num("num_prefill_seqs", np.nan)
    pseqs = np.where(np.isnan(pseqs), num("batch_size", 1.0) if "num_prefill_seqs" not in df else 1.0, pseqs)
    ctx = num("context_tokens") if "context_tokens" in df else num("kv_tokens")
    pctx = num("prefill_context_tokens", 0.0)
    is_pre, is_dec = (pre > 0) & (dec <= 0), (dec > 0) & (pre <= 0)
    src = source_label(FORMAT, path)
    out = pd.DataFrame({
        "op": np.where(is_pre, "step_prefill", "step_decode"), "name": "step",
        "model": df["model"].astype(str).to_numpy(), "tp": num("tp", 1.0), "pp": num("pp", 1.0),
        "batch": np.where(is_pre, pseqs, dec),
        "q_len": np.where(is_pre, pre / np.maximum(pseqs, 1), 1.0),
        "kv_len": np.where(is_pre, (pre + pctx) / np.maximum(pseqs, 1), ctx / np.maximum(dec, 1)),
        "hardware": opts.hardware or df["hardware"].astype(str).to_numpy(),
        "dtype": df["dtype"].astype(str).to_numpy() if "dtype" in df else "bf16",
        "latency_ms": num(lat_col), "source": src, "source_row": np.arange(n, dtype=float),
        "stack": df["stack"].astype(str).to_numpy() if "stack" in df else "vllm",
    })
    bad = ~(is_pre | is_dec)
    q = None
    if bad.any():
        why = pd.Series(np.where((pre > 0) & (dec > 0), "mixed prefill+decode step: no single step kind",
                                 "step with no prefill or decode tokens"))[bad]
        q = quarantine_rows(out[bad], "num_prefill_tokens", why.set_axis(out[bad].index))
    return ReadOutput.of(out[~bad].reset_index(drop=True), q)


READER = FormatReader(FORMAT, "vLLM step-time CSV (step_time_ms, num_prefill_tokens, num_decode_tokens, ...)",
                      matches, read)
