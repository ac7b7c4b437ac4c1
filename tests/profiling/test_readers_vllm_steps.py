"""vLLM step-time CSV reader: pure prefill and decode steps; mixed steps quarantined."""
from __future__ import annotations

import pandas as pd
import pytest

from profiling.errors import InputError
from profiling.ingest import read_traces


def test_steps_become_step_rows(tmp_path):
    """Prefill step: batch=seqs, q_len=tokens/seq; decode: batch=decode tokens, kv_len=mean context."""
    f = tmp_path / "steps.csv"
    pd.DataFrame({"step_time_ms": [120.0, 25.0, 40.0], "num_prefill_tokens": [2048, 0, 512],
                  "num_decode_tokens": [0, 32, 16], "num_prefill_seqs": [2, 0, 1], "context_tokens": [0, 32 * 700, 5000],
                  "model": "Llama-2-7B", "tp": 1, "hardware": "H100-SXM"}).to_csv(f, index=False)
    res = read_traces(f, "vllm-steps")
    t = res.table.set_index("source_row")
    assert (t.loc[0.0, "op"], t.loc[0.0, "batch"], t.loc[0.0, "q_len"]) == ("step_prefill", 2, 1024)
    assert (t.loc[1.0, "op"], t.loc[1.0, "batch"], t.loc[1.0, "kv_len"]) == ("step_decode", 32, 700)
    assert res.quarantine["reason"].tolist() == ["mixed prefill+decode step: no single step kind"]
    assert (res.table["t_roofline_ms"] > 0).all()


def test_missing_step_time_column(tmp_path):
    """A CSV without step_time_ms is one clear error."""
    f = tmp_path / "steps.csv"
    pd.DataFrame({"num_prefill_tokens": [1], "num_decode_tokens": [0], "model": ["x"]}).to_csv(f, index=False)
    with pytest.raises(InputError, match="step_time_ms"):
        read_traces(f, "vllm-steps", hardware="H100-SXM")
