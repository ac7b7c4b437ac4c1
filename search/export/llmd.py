"""Helm values for llm-d's model service chart (llm-d-incubation/llm-d-modelservice, chart
v0.4.x ``values.yaml``): ``modelArtifacts``, ``routing``, and ``decode`` / ``prefill`` pools
with ``parallelism``, ``acceleratorTypes`` and one ``vllm`` container each.

With ``modelCommand: vllmServe`` the chart itself writes ``vllm serve <model> --port ...
--tensor-parallel-size ... --served-model-name ...``, so the container's ``args`` carry the
rest of the engine flags. llm-d serves vLLM only.
"""
from __future__ import annotations

from typing import Any

from profiling.errors import HermesError

from .engine_cmd import Launch
from .k8s import hf_token_env

# Arguments the chart writes from its own fields (parallelism, routing, modelArtifacts).
CHART_ARGS = ("tensor_parallel_size", "data_parallel_size", "data_parallel_size_local", "served_model_name")
# What check() requires: a summary of the chart's values schema for the fields written here.
POOL_KEYS = ("create", "replicas", "parallelism", "acceleratorTypes", "containers")
CONTAINER_KEYS = ("name", "image", "modelCommand", "args", "env", "resources", "mountModelVolume")


def values(launches: list[Launch], image: str | None) -> dict[str, Any]:
    """The values of one LLM deployment (its launches: serve, or prefill + decode)."""
    if launches[0].engine != "vllm":
        raise HermesError(f"deployment {launches[0].deployment}: llm-d's model service runs vLLM, and this "
                          f"deployment runs {launches[0].engine}; use --target k8s or dynamo")
    model = launches[0].model
    roles = {ln.role: ln for ln in launches}
    disagg = "prefill" in roles
    doc: dict[str, Any] = {
        "multinode": False,
        "modelArtifacts": {"name": model, "uri": f"hf://{model}", "size": "100Gi",
                           "labels": {"llm-d.ai/inference-serving": "true",
                                      "llm-d.ai/model": model.replace("/", "-").replace(".", "-").lower()}},
        "routing": {"servicePort": 8000, "proxy": {"enabled": disagg, "connector": "nixlv2", "secure": False}},
        "decode": _pool(roles.get("decode") or roles["serve"], image),
        "prefill": _pool(roles["prefill"], image) if disagg else {"create": False, "replicas": 0},
    }
    return doc


def _pool(ln: Launch, image: str | None) -> dict[str, Any]:
    args = ln.args(model=False, host=False, skip=CHART_ARGS)
    return {"create": True, "replicas": ln.replicas,
            "parallelism": {"tensor": ln.tp, "data": ln.dp, "dataLocal": ln.dp, "workers": 1},
            "acceleratorTypes": {"labelKey": "nvidia.com/gpu.product", "labelValues": [ln.product]},
            "containers": [{"name": "vllm", "image": image or ln.image_default, "modelCommand": "vllmServe",
                            "args": args, "env": [hf_token_env()],
                            # TP x PP: the chart counts TP x data-local only, so the limit is set here
                            "resources": {"limits": {"nvidia.com/gpu": str(ln.gpus)},
                                          "requests": {"nvidia.com/gpu": str(ln.gpus)}},
                            "mountModelVolume": True}]}


def check(doc: dict[str, Any], where: str) -> None:
    """The fields the chart reads are present and typed as its values schema has them."""
    for k in ("modelArtifacts", "routing", "decode", "prefill"):
        if not isinstance(doc.get(k), dict):
            raise HermesError(f"{where}: llm-d values need a '{k}' mapping")
    if not str(doc["modelArtifacts"].get("uri", "")).startswith("hf://"):
        raise HermesError(f"{where}: modelArtifacts.uri must be hf://<model>")
    for role in ("decode", "prefill"):
        pool = doc[role]
        if not pool.get("create"):
            continue
        for k in POOL_KEYS:
            if k not in pool:
                raise HermesError(f"{where}: {role}.{k} is missing")
        if not isinstance(pool["replicas"], int) or pool["replicas"] < 1:
            raise HermesError(f"{where}: {role}.replicas must be a whole number >= 1")
        for c in pool["containers"]:
            for k in CONTAINER_KEYS:
                if k not in c:
                    raise HermesError(f"{where}: {role}.containers.{k} is missing")
            if c["modelCommand"] not in ("vllmServe", "imageDefault", "custom"):
                raise HermesError(f"{where}: {role}.containers.modelCommand '{c['modelCommand']}' is not the chart's")
            if not all(isinstance(a, str) for a in c["args"]):
                raise HermesError(f"{where}: {role}.containers.args must all be text")
