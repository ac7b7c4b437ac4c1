"""`simulate --uncertainty`: the surrogate's intervals propagated into bands and P(SLO met)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import yaml

from simulator import parse_scenario
from simulator.uncertainty import Z80, overhead_sets, sample_scenarios, spreads, uncertainty

REPO = Path(__file__).resolve().parents[2]


def _scenario(hardware: str = "H100-SXM", slo: dict | None = None, requests: int = 60, **dep):
    doc = yaml.safe_load((REPO / "examples" / "uncertain_choice.yaml").read_text())
    doc["deployments"][0].update(hardware=hardware, **dep)
    doc["workload"]["num_requests"] = requests
    if slo is not None:
        doc["slo"] = slo
    if "engine" in dep:     # the engine's own limits replace the scheduler's
        doc["deployments"][0].pop("scheduler")
    return parse_scenario(doc)


def _width(band: dict) -> float:
    return band["p90"] / band["p10"]


def test_bands_are_wider_on_a_gpu_without_kernel_traces():
    """Same scenario on the measured H100 and on the L40 (spec sheet only): the L40's kernel
    factor and its TPOT and tokens-per-dollar bands are wider."""
    h100, l40 = uncertainty(_scenario("H100-SXM"), 6, 0), uncertainty(_scenario("L40"), 6, 0)
    dh, dl = h100["deployments"]["llm"], l40["deployments"]["llm"]
    assert dh["note"].startswith("measured GPU") and "transfer" in dl["note"]
    assert dl["kernel_sigma_log"] > 2 * dh["kernel_sigma_log"] > 0
    for key in ("tpot_mean_s", "output_tokens_per_dollar"):
        assert _width(l40["bands"][key]) > _width(h100["bands"][key]) >= 1.0, key


def test_slo_probability_is_one_far_above_the_band_and_zero_far_below():
    u = uncertainty(_scenario("L40", slo={"tpot_p90_s": 10.0, "ttft_p90_s": 1e-6}), 4, 0)
    assert u["slo_probability"] == {"tpot_p90_s": 1.0, "ttft_p90_s": 0.0, "all": 0.0}


def test_samples_are_seeded():
    """Same seed, same draws and the same bands; another seed draws other kernel factors;
    deployments on one GPU share their draw."""
    s = _scenario("L40")
    a, b = uncertainty(s, 3, 7), uncertainty(s, 3, 7)
    assert a["bands"] == b["bands"] and a["slo_probability"] == b["slo_probability"]
    ks = lambda seed: [x.deployments[0].overhead.kernel_scale for x in sample_scenarios(s, 3, seed)]
    assert ks(7) == ks(7) and ks(7) != ks(8)
    two = s.model_copy(update={"deployments": [s.deployments[0],
                                               s.deployments[0].model_copy(update={"name": "llm2"})]})
    for x in sample_scenarios(two, 3, 1):
        assert x.deployments[0].overhead.kernel_scale == x.deployments[1].overhead.kernel_scale


def test_samples_run_the_profiles_full_fit_and_centre_on_the_point_estimate():
    """A synchronous vLLM V1 deployment's shipped profile records leave-one-TP-out fits; they are
    in MODEL_ERROR already, so every sample runs the full fit (drawn, they moved the band's median
    off the point estimate). The kernel factor is stratified: its median is the point's."""
    s = _scenario("H100-SXM", engine={"name": "vllm", "version": "0.12.0"})
    assert len(overhead_sets(s.deployments[0])) >= 2
    sp = spreads(s)[0]
    assert sp.overhead_sets == () and sp.doc()["overhead_sets"] == 0
    xs = sample_scenarios(s, 12, 0)
    o = s.deployments[0].overhead
    assert {(x.deployments[0].overhead.step_s, x.deployments[0].overhead.per_seq_s) for x in xs} == {(o.step_s, o.per_seq_s)}
    z = sorted(math.log(x.deployments[0].overhead.kernel_scale / o.kernel_scale) / sp.kernel_sigma for x in xs)
    assert z == pytest.approx([NormalDist().inv_cdf((i + 0.5) / 12) for i in range(12)])
    assert sorted(math.log(x.deployments[0].overhead.kernel_scale) for x in sample_scenarios(s, 12, 1)) == \
        pytest.approx(sorted(math.log(x.deployments[0].overhead.kernel_scale) for x in xs))   # other order only


