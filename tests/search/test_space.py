"""Search-space files: validation errors name the field; conditions, paths and requirements."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from profiling.errors import InputError
from search import load_space, parse_space
from search.expr import compile_requirement
from search.feasibility import parallelism_reason, requirement_reason
from search.paths import get_path, set_path

BASE = {
    "name": "t", "seed": 0,
    "deployments": [{"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM", "replicas": 1,
                     "tp": 1, "scheduler": {"policy": "continuous", "max_batch_size": 64}}],
    "workload": {"arrival": "poisson", "rate_rps": 4, "num_requests": 100},
    "slo": {"ttft_p90_s": 1.0},
}


def space(**over):
    doc = {"name": "s", "base": BASE,
           "params": {"deployments.0.hardware": {"choices": ["H100-SXM", "A100-80GB"]}}}
    doc.update(over)
    return doc


@pytest.mark.parametrize("doc, needle", [
    (space(params={"deployments.0.hardware": {"choices": ["H100-SXM", "X9000"]}}),
     "params.deployments.0.hardware.choices[1]: unknown hardware 'X9000'"),
    (space(params={"deployments.0.replicas": {"choices": []}}),
     "params.deployments.0.replicas: choices: empty choice list"),
    (space(slo={"ttft_p90": 1.0}), "slo.ttft_p90: SLO without a unit"),
    (space(slo={"ttft_p90_s": "fast"}), "slo.ttft_p90_s: expected a number"),
    (space(slo={"latency_p90_s": 1}), "slo.latency_p90_s: unknown SLO"),
    (space(params={"deployments.0.tp": {"low": 4, "high": 1}}), "params.deployments.0.tp: low 4.0 > high 1.0"),
    (space(objective="cheapest"), "objective: Input should be 'tokens_per_dollar' or 'pareto'"),
    (space(params={"deploymints.0.tp": {"choices": [1]}}), "params.deploymints.0.tp: 'deploymints' is not"),
    (space(require=["__import__('os').system('x')"]), "require"),
    (space(base="missing.yaml"), "base: scenario file not found"),
    (space(params={}), "params: Value error, at least one parameter"),
])
def test_bad_space_gives_one_line_naming_the_field(doc, needle):
    """Each mistake is one InputError line that names the offending field."""
    with pytest.raises(InputError) as ei:
        parse_space(doc, source="space.yaml")
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith("space.yaml: ")
    assert needle.replace("Value error, ", "") in msg, msg


def test_hardware_without_a_price_is_refused(traces_dir, monkeypatch):
    """A GPU added from a spec sheet without a price (AIConfigurator's b60.yaml) cannot be
    priced in tokens per dollar: the space names the choice and the fix instead of NaN trials."""
    monkeypatch.setenv("HERMES_CATALOG", str(traces_dir / "aiconfigurator" / "b60.yaml"))
    with pytest.raises(InputError) as ei:
        parse_space(space(params={"deployments.0.hardware": {"choices": ["H100-SXM", "B60"]}}), source="s.yaml")
    assert "params.deployments.0.hardware.choices[1]: hardware 'B60' has no price" in str(ei.value)
    assert "--catalog" in str(ei.value)


def test_slo_units_are_converted_to_seconds():
    """Units in the key or in the value both become seconds in the scenario's SLOs."""
    sp = parse_space(space(slo={"ttft_p90_ms": 500, "tpot_p90": "40ms", "e2e_p99": "2s"}))
    assert sp.base["slo"] == {"ttft_p90_s": 0.5, "tpot_p90_s": 0.04, "e2e_p99_s": 2.0}


def test_workload_override_sets_offered_load_and_keeps_the_rest():
    """`workload:` in the space overrides the base's offered load without dropping fields."""
    sp = parse_space(space(workload={"rate_rps": 9}))
    assert sp.base["workload"] == {"arrival": "poisson", "rate_rps": 9, "num_requests": 100}


def test_conditional_params_and_enumeration():
    """chunk_size is only chosen when the policy is chunked; enumeration respects it."""
    sp = parse_space(space(params={
        "deployments.0.scheduler.policy": {"choices": ["continuous", "chunked"]},
        "deployments.0.scheduler.chunk_size": {"choices": [256, 512],
                                               "when": {"deployments.0.scheduler.policy": "chunked"}},
        "deployments.0.replicas": {"low": 1, "high": 3},
    }))
    combos = sp.enumerate()
    assert len(combos) == (1 + 2) * 3
    assert all(("deployments.0.scheduler.chunk_size" in c) == (c["deployments.0.scheduler.policy"] == "chunked")
               for c in combos)
    doc = sp.scenario(combos[-1])
    assert get_path(doc, "deployments.0.scheduler.chunk_size") == 512
    assert BASE["deployments"][0]["scheduler"] == {"policy": "continuous", "max_batch_size": 64}


def test_set_path_creates_mappings_and_indexes_lists():
    """Dotted paths index lists by integer and create missing mappings."""
    doc = {"deployments": [{"name": "a"}]}
    set_path(doc, "deployments.0.scheduler.policy", "chunked")
    set_path(doc, "workload.rate_rps", 3.5)
    assert doc == {"deployments": [{"name": "a", "scheduler": {"policy": "chunked"}}],
                   "workload": {"rate_rps": 3.5}}
    with pytest.raises(KeyError):
        set_path(doc, "deployments.3.tp", 2)


def test_requirements_and_parallelism_rules():
    """tp must divide heads and fit a node; user expressions read paths and catalogs."""
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc["deployments"][0]["tp"] = 3
    assert "does not divide 32 attention heads" in parallelism_reason(doc)
    doc["deployments"][0]["tp"] = 16
    assert "exceeds 8 H100-SXM devices per node" in parallelism_reason(doc)
    doc["deployments"][0]["tp"] = 2
    assert parallelism_reason(doc) is None
    r = compile_requirement("deployments.0.tp * deployments.0.replicas <= devices_per_node(deployments.0.hardware)")
    assert requirement_reason(doc, [r]) is None
    doc["deployments"][0]["replicas"] = 5
    assert "does not hold" in requirement_reason(doc, [r])
    with pytest.raises(ValueError, match="only these functions"):
        compile_requirement("open('x')")


def test_builtin_default_space_loads():
    """The shipped example space is a RAG chat pipeline that mixes several GPU types and
    chooses between the CPU host and a GPU for the embedder; the chat-only space loads too."""
    sp = load_space(None)
    assert len(sp.params["deployments.0.hardware"].choices) >= 4
    assert sp.slos and sp.objective == "tokens_per_dollar"
    kinds = [st["kind"] for p in sp.base["pipelines"] for st in p["stages"]]
    assert {"rag_embed", "rag_retrieve", "rag_rerank", "llm"} <= set(kinds)
    assert set(sp.params["services.1.hardware"].choices) == {"Xeon-8480+", "L40S"}
    from importlib import resources
    chat = resources.files("search").joinpath("spaces/chat_gpu_mix.yaml")
    assert load_space(str(chat)).params["deployments.0.hardware"].choices


def test_cli_bad_space_exits_2_with_one_line(tmp_path):
    """Through the CLI a bad space file is one stderr line and exit status 2."""
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(space(slo={"tpot_p90": 0.05})))
    r = subprocess.run([sys.executable, "-m", "hermes_sim.cli", "search", str(p), "--trials", "2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "slo.tpot_p90: SLO without a unit" in lines[0], r.stderr
