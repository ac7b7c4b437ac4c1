"""Deployments: a model served by replicas behind a router. ``submit(rid, t)`` takes a
request in and ``done(rid, t)`` — rebound by the pipeline's ``llm`` stage, ``store.complete``
by default — lets it out; the engine knows nothing else of the pipeline around it.

``Aggregated``: every replica prefills and decodes. ``Disaggregated``: a prefill pool hands
each request's KV over a link to a decode pool — global (any to any) or local (fixed P:D
groups) — and the transfer time is charged on that link.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from math import inf
from typing import Callable

from profiling.errors import HermesError
from profiling.hardware import CATALOG_ENV, HardwareCatalog, HardwareSpec, load_catalog
from profiling.models import ModelSpec, resolve_model

from .core import Environment
from .memory import MemoryPlan, plan_memory
from .replica import Replica
from .router import ROUTERS, LeastKV
from .config import Deployment, RouterConfig
from .engines import resolve_for
from . import speculative
from .lora import LoraSetup, slot_bytes
from .schedulers import SCHEDULERS
from .stepcost import StepCost, step_cost, step_table
from .store import Store

# A device's host link (B/s / 1e9) when its catalog entry names none: PCIe Gen5 x16.
HOST_LINK_GB_S = 64.0


@dataclass(frozen=True)
class Pool:
    """Resolved pieces of one kind of replica (model, hardware, memory, step time)."""

    model: ModelSpec
    hw: HardwareSpec
    tp: int
    pp: int
    mem: MemoryPlan
    cost: StepCost
    max_context: int

    @property
    def devices(self) -> int:
        return self.tp * self.pp


@lru_cache(maxsize=4)
def _catalog(extra_files: str) -> HardwareCatalog:
    """Parsing the catalog YAML costs ~0.1 s: once per distinct $HERMES_CATALOG value."""
    return load_catalog()


def resolve(dep: Deployment, hardware: str | None = None, tp: int | None = None,
            field: str = "tp") -> tuple[ModelSpec, HardwareSpec]:
    """The deployment's model and device; ``tp`` (named ``field`` in errors) is checked
    against the model's heads."""
    try:
        model = resolve_model(dep.model)
        hw = _catalog(os.environ.get(CATALOG_ENV, "")).get(hardware or dep.hardware)
    except HermesError as e:
        raise HermesError(f"deployment '{dep.name}': {e}") from None
    if tp is not None:
        check_tp(dep, model, tp, field)
    return model, hw


def check_tp(dep: Deployment, model: ModelSpec, tp: int, field: str = "tp") -> None:
    """Tensor parallelism splits attention heads across devices: vLLM requires tp to divide
    the attention heads, and the KV heads to divide by tp or be replicated (tp a multiple)."""
    h, kv = model.num_heads, model.num_kv_heads
    if h % tp or (kv % tp and tp % kv):
        raise HermesError(f"deployment '{dep.name}' {field}: {tp} does not split the {h} attention heads "
                          f"({kv} KV heads) of {model.name}: tp must divide {h}, and divide {kv} or be a "
                          "multiple of it")


def memory_plan(dep: Deployment, model: ModelSpec, hw: HardwareSpec, tp: int, own: bool = True) -> MemoryPlan:
    """KV plan of ``dep``'s devices (``own``) or of another pool of it (a disaggregated decode
    pool on other hardware or TP), which the engine's recorded block count does not describe."""
    s = dep.scheduler
    return plan_memory(model, hw, tp=tp, pp=dep.pp, dtype=dep.dtype, kv_dtype=dep.kv_dtype,
                       utilization=dep.gpu_memory_utilization, reserve_gb=dep.reserve_gb,
                       max_tokens=s.max_tokens_per_step, max_seqs=s.max_batch_size,
                       block_size=s.block_size, label=dep.name, num_blocks=dep.kv_blocks if own else None,
                       adapters=slot_bytes(dep.lora, model, dep.dtype, tp, dep.pp) if dep.lora else 0.0,
                       ep=dep.ep if own else 1)


def build_pool(dep: Deployment, surrogate: str | None, hardware: str | None = None,
               tp: int | None = None, decodes: bool = True) -> Pool:
    field = "scheduler.decode_tp" if tp else "tp"
    own = hardware is None and tp is None
    tp = tp or dep.tp
    model, hw = resolve(dep, hardware, tp, field)
    mem = memory_plan(dep, model, hw, tp, own)
    if dep.speculative is not None and decodes:     # the proposer's weights and KV share the devices
        try:
            mem = speculative.with_proposer(mem, dep.speculative, model, tp, dep.dtype, dep.kv_dtype,
                                            fixed_blocks=own and dep.kv_blocks is not None)
        except HermesError as e:
            raise HermesError(f"deployment '{dep.name}' speculative: {e}") from None
    # the engine block's step-time effects (all-reduce kernel, CUDA-graph padding, async
    # scheduling) on this device
    eng = resolve_for(dep.engine, dep.model, hw.name, tp, dep.pp, dep.dtype) if dep.engine else None
    try:
        table = step_table(surrogate, model, hw, dtype=dep.dtype, kv_dtype=dep.kv_dtype, tp=tp, pp=dep.pp,
                           fusions=tuple(dep.fusions), collective_kernel=eng.all_reduce_rule if eng else None,
                           ep=dep.ep if own else 1)
    except HermesError as e:
        raise HermesError(f"deployment '{dep.name}': {e}") from None
    s = dep.scheduler
    cost = step_cost(table, dep.overhead, max_tokens=max(s.max_tokens_per_step, 1),
                     max_seqs=s.max_batch_size + 1,
                     graph_sizes=eng.cuda_graph_sizes if eng and eng.pad_decode else (),
                     async_overlap=bool(eng and eng.async_scheduling))
    ctx = dep.max_model_len or model.max_context
    return Pool(model, hw, tp, dep.pp, mem, cost, ctx)


