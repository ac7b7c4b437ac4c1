"""Every scenario in examples/ runs as written (fewer requests here) and its summary.json
carries the per-stage breakdown and the KV-tier hit rates."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from simulator import parse_scenario, simulate

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_reports_stages(path, tmp_path):
    """The example (capped at 40 requests, surrogate as written) completes requests,
    writes summary.json with a 'stages' breakdown whose means add up to the mean E2E,
    a 'kv_cache' entry, and the stacked per-stage bar plot."""
    doc = yaml.safe_load(path.read_text())
    wl = doc.setdefault("workload", {})
    wl["num_requests"] = min(int(wl.get("num_requests", 40)), 40)
    if wl.get("trace") and not Path(wl["trace"]).is_absolute():
        wl["trace"] = str((path.parent / wl["trace"]).resolve())
        if not Path(wl["trace"]).exists():
            pytest.skip(f"trace {wl['trace']} not present")
    res = simulate(parse_scenario(doc, path))
    out = res.write(tmp_path / path.stem)
    s = json.loads((out / "summary.json").read_text())
    assert s["completed"] > 0
    stages = s["stages"]
    assert stages and all({"mean", "p50", "p90"} <= set(v) for v in stages.values())
    total = sum(v["mean"] for v in stages.values())
    assert total == pytest.approx(s["e2e_s"]["mean"], rel=1e-6)
    assert "kv_cache" in s
    if doc.get("kv_cache"):
        tiers = [t["name"] for t in doc["kv_cache"]["tiers"]]
        assert set(tiers) <= set(s["kv_cache"]) and 0 <= s["kv_cache"]["overall_token_hit_rate"] <= 1
    assert (out / "stage_breakdown.png").is_file()
