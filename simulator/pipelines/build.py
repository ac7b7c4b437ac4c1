"""Build the pipeline part of a simulation from its scenario sections: services and their cost
models, the KV tiers, the network, and the request classes bound to deployments by name.

Every request walks a pipeline: a scenario without ``pipelines:`` is the one request class
``PLAIN_CLASS`` (a single ``llm`` stage over its deployments). ``prepare`` runs before the
request store exists (it draws each request's class and rewrites prompt lengths for
shared-prefix / multi-turn classes); ``attach_pipelines`` wires the stages once the LLM
deployments of the core are built and returns the ``PipelineRun`` that ``simulate`` feeds,
and that gives the request columns and summary sections at the end.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from profiling.errors import HermesError
from profiling.hardware import CATALOG_ENV, HardwareSpec
from profiling.models import resolve_model

from .kv_tiers import TIER_DEFAULTS, KVHierarchy, TierSpec
from ..engine.memory import kv_bytes_per_token
from ..engine.workload import Requests
from .network import LinkSpec, Network, Place, Topology
from .pipeline import ClassRuntime, Pipelines, assign_classes
from .schema import CostConfig, KVCacheConfig, NetworkConfig, RequestClass, ServiceConfig, StageConfig
from .retrieval_cost import EncoderCost, IndexSpec, VectorSearchModel
from .service import FixedCost, ServiceDeployment, TokenCost
from .sessions import PrefixSpec, build_segments
from .stages import BuildContext, build_stage

CLASS_SEED_OFFSET = 7919     # class draws use their own stream so plain workloads are unchanged

# A plain LLM call is a one-stage pipeline: a scenario without ``pipelines:`` runs every request
# as this one class, whose ``llm`` stage names no deployment and so spreads over all of them.
PLAIN_CLASS = RequestClass(name="llm", stages=[StageConfig(kind="llm")])


def _hardware(name: str) -> HardwareSpec:
    from ..engine.deployment import _catalog
    return _catalog(os.environ.get(CATALOG_ENV, "")).get(name)


@dataclass(frozen=True)
class VectorSearchCost:
    ix: IndexSpec
    hw: HardwareSpec
    model: VectorSearchModel

    def batch_s(self, jobs) -> float:
        return self.model.time_s(self.ix, sum(s for s, _ in jobs), self.hw)


@lru_cache(maxsize=16)
def _encoder(model: str, hw_json: str, dtype: str | None, surrogate: str | None) -> EncoderCost:
    from ..engine.stepcost import load_predictor
    hw = HardwareSpec.model_validate_json(hw_json)
    return EncoderCost(resolve_model(model), hw, load_predictor(surrogate), dtype=dtype)


def service_cost(cfg: CostConfig, hw: HardwareSpec, surrogate: str | None):
    if cfg.kind == "tokens":
        return TokenCost(cfg.fixed_s, cfg.per_token_s)
    if cfg.kind == "fixed":
        return FixedCost(cfg.seconds)
    if cfg.kind == "vector_search":
        return VectorSearchCost(IndexSpec(**cfg.index.model_dump()), hw, VectorSearchModel())
    return _encoder(cfg.model, hw.model_dump_json(), cfg.dtype, surrogate)


def build_service(env, cfg: ServiceConfig, surrogate: str | None) -> ServiceDeployment:
    try:
        hw = _hardware(cfg.hardware)
        cost = service_cost(cfg.cost, hw, surrogate)
    except HermesError as e:
        raise HermesError(f"service '{cfg.name}': {e}") from None
    return ServiceDeployment(env, cfg.name, hw, cost, devices=cfg.devices, servers=cfg.servers,
                             max_batch=cfg.max_batch)


def build_kv(cfg: KVCacheConfig, bytes_per_token: float) -> tuple[KVHierarchy, dict]:
    tiers, kinds = [], {}
    for i, t in enumerate(cfg.tiers):
        d = TIER_DEFAULTS[t.kind]
        tiers.append(TierSpec(t.name, t.capacity_gb * 1e9,
                              t.bw_gb_s * 1e9 if t.bw_gb_s else d["bw"],
                              t.latency_us * 1e-6 if t.latency_us is not None else d["latency"],
                              t.scope or d["scope"]))
        kinds[i] = t.kind
    return KVHierarchy(tiers, cfg.block_tokens, bytes_per_token), kinds


def prepare_requests(reqs, classes: list[RequestClass], seed: int, max_context: int):
    """(requests with prompts rewritten for prefix classes, class index per request,
    per-request prefix segments or None)."""
    rng = np.random.default_rng(seed + CLASS_SEED_OFFSET)
    n = len(reqs)
    klass = assign_classes([c.weight for c in classes], n, rng)
    if not any(c.prefix for c in classes):
        return reqs, klass, None
    prompt = reqs.prompt.copy()
    segments: list = [[(("req", i), int(prompt[i]))] for i in range(n)]
    for k, c in enumerate(classes):
        if c.prefix is None:
            continue
        idx = np.flatnonzero(klass == k)
        spec = PrefixSpec(**c.prefix.model_dump(), max_context=max_context)
        segs, p, _ = build_segments(spec, reqs.prompt[idx], reqs.output[idx], rng)
        prompt[idx] = p
        for j, i in enumerate(idx):
            segments[i] = segs[j]
    return replace(reqs, prompt=prompt), klass, segments


def build_network(env, cfg: NetworkConfig | None, names: list[str]) -> tuple[Network, Topology | None, dict]:
    net = Network(env)
    if cfg is None:
        return net, None, {}
    unknown = sorted(set(cfg.places) - set(names))
    if unknown:
        raise HermesError(f"network.places: '{unknown[0]}' is not a deployment or service")
    levels = {k: LinkSpec(getattr(cfg, k).bw_gb_s * 1e9, getattr(cfg, k).latency_us * 1e-6)
              for k in ("device", "node", "rack")}
    try:
        places = {k: Place.parse(v) for k, v in cfg.places.items()}
    except ValueError as e:
        raise HermesError(f"network.places: {e}") from None
    for n in names:
        places.setdefault(n, Place())
    return net, Topology(net, levels), places


def build_pipelines(env, store, llms: dict, services: dict, classes: list[RequestClass],
                    klass: np.ndarray, segments, kv_cfg: KVCacheConfig | None,
                    net_cfg: NetworkConfig | None, seed: int, finish, stage_times: bool = True) -> Pipelines:
    net, topo, places = build_network(env, net_cfg, list(llms) + list(services))
    ctx = BuildContext(env, store, llms, services, net, np.random.default_rng(seed + 2 * CLASS_SEED_OFFSET),
                       places)
    if kv_cfg is not None:
        first = next(iter(llms.values()))
        pool = first.pool
        ctx.kv, ctx.tier_kinds = build_kv(kv_cfg, kv_bytes_per_token(pool.model, 1, 1, first.dep.kv_dtype))
        for name, d in llms.items():   # below HBM, KV crosses each device's PCIe (and NIC if remote)
            hw = d.pool.hw
            if hw.pcie_bw_gb_s:
                ctx.host_links[("pcie", name)] = (hw.pcie_bw_gb_s * 1e9 * d.pool.devices, 1e-6)
            if hw.inter_node_bw_gb_s:
                ctx.host_links[("nic", name)] = (hw.inter_node_bw_gb_s * 1e9 * d.pool.devices,
                                                 hw.inter_node_latency_us * 1e-6)
    runtimes = []
    for c in classes:
        stages = []
        for i, s in enumerate(c.stages):
            try:
                stages.append(build_stage(s, ctx))
            except HermesError as e:
                raise HermesError(f"pipelines.{c.name}.stages.{i}: {e}") from None
        runtimes.append(ClassRuntime(c.name, stages))
    pipe = Pipelines(env, store, runtimes, klass, finish, topo, stage_times)
    pipe.segments = segments
    pipe.ctx = ctx
    ctx.pipe = pipe
    for d in llms.values():
        d.done = pipe.llm_done
        if topo is not None and hasattr(d, "network"):
            d.network = net      # disaggregated KV handoffs share links with everything else
    return pipe


# ---- the bridge to ``simulate`` ------------------------------------------------------------------
def max_context(scenario) -> int:
    """Longest context any LLM deployment of the scenario accepts (caps multi-turn growth)."""
    out = 0
    for d in scenario.deployments:
        try:
            out = max(out, d.max_model_len or resolve_model(d.model).max_context)
        except HermesError as e:
            raise HermesError(f"deployment '{d.name}': {e}") from None
    return out


@dataclass(frozen=True)
class RequestPlan:
    """What is decided before the request store exists: the requests (prompts rewritten for
    prefix classes), their classes, each request's class index and prefix segments, and the
    pipeline sections the classes use."""

    requests: Requests
    classes: list[RequestClass]
    klass: np.ndarray
    segments: list | None
    services: list[ServiceConfig]
    kv_cache: KVCacheConfig | None
    network: NetworkConfig | None
    plain: bool                      # no ``pipelines:``: the run reports as a bare LLM call


def prepare(scenario, reqs: Requests) -> RequestPlan:
    """The request classes of ``scenario`` drawn onto ``reqs``. Without ``pipelines:`` that is
    ``PLAIN_CLASS``, which uses no service, KV tier or network section (they are ignored)."""
    plain = not scenario.pipelines
    classes = [PLAIN_CLASS] if plain else list(scenario.pipelines)
    # only multi-turn prefixes need the context cap (it resolves every deployment's model)
    cap = max_context(scenario) if any(c.prefix for c in classes) else 0
    reqs, klass, segments = prepare_requests(reqs, classes, scenario.seed, cap)
    if plain:
        return RequestPlan(reqs, classes, klass, segments, [], None, None, True)
    return RequestPlan(reqs, classes, klass, segments, list(scenario.services), scenario.kv_cache,
                       scenario.network, False)


@dataclass
class PipelineRun:
    """What ``simulate`` needs of the pipeline part: the entry point (``pipe.submit``), the
    services (for the fleet's cost), and the per-request columns and summary sections at the
    end. A plain run keeps the report of a bare LLM call: no class or stage columns, and
    ``stages`` as queue / prefill / decode from the request times."""

    pipe: Pipelines
    services: list
    plain: bool = False

    def columns(self) -> dict:
        if self.plain:
            return {}
        p = self.pipe
        return {"request_class": p.class_names(), **p.stage_columns()}

    def summary(self, frame) -> dict:
        if self.plain:
            return {"stages": llm_stage_breakdown(frame), "kv_cache": {}}
        from .pipeline import stage_breakdown
        p = self.pipe
        routes = {}
        for c in p.classes:
            for s in c.stages:
                if s.kind == "route":
                    routes[f"{c.name}.{s.label}"] = dict(s.counts)
        kv = p.ctx.kv.hit_rates() if p.ctx.kv is not None else {}
        return {"stages": stage_breakdown(frame, p.stage_names), "kv_cache": kv, "routes": routes,
                "request_classes": {c.name: int((frame.request_class == c.name).sum()) for c in p.classes},
                "services": {s.name: {"batches": s.batches, "max_queue": s.max_queue} for s in self.services},
                "network": {lk.name: {"bw_gb_s": lk.bw / 1e9, "peak_gb_s": lk.peak_rate / 1e9,
                                      "carried_gb": lk.carried / 1e9, "busy_s": lk.busy_s}
                            for lk in p.ctx.network.links.values()}}


def attach_pipelines(scenario, env, store, deps: list, plan: RequestPlan) -> PipelineRun:
    """Services + stages of ``plan`` over the core's LLM deployments ``deps``; a request that
    leaves its last stage completes in the store."""
    services = {s.name: build_service(env, s, scenario.surrogate) for s in plan.services}
    llms = {d.dep.name: d for d in deps}
    pipe = build_pipelines(env, store, llms, services, plan.classes, plan.klass, plan.segments,
                           plan.kv_cache, plan.network, scenario.seed, store.complete,
                           stage_times=not plan.plain)   # a plain report derives its stages from the rows
    return PipelineRun(pipe, list(services.values()), plan.plain)


def llm_stage_breakdown(frame) -> dict:
    """``stages`` of a plain run: queueing, prefill (to the first token), decode."""
    from .pipeline import stage_breakdown
    f = frame.assign(stage_queue_s=frame.start_s - frame.arrival_s,
                     stage_prefill_s=frame.first_token_s - frame.start_s,
                     stage_decode_s=frame.finish_s - frame.first_token_s)
    return stage_breakdown(f, ["queue", "prefill", "decode"])