class Aggregated:
    """Replicas that both prefill and decode, behind a router."""

    def __init__(self, env: Environment, store: Store, dep: Deployment, surrogate: str | None,
                 debug: bool = False) -> None:
        self.env, self.store, self.dep, self.surrogate = env, store, dep, surrogate
        self.done = store.complete
        pool = self.pool = build_pool(dep, surrogate)
        self.lora = LoraSetup(dep, pool, surrogate, store) if dep.lora else None
        policy_cls = SCHEDULERS[dep.scheduler.policy]
        self.whole = policy_cls.whole_prompts
        self.replicas = [self._replica(f"{dep.name}/{i}", pool, policy_cls(dep.scheduler), debug)
                         for i in range(dep.replicas)]
        self.router = ROUTERS[dep.router.policy](dep.router, self.replicas)
        self.pools = [(pool, self.replicas)]
        # the longest request ``never_fits`` lets through, so ``submit`` asks it only past that
        r = self.replicas[0]
        self._max_total = min(pool.max_context, (r.total_blocks - r.watermark) * r.bs - 2 * r.look)
        self._max_prompt = dep.scheduler.max_tokens_per_step if self.whole else inf

    def _replica(self, name: str, pool: Pool, policy, debug: bool, handoff=None) -> Replica:
        s = self.dep.scheduler
        swap_bw = pool.hw.pcie_bw_gb_s * 1e9 if s.preemption == "swap" else 0.0
        rep = Replica(self.env, self.store, name, pool.cost, pool.mem, policy,
                      max_batch=s.max_batch_size, devices=pool.devices, swap_bw=swap_bw,
                      handoff=handoff, debug=debug, done=self.done, prefix_caching=s.prefix_caching,
                      host_kv_bytes=s.host_kv_gb * 1e9, host_kv_ratio=s.host_kv_ratio,
                      host_bw=(pool.hw.pcie_bw_gb_s or HOST_LINK_GB_S) * 1e9)
        lora = getattr(self, "lora", None)
        if lora is not None:                # adapter slots and caches of its own
            lora.attach(rep)
        if self.dep.speculative is not None and handoff is None:   # a replica that decodes
            speculative.attach_to(self, rep, pool)
        return rep

    @property
    def done(self) -> Callable[[int, float], None]:
        """Where a finished request goes: ``store.complete`` unless a pipeline rebinds it."""
        return self._done

    @done.setter
    def done(self, fn: Callable[[int, float], None]) -> None:
        # every replica holds it too, so a finish reaches it in one call
        self._done = fn
        for r in getattr(self, "replicas", ()):
            r.done = fn

    def never_fits(self, rid: int, pool: Pool, rep: Replica, whole: bool) -> str | None:
        """Why a request can never be served here, or None."""
        st = self.store
        p, o = st.prompt[rid], st.output[rid]
        if p + o > pool.max_context:
            return f"prompt {p} + output {o} tokens exceed the model context {pool.max_context}"
        if not rep.can_ever_fit(p + o):
            return (f"needs {rep.blocks_for(p + o)} KV blocks but a replica has "
                    f"{rep.total_blocks - rep.watermark} usable")
        if whole and p > self.dep.scheduler.max_tokens_per_step:
            return (f"prompt {p} tokens exceeds max_tokens_per_step "
                    f"{self.dep.scheduler.max_tokens_per_step} of a non-chunked policy")
        return None

    def submit(self, rid: int, t: float) -> None:
        st = self.store
        p = st.prompt[rid]
        if p + st.output[rid] > self._max_total or p > self._max_prompt:
            why = self.never_fits(rid, self.pool, self.replicas[0], self.whole)
            if why:
                st.reject(rid, why, t)
                return
        self._dispatch(rid, t)

    def _dispatch(self, rid: int, t: float) -> None:
        """A servable request to the replica the router picks."""
        i = self.router.pick(rid, self.store)
        self.store.where[rid] = i
        self._enter(self.replicas[i], rid, t)

    def _enter(self, rep: Replica, rid: int, t: float) -> None:
        """The front end (HTTP, tokenization) delays the request by ``overhead.request_s``."""
        d = self.dep.overhead.request_s
        if d > 0:
            self.env.schedule(t + d, rep.submit, rid, t + d)
        else:
            rep.submit(rid, t)


