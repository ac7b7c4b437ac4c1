"""Kubernetes manifests: an apps/v1 Deployment and a v1 Service per engine launch and per
pipeline service, validated offline with ``kubernetes_validate`` (strict) for ``K8S_VERSION``."""
from __future__ import annotations

import re
from typing import Any

import yaml

from profiling.errors import HermesError
from simulator.engine.engines import device
from simulator.pipelines.schema import ServiceConfig

from .engine_cmd import EXECUTABLE, PORT, Launch, gpu_product, hf_name

# Kubernetes release the manifests are checked against (kubernetes_validate's bundled schemas).
K8S_VERSION = "1.33.0"
EXTRA_MOUNT = "/etc/hermes"                      # where a TensorRT-LLM extra YAML is mounted
EXTRA_FILE = "extra-llm-api.yaml"


def dns_name(*parts: str) -> str:
    """A DNS-1123 label from names ('rag-chat', 'llm', 'prefill' -> 'rag-chat-llm-prefill')."""
    s = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return re.sub(r"-+", "-", s)[:63].rstrip("-") or "hermes"


def _labels(app: str, scenario: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": dns_name(scenario),
            "app.kubernetes.io/managed-by": "hermes-sim-export"}


def _deployment(name: str, scenario: str, replicas: int, container: dict, *, node_selector: dict | None,
                volumes: list[dict]) -> dict:
    pod: dict[str, Any] = {"containers": [container]}
    if node_selector:
        pod["nodeSelector"] = node_selector
    if volumes:
        pod["volumes"] = volumes
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": _labels(name, scenario)},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                     "template": {"metadata": {"labels": _labels(name, scenario)}, "spec": pod}}}


def _service(name: str, scenario: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": _labels(name, scenario)},
            "spec": {"selector": {"app.kubernetes.io/name": name},
                     "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}]}}


def hf_token_env() -> dict:
    """HF_TOKEN from the Secret 'hf-token' (key 'token'), optional: public models need none."""
    return {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token",
                                                                "optional": True}}}


def launch_manifests(ln: Launch, scenario: str, image: str | None) -> list[dict]:
    """Deployment (+ ConfigMap of the extra YAML) + Service of one launch."""
    name = dns_name(scenario, ln.name)
    extra_path = f"{EXTRA_MOUNT}/{EXTRA_FILE}" if ln.extra_yaml else None
    container = {"name": "engine", "image": image or ln.image_default,
                 "command": list(EXECUTABLE[ln.engine]), "args": ln.args(port=PORT, extra_path=extra_path),
                 "env": [hf_token_env(), {"name": "HERMES_MODEL", "value": ln.model}],
                 "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                 "resources": {"limits": {"nvidia.com/gpu": str(ln.gpus)}},
                 "readinessProbe": {"httpGet": {"path": "/health", "port": PORT}, "initialDelaySeconds": 60,
                                    "periodSeconds": 10},
                 "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}]}
    # NCCL between tensor-parallel ranks needs more shared memory than a container's default 64 MiB
    volumes: list[dict] = [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
    docs: list[dict] = []
    if ln.extra_yaml:
        cm = f"{name}-extra"
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": cm, "labels": _labels(name, scenario)},
                     "data": {EXTRA_FILE: yaml.safe_dump(ln.extra_yaml, sort_keys=True)}})
        container["volumeMounts"].append({"name": "extra", "mountPath": EXTRA_MOUNT, "readOnly": True})
        volumes.append({"name": "extra", "configMap": {"name": cm}})
    docs.append(_deployment(name, scenario, ln.replicas, container,
                            node_selector={"nvidia.com/gpu.product": ln.product}, volumes=volumes))
    docs.append(_service(name, scenario))
    return docs


def service_manifests(sv: ServiceConfig, scenario: str, image: str) -> list[dict]:
    """A pipeline service (tokenizer, embedder, vector search, reranker) as a Deployment of
    ``servers`` pods whose image the user sets (``--service-image NAME=IMAGE``); what it must run
    is in its environment, and an encoder model is passed as the container's argument."""
    name = dns_name(scenario, sv.name)
    hw = device(sv.hardware)
    cost = sv.cost
    env = [{"name": "HERMES_SERVICE", "value": sv.name}, {"name": "HERMES_SERVICE_KIND", "value": cost.kind},
           {"name": "HERMES_SERVICE_MAX_BATCH", "value": str(sv.max_batch)}]
    container: dict[str, Any] = {"name": "service", "image": image,
                                 "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]}
    if cost.kind == "encoder" and cost.model:
        model = hf_name(cost.model)
        env += [{"name": "HERMES_MODEL", "value": model}, hf_token_env()]
        container["args"] = [model, "--host", "0.0.0.0", "--port", str(PORT)]
    elif cost.kind == "vector_search":
        ix = cost.index
        env += [{"name": "HERMES_INDEX", "value": f"{ix.kind} corpus={ix.corpus} dim={ix.dim} k={ix.k} "
                                                  f"nprobe={ix.nprobe} m={ix.m}"}]
    container["env"] = env
    node_selector = None
    if hw.kind == "gpu":
        container["resources"] = {"limits": {"nvidia.com/gpu": str(sv.devices)}}
        node_selector = {"nvidia.com/gpu.product": gpu_product(hw)}
    return [_deployment(name, scenario, sv.servers, container, node_selector=node_selector, volumes=[]),
            _service(name, scenario)]


def validate(docs: list[dict], where: str) -> None:
    """Each manifest against the Kubernetes ``K8S_VERSION`` schema, strictly (no unknown fields)."""
    import kubernetes_validate

    for d in docs:
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise HermesError(f"{where}: {d['kind']} {d['metadata']['name']}: {path}: {e.message} "
                              f"(Kubernetes {K8S_VERSION} schema)") from None


def dump(docs: list[dict]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=1000)
