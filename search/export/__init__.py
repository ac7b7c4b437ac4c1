"""From a scenario (the best configuration of a search) to a running deployment.

``export(path, target, outdir)`` writes, per LLM deployment of the scenario, the engine launch
commands (``engine_cmd``), Kubernetes manifests (``k8s``), llm-d Helm values (``llmd``) or a
Dynamo graph (``dynamo``), plus the benchmark that checks the prediction (``bench``) and a
README.md naming every file. Everything is built and checked before the first file is written:
a target that cannot express the scenario is refused in one line (``HermesError``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from profiling.atomicfile import write_text_atomic
from profiling.errors import HermesError
from simulator.engine.engines import device
from simulator.scenario import load_scenario

from . import bench, dynamo, engine_cmd, k8s, llmd
from .engine_cmd import ENGINES, Launch

TARGETS = ("vllm", "sglang", "trtllm", "k8s", "llm-d", "dynamo")


@dataclass
class Export:
    """Files to write (relative path -> text, with what each is for) and the notes on them."""

    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, path: str, text: str, what: str) -> None:
        self.files[path] = (text, what)


def export(path: str | Path, target: str, outdir: str | Path, *, image: str | None = None,
           engine_version: str | None = None, data_parallel: bool = False, engine: str | None = None,
           service_images: dict[str, str] | None = None, dynamo_version: str = dynamo.DYNAMO_VERSION) -> list[Path]:
    """Write the export of the scenario at ``path`` for ``target`` (or ``all``) to ``outdir``;
    ``engine`` runs the deployments without an engine block in manifests (default vLLM). Returns
    the files written."""
    if target not in TARGETS + ("all",):
        raise HermesError(f"--target: '{target}' is not one of {', '.join(TARGETS + ('all',))}")
    if engine is not None and engine not in ENGINES:
        raise HermesError(f"--engine: '{engine}' is not one of {', '.join(ENGINES)}")
    if engine is not None and target in ENGINES and engine != target:
        raise HermesError(f"--engine {engine} contradicts --target {target}")
    sc = load_scenario(path)
    src = Path(path)
    engines = sorted({d.engine.name if d.engine is not None else (engine or "vllm") for d in sc.deployments})
    targets = [*engines, "k8s", "llm-d", "dynamo"] if target == "all" else [target]
    ex = Export()
    plans: dict[str, list[Launch]] = {}
    for t in targets:
        try:
            plans.update(_one(sc, str(src), t, ex, image=image, engine_version=engine_version, engine=engine,
                              data_parallel=data_parallel, service_images=service_images or {},
                              dynamo_version=dynamo_version))
        except HermesError as e:
            if target != "all":
                raise
            ex.skipped.append(f"{t}: {e}")
    if not plans:
        raise HermesError(f"{src}: no target can express this scenario ({'; '.join(ex.skipped)})")
    if sc.kv_cache is not None:
        ex.notes.append("kv_cache: the scenario's KV tiers (" + ", ".join(
            f"{t.kind} {t.capacity_gb:g} GB" for t in sc.kv_cache.tiers) + ") model a KV cache store "
            "outside the engine (e.g. LMCache); it is not exported, and the engines keep the scenario's own "
            "prefix-cache setting")
    _bench(sc, str(src), plans, ex)
    ex.add("README.md", _readme(sc, src, target, ex), "this file")
    out = Path(outdir)
    written = []
    for rel, (text, _) in sorted(ex.files.items()):
        p = out / rel
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            written.append(write_text_atomic(p, text))
            if rel.endswith(".sh"):
                p.chmod(0o755)
        except OSError as e:
            raise HermesError(f"{p}: cannot write it ({e.strerror or e})") from None
    return written


def _one(sc, src: str, target: str, ex: Export, *, image, engine_version, engine, data_parallel, service_images,
         dynamo_version) -> dict[str, list[Launch]]:
    """Build and check one target's files into ``ex``; the launches by deployment."""
    pinned = target in ENGINES
    engine = target if pinned else engine
    plans: dict[str, list[Launch]] = {}
    staged: dict[str, tuple[str, str]] = {}
    for i, d in enumerate(sc.deployments):
        where = f"{src}: deployments.{i}"
        lns = engine_cmd.launches(d, engine, engine_version, where, pinned=pinned)
        for ln in lns:
            engine_cmd.check_launch(ln, f"{where} ({ln.name})")
        plans[d.name] = lns
        if pinned:
            hw = device(d.hardware)
            if data_parallel and lns[0].engine == "trtllm":
                raise HermesError(f"{where}: --data-parallel: trtllm-serve has no data-parallel flag here; "
                                  "drop it for one engine per replica")
            extra_rel = f"{target}/{d.name}-extra-llm-api.yaml"
            has_extra = any(ln.extra_yaml for ln in lns)
            staged[f"{target}/{d.name}.sh"] = (
                engine_cmd.script(lns, hw.devices_per_node or 8, data_parallel, extra_rel if has_extra else None),
                f"{lns[0].engine} launch commands of deployment '{d.name}' (" +
                ", ".join(f"{ln.role}: {ln.replicas} x TP{ln.tp} PP{ln.pp} on {ln.hardware}" for ln in lns) + ")")
            for ln in lns:
                if ln.extra_yaml:
                    staged[extra_rel] = (yaml.safe_dump(ln.extra_yaml, sort_keys=True),
                                         "TensorRT-LLM extra LLM API options (--extra_llm_api_options)")
            if "prefill" in {ln.role for ln in lns}:
                ex.notes.append(f"{target}/{d.name}.sh: prefill and decode engines need a proxy in front that "
                                "sends each request to a prefill engine, then to a decode engine (llm-d's "
                                "routing sidecar, Dynamo's frontend, or the engine's own disaggregation router)")
        elif target == "k8s":
            docs = [m for ln in lns for m in k8s.launch_manifests(ln, sc.name, image)]
            k8s.validate(docs, f"{where} (k8s)")
            staged[f"k8s/{d.name}.yaml"] = (k8s.dump(docs), f"Kubernetes Deployment + Service of '{d.name}' "
                                            f"({', '.join(ln.name for ln in lns)}; Kubernetes {k8s.K8S_VERSION})")
        elif target == "llm-d":
            doc = llmd.values(lns, image)
            llmd.check(doc, f"{where} (llm-d)")
            staged[f"llm-d/{d.name}-values.yaml"] = (
                yaml.safe_dump(doc, sort_keys=False, width=1000),
                f"Helm values of llm-d's model service for '{d.name}' "
                "(helm install NAME llm-d-modelservice/llm-d-modelservice -f THIS_FILE)")
        elif target == "dynamo":
            for ln in lns:
                extra = dynamo.engine_yaml(ln)
                if extra:
                    engine_cmd.check_flags("trtllm", [f"--{k}" for k in extra], f"{where} (dynamo extra engine args)")
            docs = dynamo.graph(lns, sc.name, dynamo_version, image)
            dynamo.check(docs[-1], f"{where} (dynamo)")
            for key, svc in docs[-1]["spec"]["services"].items():
                if svc["componentType"] == "worker":
                    engine_cmd.check_flags(lns[0].engine, svc["extraPodSpec"]["mainContainer"]["args"],
                                           f"{where} (dynamo {key})", dynamo.DYNAMO_FLAGS, lns[0].version)
            k8s.validate(docs[:-1], f"{where} (dynamo)")
            staged[f"dynamo/{d.name}.yaml"] = (k8s.dump(docs), f"Dynamo DynamoGraphDeployment of '{d.name}' "
                                               f"(nvidia.com/v1alpha1, Dynamo {dynamo_version} runtime images)")
    if target == "k8s" and sc.services:
        for j, sv in enumerate(sc.services):
            if sv.cost.kind != "encoder" and sv.name not in service_images:
                ex.notes.append(f"k8s/service-{sv.name}.yaml: a {sv.cost.kind} service has no public image; the "
                                "engine image written there is only the default: set --service-image")
            elif device(sv.hardware).kind != "gpu" and sv.name not in service_images:
                ex.notes.append(f"k8s/service-{sv.name}.yaml: runs on {sv.hardware} (a CPU), where the CUDA "
                                "engine image does not run: set --service-image to a CPU build")
            img = service_images.get(sv.name) or image or next(iter(plans.values()))[0].image_default
            docs = k8s.service_manifests(sv, sc.name, img)
            k8s.validate(docs, f"{src}: services.{j} (k8s)")
            staged[f"k8s/service-{sv.name}.yaml"] = (
                k8s.dump(docs), f"pipeline service '{sv.name}' ({sv.cost.kind} on {sv.hardware}, {sv.servers} "
                f"pods); image {img}: set it with --service-image {sv.name}=IMAGE")
    unknown = sorted(set(service_images) - {s.name for s in sc.services})
    if unknown:
        raise HermesError(f"--service-image: '{unknown[0]}' is not a service of {src}")
    for rel, v in staged.items():
        ex.add(rel, *v)
    for lns in plans.values():
        for ln in lns:
            ex.notes += [f"{ln.name}: {n}" for n in ln.notes if f"{ln.name}: {n}" not in ex.notes]
    return plans


