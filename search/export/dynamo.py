"""NVIDIA Dynamo: a DynamoGraphDeployment custom resource (``nvidia.com/v1alpha1``) per LLM
deployment, laid out as Dynamo's own examples (``examples/backends/<engine>/deploy/agg.yaml``,
``disagg.yaml``, releases 0.5-0.8): ``spec.services`` with a ``Frontend`` and one worker
(``componentType: worker``), or a prefill and a decode worker (``subComponentType``) when
disaggregated; the worker runs ``python3 -m dynamo.<engine>`` with the engine's own flags.
"""
from __future__ import annotations

from typing import Any

import yaml

from profiling.errors import HermesError

from .engine_cmd import Launch
from .k8s import EXTRA_FILE, EXTRA_MOUNT, dns_name, validate

DYNAMO_VERSION = "0.7.1"
RUNTIME = {"vllm": "vllm-runtime", "sglang": "sglang-runtime", "trtllm": "tensorrtllm-runtime"}
WORKER = {"vllm": "Vllm", "sglang": "Sglang", "trtllm": "Trtllm"}
# Flags Dynamo's workers add to the engine's own.
DYNAMO_FLAGS = frozenset({"is_prefill_worker", "extra_engine_args", "model_path", "served_model_name"})
# What check() requires of the resource (the CRD's required fields for what is written here).
REQUIRED_SERVICE = ("componentType", "replicas", "extraPodSpec")


def image(engine: str, version: str, override: str | None) -> str:
    return override or f"nvcr.io/nvidia/ai-dynamo/{RUNTIME[engine]}:{version}"


def graph(launches: list[Launch], scenario: str, version: str, override: str | None) -> list[dict[str, Any]]:
    """The DynamoGraphDeployment of one LLM deployment, last, after the ConfigMap of a
    TensorRT-LLM extra YAML its workers mount."""
    first = launches[0]
    name = dns_name(scenario, first.deployment)
    img = image(first.engine, version, override)
    docs: list[dict[str, Any]] = []
    services: dict[str, Any] = {
        "Frontend": {"dynamoNamespace": name, "componentType": "frontend", "replicas": 1,
                     "extraPodSpec": {"mainContainer": {"image": img, "command": ["python3", "-m", "dynamo.frontend"],
                                                        "args": ["--http-port", "8000"]}}}}
    for ln in launches:
        role = {"serve": "", "prefill": "Prefill", "decode": "Decode"}[ln.role]
        svc: dict[str, Any] = {"dynamoNamespace": name, "componentType": "worker", "replicas": ln.replicas,
                               "envFromSecret": "hf-token-secret",
                               "resources": {"limits": {"gpu": str(ln.gpus)}, "requests": {"gpu": str(ln.gpus)}},
                               "extraPodSpec": {"nodeSelector": {"nvidia.com/gpu.product": ln.product},
                                                "mainContainer": {"image": img,
                                                                  "command": ["python3", "-m", f"dynamo.{ln.engine}"],
                                                                  "args": _args(ln)}}}
        if ln.role != "serve":
            svc["subComponentType"] = ln.role
        extra = engine_yaml(ln)
        if extra:
            cm = f"{name}-{ln.role}-extra"
            docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm},
                         "data": {EXTRA_FILE: yaml.safe_dump(extra, sort_keys=True)}})
            svc["extraPodSpec"]["volumes"] = [{"name": "extra", "configMap": {"name": cm}}]
            svc["extraPodSpec"]["mainContainer"]["volumeMounts"] = [
                {"name": "extra", "mountPath": EXTRA_MOUNT, "readOnly": True}]
        services[f"{WORKER[ln.engine]}{role}Worker"] = svc
    return docs + [{"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
                    "metadata": {"name": name}, "spec": {"backendFramework": first.engine, "services": services}}]


def _args(ln: Launch) -> list[str]:
    if ln.engine == "vllm":
        # Dynamo's vLLM worker takes vLLM's flags, its prefill worker is marked by --is-prefill-worker
        # and it sets up the NIXL connector itself
        args = ["--model", ln.model, *ln.args(model=False, host=False, skip=("kv_transfer_config",))]
        return args + (["--is-prefill-worker"] if ln.role == "prefill" else [])
    if ln.engine == "sglang":
        # Dynamo's SGLang examples move the KV with NIXL (SGLang's own default is Mooncake)
        nixl = ["--disaggregation-transfer-backend", "nixl"] if ln.role != "serve" else []
        return ln.args(host=False) + nixl
    return ["--model-path", ln.model, "--extra-engine-args", f"{EXTRA_MOUNT}/{EXTRA_FILE}"]


def engine_yaml(ln: Launch) -> dict[str, Any] | None:
    """TensorRT-LLM: every setting as LLM API options in the worker's --extra-engine-args file,
    since Dynamo's TensorRT-LLM worker has flag names of its own for the few it takes."""
    if ln.engine != "trtllm":
        return None
    names = {"tp_size": "tensor_parallel_size", "pp_size": "pipeline_parallel_size"}
    return dict(sorted({**{names.get(k, k): v for k, v in ln.flags}, **(ln.extra_yaml or {})}.items()))


def check(doc: dict[str, Any], where: str) -> None:
    """apiVersion, kind, metadata.name, one frontend, workers with replicas, image and args, a
    prefill and a decode worker together or not at all; each main container a valid Kubernetes
    container (checked by ``k8s.validate`` on a Pod built from it)."""
    if doc.get("apiVersion") != "nvidia.com/v1alpha1" or doc.get("kind") != "DynamoGraphDeployment":
        raise HermesError(f"{where}: not a nvidia.com/v1alpha1 DynamoGraphDeployment")
    if dns_name(doc["metadata"].get("name", "")) != doc["metadata"].get("name"):
        raise HermesError(f"{where}: metadata.name must be a DNS-1123 label")
    services = doc.get("spec", {}).get("services")
    if not isinstance(services, dict) or not services:
        raise HermesError(f"{where}: spec.services must name at least one service")
    kinds = [s.get("componentType") for s in services.values()]
    if kinds.count("frontend") != 1 or "worker" not in kinds:
        raise HermesError(f"{where}: spec.services needs one frontend and at least one worker")
    subs = sorted(s.get("subComponentType", "") for s in services.values() if s.get("componentType") == "worker")
    if any(subs) and subs != ["decode", "prefill"]:
        raise HermesError(f"{where}: a disaggregated graph needs one prefill and one decode worker, not {subs}")
    for key, s in services.items():
        for k in REQUIRED_SERVICE:
            if k not in s:
                raise HermesError(f"{where}: spec.services.{key}.{k} is missing")
        if not isinstance(s["replicas"], int) or s["replicas"] < 1:
            raise HermesError(f"{where}: spec.services.{key}.replicas must be a whole number >= 1")
        main = s["extraPodSpec"].get("mainContainer", {})
        if not main.get("image"):
            raise HermesError(f"{where}: spec.services.{key}.extraPodSpec.mainContainer.image is missing")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": dns_name(key)},
               "spec": {"containers": [{"name": "main", **main}],
                        **{k: v for k, v in s["extraPodSpec"].items() if k != "mainContainer"}}}
        validate([pod], f"{where}: spec.services.{key}")
