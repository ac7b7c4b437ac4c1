"""Scenario files: one-line errors naming the field; memory arithmetic when a model does not fit."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from profiling.errors import HermesError, InputError
from simulator import check_fit, load_scenario, parse_scenario

from simkit import BASE, make

GOOD = """
name: ok
surrogate: roofline
deployments:
  - model: Llama-3.1-8B
    hardware: H100-SXM
    tp: {tp}
workload: {{arrival: poisson, rate_rps: 5, num_requests: 20}}
"""


@pytest.mark.parametrize("text, expected", [
    (GOOD.format(tp=0), "deployments.0.tp: must be >= 1"),
    (GOOD.format(tp=1).replace("hardware: H100-SXM", "hardware: H100-SXM\n    colour: red"),
     "deployments.0.colour: unknown field"),
    (GOOD.format(tp=1) + "slo: {ttft_p42_s: 1}\n", "slo: unknown SLO 'ttft_p42_s'"),
    (GOOD.format(tp=1).replace("poisson", "sometimes"), "workload.arrival: Input should be"),
    ("deployments: []\n", "deployments: List should have at least 1 item"),
    ("name: [unclosed\n", "not valid YAML"),
    ("- just a list\n", "expected a mapping"),
])
def test_bad_scenario_gives_one_line_error_naming_field(tmp_path, text, expected):
    """Each mistake is one InputError line that names the file and the dotted field."""
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        load_scenario(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and expected in msg, msg


def test_cli_reports_bad_scenario_with_exit_2(tmp_path):
    """Through the CLI a bad file is one stderr line and exit status 2, no traceback."""
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD.format(tp=0))
    r = subprocess.run([sys.executable, "-m", "hermes_sim.cli", "simulate", str(p)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "deployments.0.tp" in r.stderr
    assert "Traceback" not in r.stderr


def test_model_that_does_not_fit_reports_memory_arithmetic():
    """Llama-3.1-70B in bf16 on one H100: the error shows weights, reserve and capacity."""
    sc = make({"model": "Llama-3.1-70B"})
    with pytest.raises(HermesError) as e:
        check_fit(sc)
    msg = str(e.value)
    assert "does not fit" in msg and "weights" in msg and "GB" in msg and "x 0.90" in msg, msg
    plans = check_fit(make({"model": "Llama-3.1-70B", "tp": 4}))
    assert plans["llm"].num_blocks > 0


def test_unknown_model_or_hardware_names_the_deployment():
    """A catalog miss names the deployment and the unknown entry."""
    with pytest.raises(HermesError, match="deployment 'llm'.*unknown hardware 'Z999'"):
        check_fit(make({"hardware": "Z999"}))


def test_parse_scenario_accepts_dicts_and_router_shorthand():
    """A mapping validates like a file; `router: jsq` is shorthand for {policy: jsq}."""
    doc = {**BASE, "deployments": [{**BASE["deployments"][0], "router": "jsq"}]}
    sc = parse_scenario(doc, "candidate")
    assert sc.deployments[0].router.policy == "jsq"
    with pytest.raises(InputError, match="candidate: deployments.0.replicas"):
        parse_scenario({**BASE, "deployments": [{**BASE["deployments"][0], "replicas": 0}]}, "candidate")


def test_default_scenario_ships_and_loads():
    """The packaged default scenario is valid."""
    from importlib import resources
    path = resources.files("simulator").joinpath("scenarios/default.yaml")
    assert load_scenario(str(path)).deployments[0].model == "Llama-3.1-8B"


def test_cli_simulates_a_gpu_given_by_catalog_file(tmp_path):
    """`simulate --catalog FILE` knows a GPU the built-in catalog lacks: without the file the
    run is one error line naming it, with the file it completes every request."""
    p = tmp_path / "foo.yaml"
    p.write_text(GOOD.format(tp=1).replace("H100-SXM", "FooGPU"))
    spec = tmp_path / "foo_gpu.yaml"
    spec.write_text("devices:\n  - name: FooGPU\n    peak_tflops: {bf16: 500}\n    mem_capacity_gb: 80\n"
                    "    mem_bw_gb_s: 2000\n    tdp_w: 500\n    price_per_hour: 2.0\n")
    env = {k: v for k, v in os.environ.items() if k != "HERMES_CATALOG"}
    cmd = [sys.executable, "-m", "hermes_sim.cli", "simulate", str(p), "--json"]
    run = lambda *extra: subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env)  # noqa: E731
    r = run()
    assert r.returncode == 2 and "'FooGPU'" in r.stderr and r.stderr.strip().count("\n") == 0
    r = run("--catalog", str(spec))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["completed"] == 20