def _bench(sc, src: str, plans: dict[str, list[Launch]], ex: Export) -> None:
    sets, notes = bench.datasets(sc)
    ex.notes += notes
    parts = ["#!/bin/sh", "# Generated by hermes-sim export: run from the export folder with the engines up;",
             "# BASE_URL is the server (or the proxy / frontend) the requests go to.", "set -e", ""]
    for ds in sets:
        lns = plans[ds.deployment]
        ln = next((x for x in lns if x.role == "decode"), lns[0])
        rel = "bench/dataset.jsonl" if len(sets) == 1 else f"bench/dataset-{ds.deployment}.jsonl"
        ex.add(rel, "\n".join(ds.lines) + "\n",
               f"{len(ds.lines)} requests of '{ds.deployment}' (prompt, output_tokens, prompt_tokens per line)")
        text, n2 = bench.run_script(sc, src, ds, ln, rel)
        parts.append(text)
        ex.notes += n2
    ex.add("bench/run.sh", "\n".join(parts), "the benchmark (vllm bench serve on the datasets), then hermes-sim "
           "validate and calibrate on its result")


def _readme(sc, src: Path, target: str, ex: Export) -> str:
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    lines = [f"# Export of scenario '{sc.name}'", "",
             f"From `{src}` (sha256 {digest}), `hermes-sim export --target {target}`.", "",
             "| file | what it is for |", "|---|---|"]
    lines += [f"| `{rel}` | {what} |" for rel, (_, what) in sorted(ex.files.items())]
    lines += ["| `README.md` | this file |", "",
              "## Notes", "",
              "* Engine flags are the engine's own spelling and are all in the argument list of the release "
              "exported for (vLLM, SGLang: the newest release at or below it in "
              "`profiling/readers/runs/engine_args_releases.yaml`; TensorRT-LLM: its list in "
              "`engine_args.yaml`); values are what the simulation used.",
              f"* Kubernetes manifests pass `kubernetes_validate` (strict) for Kubernetes {k8s.K8S_VERSION}; "
              "GPUs are requested as `nvidia.com/gpu` and pinned with the `nvidia.com/gpu.product` node label "
              "of NVIDIA's GPU feature discovery. Secrets: `hf-token` (key `token`) for k8s and llm-d, "
              "`hf-token-secret` for Dynamo.",
              "* `bench/dataset.jsonl` holds the simulator's own request stream (same seed): prompts are random "
              "common words, one token each in Llama-3 / Qwen / Mistral tokenizers (plus the BOS the server "
              "adds); shared prefixes are the same text. `vllm bench serve` shuffles a custom dataset, so the "
              "order of prompts differs from the simulation while their lengths and the arrival process match.",
              "* Flag names of `vllm bench serve` used in `bench/run.sh` that depend on the vLLM release: "
              "`--custom-output-len -1` with a per-line `output_tokens` (recent releases; older ones take one "
              "output length for all), `--skip-chat-template`, `--burstiness`, `--result-filename`.",
              "* llm-d values follow llm-d-modelservice chart v0.4.x (`modelCommand: vllmServe`; the chart adds "
              "the model, port, tensor parallel size and served model name); the Dynamo graph follows Dynamo's "
              "v1alpha1 examples (Frontend + worker services, `subComponentType` prefill/decode)."]
    lines += [f"* {n}" for n in ex.notes]
    if ex.skipped:
        lines += ["", "## Targets not written", ""] + [f"* {s}" for s in ex.skipped]
    return "\n".join(lines) + "\n"
