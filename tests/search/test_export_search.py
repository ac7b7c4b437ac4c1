"""`hermes-sim search --export TARGET`: the best configuration exported beside the search's results."""
from __future__ import annotations

import kubernetes_validate
import yaml

from search.export.k8s import K8S_VERSION
from simulator.scenario import load_scenario

from search_helpers import run_cli, small_space


def test_search_exports_its_best_configuration(tmp_path, space_file):
    """`search --export k8s` writes valid manifests of the best configuration beside its results
    and logs them as artifacts of the study's MLflow parent run."""
    import json

    from mlflow.tracking import MlflowClient
    p = space_file(small_space(requests=60))
    out = tmp_path / "out"
    r = run_cli(["search", str(p), "--trials", "3", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                 "-o", str(out), "--export", "k8s", "--json"], cwd=tmp_path,
                env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"})
    assert r.returncode == 0, r.stderr
    assert "exported the best configuration (k8s)" in r.stderr
    best = load_scenario(out / "best.yaml").deployments[0]
    docs = list(yaml.safe_load_all((out / "export" / "k8s" / "llm.yaml").read_text()))
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == best.replicas
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == str(best.scheduler.max_batch_size)
    assert (out / "export" / "README.md").is_file() and (out / "export" / "bench" / "run.sh").is_file()
    parent = json.loads(r.stdout)["mlflow_parent_run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert {a.path for a in client.list_artifacts(parent, "export/k8s")} == {"export/k8s/llm.yaml"}