class Disaggregated(Aggregated):
    """Separate prefill and decode pools; the KV moves over the link between them."""

    def __init__(self, env: Environment, store: Store, dep: Deployment, surrogate: str | None,
                 debug: bool = False) -> None:
        self.env, self.store, self.dep, self.surrogate = env, store, dep, surrogate
        self.done = store.complete
        s = dep.scheduler
        self.pool = build_pool(dep, surrogate, decodes=False)
        self.dpool = build_pool(dep, surrogate, s.decode_hardware, s.decode_tp)
        pre_cls = SCHEDULERS["prefill" if s.prefill_policy == "chunked" else "prefill_whole"]
        self.whole = pre_cls.whole_prompts
        self.prefill = [self._replica(f"{dep.name}/prefill{i}", self.pool, pre_cls(s), debug, self._handoff)
                        for i in range(s.prefill_replicas)]
        self.decode = [self._replica(f"{dep.name}/decode{i}", self.dpool, SCHEDULERS["decode"](s), debug)
                       for i in range(s.decode_replicas)]
        self.replicas = self.prefill + self.decode
        self.router = ROUTERS[dep.router.policy](dep.router, self.prefill)
        self.decode_router = LeastKV(RouterConfig(policy="least_kv"), self.decode)
        self.pools = [(self.pool, self.prefill), (self.dpool, self.decode)]
        same_node = s.mode == "local" and (s.decode_hardware is None
                                           or self.dpool.hw.name == self.pool.hw.name)
        bw, lat = self.pool.hw.link(1 if same_node else 2)
        if bw <= 0:
            raise HermesError(f"deployment '{dep.name}': hardware '{self.pool.hw.name}' has no "
                              f"{'intra' if same_node else 'inter'}-node bandwidth for the KV transfer")
        self.link_bw, self.link_latency = bw, lat
        self.network = None     # set by a pipeline scenario: concurrent KV handoffs then share links

    def submit(self, rid: int, t: float) -> None:
        why = (self.never_fits(rid, self.pool, self.prefill[0], self.whole)
               or self.never_fits(rid, self.dpool, self.decode[0], False))
        if why:
            self.store.reject(rid, why, t)
            return
        i = self.router.pick(rid, self.store)
        self.store.where[rid] = i
        self._enter(self.prefill[i], rid, t)

    def transfer_s(self, tokens: int) -> float:
        """Each prefill device sends its KV shard in parallel over its own link."""
        return self.link_latency + tokens * self.pool.mem.kv_per_token / self.link_bw

    def _handoff(self, rid: int, t: float) -> None:
        st = self.store
        kv = st.plen[rid]
        if self.dep.scheduler.mode == "local":  # fixed P:D groups
            i, p, d = st.where[rid], len(self.prefill), len(self.decode)
            group = [k for k in range(d) if k * p // d == i] if d >= p else [i * d // p]
            j = min(group, key=lambda k: (self.decode[k].outstanding, k))
        else:
            j = self.decode_router.pick(rid, st)
        i = st.where[rid]
        st.where[rid] = len(self.prefill) + j
        if self.network is not None:        # a pipeline network: handoffs share the sender's link
            link = self.network.link(f"{self.dep.name}/prefill{i}:kv", self.link_bw, self.link_latency)
            self.network.transfer([link], kv * self.pool.mem.kv_per_token, t,
                                  lambda t1, d=self.decode[j]: d.accept_decode(rid, t1, kv))
            return
        arrive = t + self.transfer_s(kv)
        self.env.schedule(arrive, self.decode[j].accept_decode, rid, arrive, kv)


DEPLOYMENT_KINDS = {"aggregated": Aggregated, "disaggregated": Disaggregated}


def build_deployment(env: Environment, store: Store, dep: Deployment, surrogate: str | None,
                     debug: bool = False) -> Aggregated:
    # "autoscaled" registers itself from simulator.engine.autoscale (it builds on Aggregated)
    kind = ("autoscaled" if dep.autoscaling is not None else
            "disaggregated" if dep.scheduler.policy == "disaggregated" else "aggregated")
    return DEPLOYMENT_KINDS[kind](env, store, dep, surrogate, debug)


def check_fit(scenario) -> dict[str, MemoryPlan]:
    """Memory plan of every deployment (and decode pool); raises ``HermesError`` with the
    arithmetic when a model does not fit its devices. Cheap: no step tables compiled."""
    out = {}
    for dep in scenario.deployments:
        model, hw = resolve(dep, tp=dep.tp)
        out[dep.name] = memory_plan(dep, model, hw, dep.tp)
        s = dep.scheduler
        if s.policy == "disaggregated" and (s.decode_hardware or s.decode_tp):
            dm, dh = resolve(dep, s.decode_hardware, s.decode_tp or dep.tp,
                             "scheduler.decode_tp" if s.decode_tp else "tp")
            out[f"{dep.name}/decode"] = memory_plan(dep, dm, dh, s.decode_tp or dep.tp, own=False)
    return out
