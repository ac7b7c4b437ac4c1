"""The stage base every step of a request's path builds on. The stage types import it:
``stages.py`` (and its registry ``STAGES``, which imports ``reasoning.py``) and
``reasoning.py`` (which imports only this module, so there is no import circle).

A stage gets a request with ``start(rid, t)`` and hands it on with ``pipe.advance(rid, t)``
(``pipeline.Pipelines``); an LLM call goes through ``Stage.call_llm`` to a deployment of
``simulator.engine``, whose completion comes back through ``Pipelines.llm_done``.
``BuildContext`` is what stages are bound to when a scenario is built; ``draw`` samples a
stage's count/length distributions; ``spawn`` makes a sub-request (a branch, a scoring call).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from profiling.errors import HermesError

from .kv_tiers import KVHierarchy
from .network import Network, Place
from .schema import Dist, StageConfig


@dataclass
class BuildContext:
    """Everything stages are bound to (by name) when a scenario is built."""

    env: object
    store: object
    llms: dict                       # name -> core deployment (Aggregated / Disaggregated)
    services: dict                   # name -> ServiceDeployment
    network: Network
    rng: np.random.Generator
    places: dict = field(default_factory=dict)          # name -> Place
    kv: KVHierarchy | None = None
    tier_kinds: dict = field(default_factory=dict)      # tier index -> hbm | dram | cxl | ssd | remote
    host_links: dict = field(default_factory=dict)      # ("pcie" | "nic", deployment) -> (B/s, s)
    pipe: object = None


def draw(d: Dist, rng: np.random.Generator) -> int:
    """One integer sample of a count/length distribution (lognormal: 50% spread)."""
    if d.dist == "fixed":
        x = d.mean
    elif d.dist == "uniform":
        x = rng.uniform(d.min, d.max if d.max is not None else 2 * d.mean - d.min)
    elif d.dist == "geometric":      # number of trials to the first stop, mean `mean`
        x = rng.geometric(min(1.0, 1.0 / d.mean))
    else:
        s2 = np.log1p(0.25)
        x = rng.lognormal(np.log(d.mean) - s2 / 2, np.sqrt(s2))
    x = max(int(round(x)), d.min)
    return min(x, d.max) if d.max is not None else x


def spawn(store, prompt: int, output: int) -> int:
    """A sub-request (a reasoning branch or a scoring call) with its own per-request state;
    it never appears in the request table (rows stop at ``store.n``)."""
    return store.spawn(prompt, output)


class Stage:
    """Base of the stage types: a label (its column in the breakdown), the place of the
    request while here (for network hops) and the payload it sends on."""

    kind = ""
    hooks_prefill = False            # registers ``pipe.after_prefill`` hooks (the store calls back then)

    def __init__(self, cfg: StageConfig, ctx: BuildContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.label = cfg.name or cfg.kind
        self.labels = [self.label]
        self.pipe = None             # the ``Pipelines`` running this stage, bound when it is built

    def start(self, rid: int, t: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def place_of(self, rid: int) -> Place | None:
        return self.ctx.places.get(self.cfg.deployment) if self.cfg.deployment else None

    def out_bytes(self, rid: int) -> float:
        return float(self.cfg.out_bytes)

    def _llm(self, name: str | None, rid: int):
        name = name or self.pipe.routed[rid]
        dep = self.ctx.llms.get(name) if name else None
        if dep is None:
            raise HermesError(f"stage '{self.label}': no LLM deployment '{name}'")
        return dep

    def call_llm(self, dep, rid: int, t: float, prompt: int, output: int, cached: int, then) -> None:
        """Run one LLM call (prefill of ``prompt`` tokens of which ``cached`` are already in
        KV, then ``output`` tokens) for ``rid``; ``then(rid, t)`` when it finishes."""
        st = self.ctx.store
        st.prompt[rid], st.output[rid], st.left[rid] = prompt, output, output
        st.cached[rid] = cached if 0 <= cached < prompt else max(0, min(cached, prompt - 1))
        st.plen[rid] = prompt
        self.pipe.pending[rid] = then
        dep.submit(rid, t)