def test_cli_writes_the_uncertainty_section(tmp_path):
    """--uncertainty --samples 2 puts bands and P(SLO met) into summary.json; --samples 1 is
    refused in one line (exit 2)."""
    doc = yaml.safe_load((REPO / "examples" / "uncertain_choice.yaml").read_text())
    doc["workload"]["num_requests"] = 40
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    r = subprocess.run([sys.executable, "-m", "hermes_sim.cli", "simulate", str(p), "--uncertainty",
                        "--samples", "2", "--no-plots", "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    u = json.loads((tmp_path / "out" / "summary.json").read_text())["uncertainty"]
    assert u["samples"] == 2 and set(u["slo_probability"]) == {"ttft_p90_s", "tpot_p90_s", "all"}
    assert {"ttft_mean_s", "tpot_mean_s", "output_tokens_per_dollar"} <= set(u["bands"])
    assert "P(all SLOs met)" in r.stdout + r.stderr
    bad = subprocess.run([sys.executable, "-m", "hermes_sim.cli", "simulate", str(p), "--uncertainty",
                          "--samples", "1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--samples" in bad.stderr


@pytest.mark.parametrize("samples", [0, 1])
def test_too_few_samples_is_an_error(samples):
    with pytest.raises(ValueError):
        uncertainty(_scenario(), samples, 0)


def test_engine_model_error_scales_latency_statistics_and_rejudges_slos():
    """The model-error factor multiplies TTFT/TPOT statistics and re-judges those SLOs; tokens per
    dollar stays as simulated. Sigmas and TTFT shifts: the engine's own, the pooled one without an
    engine block; the factors' log has that mean and sigma."""
    from simulator.uncertainty import MODEL_ERROR, model_error_factors, spreads, with_model_error
    summary = {"ttft_s": {"mean": 0.5, "p90": 0.8}, "tpot_s": {"mean": 0.02, "p90": 0.03},
               "output_tokens_per_dollar": 1e6,
               "slo": {"ttft_p90_s": {"target": 1.0, "measured": 0.8, "met": True},
                       "tpot_p90_s": {"target": 0.05, "measured": 0.03, "met": True}}, "slo_met": True}
    out = with_model_error(summary, {"ttft": 1.5, "tpot": 1.0})
    assert out["ttft_s"] == {"mean": 0.75, "p90": pytest.approx(1.2)} and out["tpot_s"] == summary["tpot_s"]
    assert out["slo"]["ttft_p90_s"]["met"] is False and out["slo"]["tpot_p90_s"]["met"] is True
    assert out["slo_met"] is False and out["output_tokens_per_dollar"] == 1e6
    assert summary["slo"]["ttft_p90_s"]["met"] is True                   # the input is left alone
    plain = spreads(_scenario())[0]
    trt = spreads(_scenario(engine={"name": "trtllm", "version": "1.0.0"}))[0]
    sigmas = {e: {m: MODEL_ERROR[e][m] for m in ("ttft", "tpot")} for e in ("*", "trtllm")}
    assert dict(plain.model_sigma) == sigmas["*"] and dict(trt.model_sigma) == sigmas["trtllm"]
    assert dict(trt.model_shift) == {"ttft": MODEL_ERROR["trtllm"]["ttft_shift"], "tpot": 0.0}
    f = model_error_factors(2000, 0, [trt])
    assert f == model_error_factors(2000, 0, [trt])                       # seeded
    logs = np.log([x["ttft"] for x in f])
    assert logs.std() == pytest.approx(MODEL_ERROR["trtllm"]["ttft"], rel=0.1)
    assert logs.mean() == pytest.approx(MODEL_ERROR["trtllm"]["ttft_shift"], abs=0.01)
    assert np.log([x["tpot"] for x in f]).mean() == pytest.approx(0.0, abs=0.01)


def test_model_error_widens_the_ttft_band():
    s = _scenario("H100-SXM", engine={"name": "vllm", "version": "0.15.1"})
    u = uncertainty(s, 6, 0)
    assert u["deployments"]["llm"]["model_error_sigma_log"]["ttft"] > 0
    assert _width(u["bands"]["ttft_mean_s"]) > math.exp(2 * Z80 * 0.1)
