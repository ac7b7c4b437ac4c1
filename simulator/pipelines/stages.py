"""Stage types of a pipeline, one small class each, registered in ``STAGES``.

A stage gets a request with ``start(rid, t)`` and hands it on with ``pipe.advance(rid, t)``.
Service stages (pre/post-processing, query embedding, vector retrieval, reranking) queue a
job on a ``ServiceDeployment``; ``llm`` hands the request to an LLM deployment of the core
(prefill + decode), or spreads requests over several by replicas; ``kv_retrieve`` looks the prompt's blocks up in the KV tiers and reads
the hits over the tiers' shared links; ``reasoning`` (reasoning.py) runs think -> score steps or N
parallel branches; ``route`` picks the LLM deployment of the request. Adding a stage type
is adding a class here (on the base in stage.py) and its kind to ``STAGES``.
"""
from __future__ import annotations

import numpy as np

from profiling.errors import HermesError

from .kv_tiers import block_keys
from .network import Link, Place
from .reasoning import Reasoning
from .schema import StageConfig
from .stage import BuildContext, Stage


class ServiceStage(Stage):
    """A job on a service deployment; ``context_tokens`` are added to the prompt afterwards."""

    def __init__(self, cfg: StageConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.svc = ctx.services.get(cfg.deployment)
        if self.svc is None:
            raise HermesError(f"stage '{self.label}': no service deployment '{cfg.deployment}' "
                              f"(services: {', '.join(ctx.services) or 'none'})")

    def work(self, rid: int) -> tuple[int, int]:
        return 1, self.pipe.user[rid]

    def start(self, rid: int, t: float) -> None:
        seqs, tokens = self.work(rid)
        self.svc.submit_job(rid, t, seqs, tokens, self._done)

    def _done(self, rid: int, t: float) -> None:
        self.pipe.prompt[rid] += self.cfg.context_tokens
        self.pipe.advance(rid, t)


class Preprocess(ServiceStage):
    kind = "preprocess"


class Postprocess(ServiceStage):
    kind = "postprocess"

    def work(self, rid: int) -> tuple[int, int]:
        return 1, max(self.pipe.generated[rid], 1)


class RagEmbed(ServiceStage):
    kind = "rag_embed"

    def work(self, rid: int) -> tuple[int, int]:
        return 1, self.cfg.query_tokens or self.pipe.user[rid]


class RagRetrieve(ServiceStage):
    kind = "rag_retrieve"

    def work(self, rid: int) -> tuple[int, int]:
        return 1, 0          # one query vector; the index cost model knows the rest


class RagRerank(ServiceStage):
    kind = "rag_rerank"

    def work(self, rid: int) -> tuple[int, int]:
        q = self.cfg.query_tokens or self.pipe.user[rid]
        return self.cfg.candidates, q + self.cfg.passage_tokens


class Spread:
    """Several LLM deployments behind one ``llm`` stage: each request to one of them, weighted
    by replicas (deterministic smooth weighted round-robin, so a seed needs no random draw)."""

    def __init__(self, deployments: list) -> None:
        self.deps = deployments
        self.only = deployments[0] if len(deployments) == 1 else None
        self.w = [len(d.replicas) for d in deployments]
        self.total = sum(self.w)
        self.cur = [0] * len(deployments)

    def pick(self):
        """The next deployment when there are several (``only`` is the one otherwise)."""
        self.cur = [c + w for c, w in zip(self.cur, self.w)]
        i = max(range(len(self.cur)), key=lambda k: (self.cur[k], -k))
        self.cur[i] -= self.total
        return self.deps[i]


class Llm(Stage):
    """Prefill + decode of the request's answer on an LLM deployment (or the routed one),
    recorded as ``<name>_queue`` (waiting for admission), ``<name>_prefill`` (to the first
    token) and ``<name>_decode`` (the rest, incl. a disaggregated KV handoff).

    With no deployment named and none routed (the one stage of a plain scenario,
    ``build.PLAIN_CLASS``), requests spread over every LLM deployment, weighted by replicas."""

    kind = "llm"

    def __init__(self, cfg: StageConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        base = self.label
        self.label = f"{base}_decode"
        self.labels = [f"{base}_queue", f"{base}_prefill", self.label]
        self.spread = Spread(list(ctx.llms.values())) if cfg.deployment is None and ctx.llms else None
        self._then = self._done      # one bound method for every call (this is the hot path)

    def place_of(self, rid: int) -> Place | None:
        return self.ctx.places.get(self.cfg.deployment or self.pipe.routed[rid])

    def start(self, rid: int, t: float) -> None:
        p, spread = self.pipe, self.spread
        if spread is None or p.routed[rid] is not None:
            dep = self._llm(self.cfg.deployment, rid)
        else:
            dep = spread.only if spread.only is not None else spread.pick()
        self.call_llm(dep, rid, t, p.prompt[rid], p.answer[rid], p.cached[rid], self._then)

    def _done(self, rid: int, t: float) -> None:
        p = self.pipe
        if p.record:
            st = self.ctx.store
            s0, f0 = st.started[rid], st.first[rid]
            e = p.entered[rid]
            if e <= s0 <= f0 <= t:               # this call was the request's first LLM call
                times, labels = p.times, self.labels  # p.mark(queue, s0), p.mark(prefill, f0), inlined
                times[labels[0]][rid] += s0 - e
                times[labels[1]][rid] += f0 - s0
                p.entered[rid] = f0
        p.generated[rid] += p.answer[rid]
        if p.after_llm:
            p.kv_written(rid)
        p.advance(rid, t)


class KvRetrieve(Stage):
    """Longest cached prefix of the prompt from the KV tiers; hits are read over each tier's
    link (shared with concurrent reads) and, below HBM, the host-to-GPU PCIe link; the
    prompt's and answer's blocks are written to the tiers once the next LLM call is done."""

    kind = "kv_retrieve"
    hooks_prefill = True             # LMCache stores the prompt's KV once it is prefilled

    def __init__(self, cfg: StageConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        if ctx.kv is None:
            raise HermesError(f"stage '{self.label}': the scenario has no 'kv_cache' tiers")
        self.waiting: dict[int, list] = {}

    def _target(self, rid: int) -> str:
        name = self.cfg.deployment or self.pipe.routed[rid] or next(iter(self.ctx.llms))
        return name

    def place_of(self, rid: int) -> Place | None:
        return self.ctx.places.get(self._target(rid))

    def scopes(self, rid: int) -> list[str]:
        dep = self._target(rid)
        pl = self.ctx.places.get(dep, Place())
        by = {"deployment": dep, "node": f"{pl.rack}/{pl.node}", "rack": str(pl.rack), "cluster": "all"}
        return [by[t.scope] for t in self.ctx.kv.tiers]

    def start(self, rid: int, t: float) -> None:
        kv, p = self.ctx.kv, self.pipe
        segs = p.segments[rid] if p.segments is not None else [(("req", rid), p.prompt[rid])]
        keys = block_keys(segs, kv.block_tokens)
        scopes = self.scopes(rid)
        hit = kv.lookup(keys, scopes, prompt_tokens=p.prompt[rid])
        p.cached[rid] = min(hit.hit_blocks * kv.block_tokens, p.prompt[rid] - 1)
        last = segs[-1][0]           # the answer continues the stream as sessions names it
        aid = ("answer",) + tuple(last[1:]) if isinstance(last, tuple) and last[0] == "user" else ("answer", rid)
        full = segs + [(aid, p.answer[rid])]
        p.after_prefill[rid] = lambda r, s=scopes: kv.store(keys, s)   # LMCache stores after prefill
        p.after_llm[rid] = lambda r, f=full, s=scopes: kv.store(block_keys(f, kv.block_tokens), s)
        reads = [(i, n * kv.block_bytes) for i, n in enumerate(hit.per_tier) if n]
        if not reads:
            p.advance(rid, t)
            return
        self.waiting[rid] = [len(reads), t]
        for i, nbytes in reads:
            self.ctx.network.transfer(self.path(i, rid, scopes[i]), nbytes, t, lambda t1, r=rid: self._read(r, t1))

    def path(self, tier: int, rid: int, scope: str) -> list[Link]:
        spec = self.ctx.kv.tiers[tier]
        net = self.ctx.network
        links = [net.link(f"kv:{spec.name}:{scope}", spec.bw, spec.latency)]
        kind = self.ctx.tier_kinds.get(tier, "hbm")
        dep = self._target(rid)
        if kind != "hbm":
            pcie = self.ctx.host_links.get(("pcie", dep))
            if pcie:
                links.append(net.link(f"pcie:{dep}", *pcie))
        if kind == "remote":
            nic = self.ctx.host_links.get(("nic", dep))
            if nic:
                links.append(net.link(f"nic:{dep}", *nic))
        return links

    def _read(self, rid: int, t: float) -> None:
        w = self.waiting[rid]
        w[0] -= 1
        if w[0] == 0:
            del self.waiting[rid]
            self.pipe.advance(rid, t)


class Route(Stage):
    """Chooses the LLM deployment of the request: by a probability table (``weight``) or by
    prompt length (``max_prompt`` bounds, the last choice takes the rest). Costs a job on
    its service deployment, or ``cost_s``."""

    kind = "route"

    def __init__(self, cfg: StageConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        for ch in cfg.choices:
            if ch.deployment not in ctx.llms:
                raise HermesError(f"stage '{self.label}': route choice '{ch.deployment}' is not an LLM deployment")
        self.svc = ctx.services.get(cfg.deployment) if cfg.deployment else None
        w = np.array([c.weight for c in cfg.choices], dtype=float)
        self.p = w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))
        self.counts = {c.deployment: 0 for c in cfg.choices}

    def start(self, rid: int, t: float) -> None:
        if self.svc is not None:
            self.svc.submit_job(rid, t, 1, self.pipe.user[rid], self._decide)
        else:
            self.ctx.env.schedule(t + self.cfg.cost_s, self._decide, rid, t + self.cfg.cost_s)

    def pick(self, rid: int) -> str:
        ch = self.cfg.choices
        if self.cfg.by == "prompt":
            for c in ch[:-1]:
                if c.max_prompt is not None and self.pipe.prompt[rid] <= c.max_prompt:
                    return c.deployment
            return ch[-1].deployment
        return ch[int(self.ctx.rng.choice(len(ch), p=self.p))].deployment

    def _decide(self, rid: int, t: float) -> None:
        name = self.pick(rid)
        self.counts[name] += 1
        self.pipe.routed[rid] = name
        self.pipe.advance(rid, t)


STAGES: dict[str, type[Stage]] = {
    "preprocess": Preprocess, "postprocess": Postprocess, "rag_embed": RagEmbed,
    "rag_retrieve": RagRetrieve, "rag_rerank": RagRerank, "kv_retrieve": KvRetrieve,
    "llm": Llm, "reasoning": Reasoning, "route": Route,
}


def build_stage(cfg: StageConfig, ctx: BuildContext) -> Stage:
    return STAGES[cfg.kind](cfg, ctx)
