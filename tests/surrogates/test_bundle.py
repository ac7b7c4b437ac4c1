"""The shipped bundle: provenance manifest, size, sane predictions, spec-sheet fallback."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from profiling.hardware import load_catalog
from surrogates import load_surrogate
from surrogates.tracking import BUNDLE_DIR


def test_manifest_names_sources_and_hash():
    """Manifest lists sources with commit and license, the trace hash and the artifact's sha256."""
    man = json.loads((BUNDLE_DIR / "manifest.json").read_text())
    assert {o["license"] for o in man["origins"]} == {"Apache-2.0", "MIT"}
    assert all(o["commit"] for o in man["origins"]) and len(man["trace_hash"]) == 64
    blob = (BUNDLE_DIR / "surrogate.joblib").read_bytes()
    assert man["artifact"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert len(blob) < 7.5e6  # "a few MB at most" (issue 3)


def test_builtin_predicts_measured_gemms(traces_dir):
    """Builtin bundle on real H100 bf16 GEMM rows: median APE under 10%, provenance 'trained'."""
    from profiling.ingest import read_traces
    t = read_traces(traces_dir / "aiconfigurator/data/h100_sxm/gemm/trtllm/1.3.0rc20/gemm_perf.parquet",
                    "aiconfigurator").table
    t = t[t["dtype"] == "bf16"].sample(500, random_state=1)
    p = load_surrogate().predict("gemm", t.drop(columns=["latency_ms"]), load_catalog().get("H100-SXM"))
    ape = np.abs(p.ms - t["latency_ms"].to_numpy()) / t["latency_ms"].to_numpy()
    assert np.median(ape) < 0.10 and (p.provenance == "trained").mean() > 0.9


def test_catalog_gpu_without_traces_falls_back_to_spec_sheet():
    """H200 has no traces: predictions come from the transfer model, flagged 'extrapolated',
    faster than on H100 for a memory-bound decode GEMM (more bandwidth)."""
    m = load_surrogate("builtin")
    cat = load_catalog()
    shapes = pd.DataFrame({"m": [8], "n": [8192], "k": [8192], "dtype": ["bf16"]})
    h200 = m.predict("gemm", shapes, cat.get("H200"))
    assert h200.provenance[0] == "extrapolated" and "spec sheet" in h200.note
    assert h200.ms[0] < m.predict_ms("gemm", shapes, cat.get("H100-SXM"))[0] * 1.1


def test_blackwell_siblings_are_priced_from_b200_measurements():
    """B300 and GB200 have no traces but are B200's chip family: their bf16 GEMMs and decode
    attention are anchored to B200's measurements. B300 has B200's bf16 spec sheet, so it
    lands within 6% of B200 on every shape; GB200 (11% more bf16 FLOP/s, 4% more bandwidth)
    is never slower than B200 and on no shape more than 12% faster."""
    m, cat = load_surrogate("builtin"), load_catalog()
    gemm = pd.DataFrame([{"m": mm, "n": n, "k": 4096, "dtype": "bf16"} for mm in (1, 64, 4096) for n in (4096, 14336)])
    dec = pd.DataFrame([{"batch": b, "kv_len": kv, "heads": 32, "kv_heads": 8, "head_dim": 128, "window": 0,
                         "dtype": "bf16", "kv_dtype": "bf16"} for b in (1, 64) for kv in (1024, 16384)])
    for kind, shapes in (("gemm", gemm), ("attn_decode", dec)):
        b200 = m.predict_ms(kind, shapes, cat.get("B200"))
        b300, gb200 = m.predict(kind, shapes, cat.get("B300")), m.predict(kind, shapes, cat.get("GB200"))
        assert "anchored to the measured B200" in b300.note and "anchored to the measured B200" in gb200.note
        np.testing.assert_allclose(b300.ms, b200, rtol=0.06, err_msg=kind)
        assert np.all(gb200.ms <= b200 * (1 + 1e-9)) and np.all(gb200.ms >= b200 * 0.88), kind


def test_rebuild_script_reports_a_missing_traces_folder_in_one_line(tmp_path, capsys):
    """`python -m surrogates.build_bundle --traces WRONG` exits 2 with one error line naming
    the path (no traceback) and writes no bundle."""
    from surrogates.build_bundle import main
    assert main(["--traces", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and str(tmp_path / "nope") in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out" / "surrogate.joblib").exists()
