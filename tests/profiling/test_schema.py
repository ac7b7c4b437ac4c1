"""Validation of the canonical trace table: every bad row is quarantined with its reason."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from profiling.schema import COLUMNS, QUARANTINE_COLUMNS, conform, validate_traces

GOOD = {"op": "gemm", "name": "gemm", "m": 64, "n": 4096, "k": 4096, "dtype": "bf16", "hardware": "H100-SXM",
        "latency_ms": 0.05, "source": "test:x.csv"}


def _one_bad(**change) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [dict(GOOD, source_row=0), dict(GOOD, m=128, source_row=1), {**GOOD, **change, "source_row": 2}]
    return validate_traces(pd.DataFrame(rows))


@pytest.mark.parametrize("change, column, words", [
    ({"latency_ms": np.nan}, "latency_ms", "not a number"),
    ({"latency_ms": 0.0}, "latency_ms", "> 0"),
    ({"latency_ms": -1.0}, "latency_ms", "> 0"),
    ({"latency_ms": 1e-7}, "latency_ms", "wrong unit"),
    ({"latency_ms": 5e6}, "latency_ms", "wrong unit"),
    ({"k": np.nan}, "k", "gemm needs a positive 'k'"),
    ({"n": 0}, "n", "gemm needs a positive 'n'"),
    ({"op": "matmul"}, "op", "unknown operator kind 'matmul'"),
    ({"dtype": "fp7"}, "dtype", "unknown dtype"),
    ({"hardware": None}, "hardware", "missing hardware"),
])
def test_each_problem_is_quarantined_with_row_and_column(change, column, words):
    """One bad row among good ones: exactly it is quarantined, naming source, row, column, reason."""
    clean, q = _one_bad(**change)
    assert len(clean) == 2 and len(q) == 1
    assert tuple(q.columns) == QUARANTINE_COLUMNS
    assert q.iloc[0]["source"] == "test:x.csv" and q.iloc[0]["source_row"] == 2
    assert q.iloc[0]["column"] == column and words in q.iloc[0]["reason"]


def test_conflicting_duplicates_rejected_agreeing_kept():
    """The same point measured twice >2x apart is quarantined (both); within 2x both are kept."""
    rows = [dict(GOOD, latency_ms=0.05, source_row=0), dict(GOOD, latency_ms=0.2, source_row=1),
            dict(GOOD, m=8, latency_ms=0.05, source_row=2), dict(GOOD, m=8, latency_ms=0.06, source_row=3),
            dict(GOOD, m=8, name="other_kernel", latency_ms=0.5, source_row=4)]
    clean, q = validate_traces(pd.DataFrame(rows))
    assert sorted(q["source_row"]) == [0.0, 1.0]
    assert q["reason"].str.contains("conflicting").all()
    assert sorted(clean["source_row"]) == [2.0, 3.0, 4.0]  # another named op is not a duplicate


def test_dtype_spellings_are_normalized():
    """'bfloat16' and 'float16' become bf16/fp16 in the clean table."""
    clean, q = validate_traces(pd.DataFrame([dict(GOOD, dtype="bfloat16"), dict(GOOD, m=1, dtype="float16")]))
    assert q.empty and clean["dtype"].tolist() == ["bf16", "fp16"]


def test_conform_orders_and_types_columns():
    """conform adds every canonical column, numeric as float64, and keeps extra columns last."""
    out = conform(pd.DataFrame({"m": ["64"], "op": ["gemm"], "extra": [1]}))
    assert tuple(out.columns[:len(COLUMNS)]) == COLUMNS and out.columns[-1] == "extra"
    assert out["m"].dtype == np.float64 and out["m"].iloc[0] == 64.0 and out["name"].iloc[0] is None


def test_duplicate_check_on_a_large_table():
    """500k rows whose shapes repeat but agree within 2x are all kept, none quarantined
    (a quadratic duplicate check would not finish within the CI budget)."""
    n = 500_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"op": "gemm", "name": "gemm", "m": rng.integers(1, 4096, n), "n": 4096, "k": 4096,
                       "dtype": "bf16", "hardware": "H100-SXM", "latency_ms": rng.uniform(1, 1.5, n),
                       "source": "s", "source_row": np.arange(n)})
    clean, q = validate_traces(df)
    assert len(clean) == n and q.empty  # duplicates exist (m repeats) but agree within 2x
