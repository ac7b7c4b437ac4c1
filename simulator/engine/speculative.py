"""Speculative decoding: a proposer (a draft model, an EAGLE/MTP head, n-gram lookup) guesses
``k`` tokens per sequence, and the model verifies them in one wider step.

* **Tokens per step.** With per-position acceptance a_1..a_k (the chance a proposed token is
  accepted given the ones before it were) a verification emits on average
  ``tau = 1 + sum_j prod_{i<=j} a_i`` tokens per sequence (the accepted run plus the model's
  own next token; ``(1 - a^(k+1)) / (1 - a)`` for a constant rate).
* **Step cost** (``SpecCost``): the proposer's ``k`` autoregressive steps (a draft model: its own
  compiled step table on the same device and TP; an EAGLE/MTP head: one layer of the target plus
  its LM head; n-gram: host time only) plus the verifier's step over ``k + 1`` query tokens per
  sequence: token-wise GEMMs at ``M = n (k + 1)``, decode attention over the context plus what
  the prefill table charges for ``k`` more query tokens per sequence.
* **Decoders** (``SpecDecoders``, the replica's decode aggregate when speculation is on): each
  request emits a whole number ``m`` of tokens per speculative step, drawn once when it starts
  (``floor(tau)`` or ``ceil(tau)`` with the odds that keep the mean ``tau``), and one token per
  step when speculation is off above ``disable_above_batch``. Requests of one ``m`` share a
  clock (``m`` per speculative step, 1 per plain step), so a request's KV is ``base + clock``
  and its finish is a clock value known when it joins; the KV holds ``k`` lookahead slots, as
  vLLM allocates them. Approximation: the step-to-step variation of accepted tokens within a
  request is replaced by its whole-number mean, so per-request TPOT spreads around the right
  mean by at most one token per step while throughput and KV growth stay exact.
"""
from __future__ import annotations

from bisect import bisect_right
from heapq import heappop, heappush
from math import inf
from typing import TYPE_CHECKING, Any

import numpy as np

from profiling.errors import HermesError

from .core import LATE

if TYPE_CHECKING:   # pragma: no cover
    from .config import SpeculativeConfig
    from .replica import Replica
    from .stepcost import StepCost

# Host time of an n-gram (prompt-lookup) proposal per sequence and step: a suffix match over
# the request's tokens on the CPU (vLLM's numba KMP), tens of microseconds at most.
NGRAM_CPU_S_PER_SEQ = 1.0e-5

def _segment(xs: list, top: int, row: list, x: float) -> tuple[float, float, float, float, float]:
    """The table segment holding ``x`` (clamped to the table): its upper edge (inf for the last),
    left knot, width, and the row's value and slope there (as ``replica._segment``)."""
    k = bisect_right(xs, x)
    if k < 1:
        k = 1
    elif k > top:
        k = top
    x0 = xs[k - 1]
    r0 = row[k - 1]
    return (xs[k] if k < top else inf), x0, xs[k] - x0, r0, row[k] - r0


# ---- acceptance -----------------------------------------------------------------------------
def expected_tokens(rates: list[float]) -> float:
    """Tokens one verification emits on average: 1 + sum_j prod_{i<=j} a_i."""
    tau, run = 1.0, 1.0
    for a in rates:
        run *= a
        tau += run
    return tau


def _uniforms(keys: np.ndarray, salt: int) -> np.ndarray:
    """Two independent uniforms per key from a splitmix64 hash: deterministic per request,
    whatever the order requests reach a replica in."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt & 0xFFFFFFFFFFFFFFFF)
        out = []
        for _ in range(2):
            z = z + np.uint64(0x9E3779B97F4A7C15)
            x = z
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
            out.append((x >> np.uint64(11)).astype(np.float64) / float(1 << 53))
    return np.stack(out)


class Rates:
    """Each request's whole tokens per speculative step (1..k+1), drawn once per request from its
    class's acceptance; keyed by request id, prompt and output length (a seed changes them)."""

    def __init__(self, cfg: "SpeculativeConfig", store, salt: str) -> None:
        self.cfg, self.store, self.k = cfg, store, cfg.num_speculative_tokens
        self.salt = int.from_bytes(salt.encode()[:8].ljust(8, b"\0"), "little")
        self._m: list[int] = []

    def _draw(self, lo: int, hi: int) -> list[int]:
        st, k = self.store, self.k
        rid = np.arange(lo, hi, dtype=np.int64)
        keys = rid * 1_000_003 + np.asarray(st.prompt[lo:hi], dtype=np.int64) * 7919 + np.asarray(st.output[lo:hi])
        u, v = _uniforms(keys, self.salt ^ (int(getattr(st, "seed", 0)) * 0x2545F4914F6CDD1D))
        names = getattr(st, "request_class", None)
        cfg = self.cfg
        tau = self._tau(cfg.acceptance, u)
        if names is not None and cfg.by_class:
            cls = np.asarray([names[r] if r < len(names) else "" for r in range(lo, hi)], dtype=object)
            for name, a in cfg.by_class.items():
                sel = cls == name
                if sel.any():
                    tau[sel] = self._tau(a, u[sel])
        m = np.floor(tau) + (v < tau - np.floor(tau))
        return np.clip(m, 1, k + 1).astype(int).tolist()

    def _tau(self, a, u: np.ndarray) -> np.ndarray:
        """Expected tokens per step for uniforms ``u``: fixed for a rate or a profile, else
        from each request's rate drawn from the beta distribution (its inverse CDF at ``u``)."""
        if isinstance(a, list):
            return np.full(len(u), expected_tokens(a))
        if isinstance(a, (int, float)):
            return np.full(len(u), expected_tokens([float(a)] * self.k))
        from scipy.special import betaincinv
        c = a.concentration
        r = betaincinv(a.mean * c, (1 - a.mean) * c, u)
        # constant rate r: (1 - r^(k+1)) / (1 - r), written as a sum so r = 1 is exact
        return np.sum(r[None, :] ** np.arange(self.k + 1)[:, None], axis=0)

    def __call__(self, rid: int) -> int:
        m = self._m
        if rid >= len(m):                       # first use (all requests) or spawned sub-requests
            m.extend(self._draw(len(m), rid + 1 if m else max(rid + 1, self.store.n)))
        return m[rid]


# ---- step cost ------------------------------------------------------------------------------
def _pwl(xs: np.ndarray, ys: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Rows ``ys`` [.., len(xs)] at points ``x``: clamped below, extrapolated above (as the
    replica's ``_segment`` reads them)."""
    i = np.clip(np.searchsorted(xs, x, side="right"), 1, len(xs) - 1)
    x0, x1 = xs[i - 1], xs[i]
    ty = np.maximum((x - x0) / (x1 - x0), 0.0)
    return ys[..., i - 1] + (ys[..., i] - ys[..., i - 1]) * ty


class SpecCost:
    """Seconds of a decode step with speculation on, by batch ``n`` and mean context ``x`` (KV
    tokens per sequence before the step): ``fixed[n]`` + the piecewise-linear ``rows[n]`` over
    ``xs``, the same lookup the replica's decode loop does. ``cpu[n]`` is the host part when the
    engine overlaps it (async scheduling); else it is inside ``fixed``."""

    def __init__(self, cost: "StepCost", k: int, method: str, layers: int, draft=None) -> None:
        t, o, ks = cost.table, cost._ov, cost.overhead.kernel_scale
        self.k, self.method, self.base = k, method, cost
        pp = float(t.pp) * ks
        hop = t.pp_hop_s if t.pp > 1 else 0.0
        nmax = cost.max_seqs
        n = np.arange(nmax + 1, dtype=float)
        tok_xy = (np.asarray(t.tok_x, float), np.asarray(t.tok_y, float))
        seq_xy = (np.asarray(t.seq_x, float), np.asarray(t.seq_y, float))
        lin = lambda xy, v: _pwl(xy[0], xy[1], v)  # noqa: E731
        w = n * (k + 1)                                   # the verifier's tokens: GEMM M = n (k + 1)
        self._t, self._pp, self._hop, self._o = t, pp, hop, o
        verify = self._tokf(w) + self._seqf(n)
        prop = np.zeros_like(n)
        # the proposer's k steps at batch n: token-wise part here, attention by context below
        kv = np.asarray(t.dec_kv, float)
        dec = np.asarray(cost._dec, float)                # [n, kv] decode attention, all stages, scaled
        mid = (k + 1) / 2.0                               # mean context offset of the k proposals
        parts = [(kv - 1.0, dec)]                         # the verifier's decode attention at x + 1
        if method == "draft":
            d = draft
            dpp = float(d.pp) * ks
            prop += k * ((lin((np.asarray(d.tok_x, float), np.asarray(d.tok_y, float)), n)
                          + lin((np.asarray(d.seq_x, float), np.asarray(d.seq_y, float)), n)) * dpp)
            db = np.asarray(d.dec_b, float)
            i = np.clip(np.searchsorted(db, n, side="right"), 1, len(db) - 1)
            tx = np.maximum((n - db[i - 1]) / (db[i] - db[i - 1]), 0.0)[:, None]
            dy = np.asarray(d.dec_y, float)
            drows = (dy[i - 1] * (1 - tx) + dy[i] * tx) * dpp * k
            parts.append((np.asarray(d.dec_kv, float) - mid, drows))
        elif method in ("eagle", "mtp"):
            # one decoder layer of the target (all stages' token-wise time / layers) and its LM head
            prop += k * (lin(tok_xy, n) * pp / layers + lin(seq_xy, n) * ks)
            parts.append((kv - mid, dec * (k / layers)))
        elif not cost.asyn:                               # n-gram: host work only
            prop += NGRAM_CPU_S_PER_SEQ * n
        prop[0] = 0.0
        self.prop = prop.tolist()
        fixed = verify + prop
        fixed[0] = 0.0
        # the verifier's k extra query tokens per sequence, as the prefill table prices them
        pre_x = np.asarray(t.pre_prefix, float)
        pre = np.asarray(cost._pre, float)
        extra = np.maximum(pre[k + 1] - pre[1], 0.0) if len(pre) > k + 1 else \
            np.maximum(np.array([t.prefill_attention(k + 1, c + k + 1) - t.prefill_attention(1, c + 1)
                                 for c in pre_x]) * float(t.pp) * ks, 0.0)
        xs = np.unique(np.concatenate([p[0] for p in parts] + [pre_x]))
        rows = n[:, None] * _pwl(pre_x, extra, xs)[None, :]
        for px, py in parts:
            rows += _pwl(px, py, xs)
        rows[0] = 0.0
        self.xs, self.top = xs.tolist(), len(xs) - 1
        self.rows = rows.tolist()
        self.fixed = fixed.tolist()
        # token-wise and per-sequence seconds of mixed steps (decoders' k + 1 tokens + prefill chunks)
        self._tokw = self._tokf(np.arange(nmax * (k + 1) + cost.max_tokens + 1)).tolist()
        self._seqw = self._seqf(np.arange(nmax + 1)).tolist()
        h = cost.overhead
        cpu = h.step_s + h.per_seq_s * n + h.per_token_s * w
        if method == "ngram":
            cpu = cpu + NGRAM_CPU_S_PER_SEQ * n
        self.cpu = cpu.tolist()                           # host seconds of a decode-only step

    def attention(self, n: int, x: float) -> float:
        xs = self.xs
        j = bisect_right(xs, x)
        j = 1 if j < 1 else (self.top if j > self.top else j)
        row = self.rows[n]
        ty = (x - xs[j - 1]) / (xs[j] - xs[j - 1])
        return row[j - 1] + (row[j] - row[j - 1]) * (ty if ty > 0 else 0.0)

    def __call__(self, n: int, kv_sum: float) -> float:
        """A speculative decode-only step of ``n`` sequences holding ``kv_sum`` KV tokens (kernels,
        plus the host work unless it overlaps)."""
        return self.fixed[n] + self.attention(n, kv_sum / n)

    def _tokf(self, w):
        """Token-wise seconds of ``w`` new tokens (all stages, host per token and per step)."""
        t, o = self._t, self._o
        return (_pwl(np.asarray(t.tok_x, float), np.asarray(t.tok_y, float), np.asarray(w, float)) + self._hop) \
            * self._pp + o.per_token_s * np.asarray(w, float) + o.step_s

    def _seqf(self, s):
        t = self._t
        return _pwl(np.asarray(t.seq_x, float), np.asarray(t.seq_y, float), np.asarray(s, float)) * self._pp \
            + self._o.per_seq_s * np.asarray(s, float)

    def mixed(self, n: int, kv_sum: float, prefill: list[tuple[int, int]]) -> float:
        """A speculative step that also runs prefill chunks: their tokens join the verifier's GEMMs
        and their attention is priced as the plain step prices it."""
        c = self.base
        w = n * (self.k + 1) + sum(q for q, _ in prefill)
        s = n + len(prefill)
        tw, sw = self._tokw, self._seqw
        t = (tw[w] if w < len(tw) else float(self._tokf(w))) + (sw[s] if s < len(sw) else float(self._seqf(s)))
        t += self.prop[n] + self.attention(n, kv_sum / n)
        for q, kv in prefill:
            t += c.prefill(q, kv)
        return t

    def host(self, n: int, prefill_tokens: int, chunks: int) -> float:
        """Host seconds of a speculative step (overlapped with the previous kernels when async)."""
        h = self.base.overhead
        return self.cpu[n] + h.per_seq_s * chunks + h.per_token_s * prefill_tokens


_SPEC_COSTS: dict[tuple, tuple[Any, SpecCost]] = {}


def spec_cost(cost: "StepCost", k: int, method: str, layers: int, draft=None) -> SpecCost:
    """``SpecCost`` memoized on the step cost and draft table it reads (built once per pool)."""
    key = (id(cost), id(draft), k, method, layers)
    hit = _SPEC_COSTS.get(key)
    if hit is not None and hit[0] is cost:
        return hit[1]
    if len(_SPEC_COSTS) > 32:
        _SPEC_COSTS.clear()
    out = SpecCost(cost, k, method, layers, draft)
    _SPEC_COSTS[key] = (cost, out)
    return out


# ---- memory -----------------------------------------------------------------------------------
def with_proposer(mem, cfg: "SpeculativeConfig", model, tp: int, dtype: str | None, kv_dtype: str | None,
                  fixed_blocks: bool):
    """The KV plan with the proposer's weights and its KV per token taken out of the cache (a
    draft model: its own; an EAGLE/MTP head: one layer of the target); ``fixed_blocks`` keeps
    a block count the engine recorded."""
    from dataclasses import replace

    from profiling.models import resolve_model

    from .memory import kv_bytes_per_token
    if cfg.method == "ngram":
        return mem
    if cfg.method == "draft":
        d = resolve_model(cfg.draft_model)
        weights = d.weight_bytes(dtype) / tp
        kv = kv_bytes_per_token(d, tp, 1, kv_dtype)
    else:
        # one decoder layer (EAGLE shares the target's embedding and LM head)
        weights = model.layer_params() * model.weight_bytes(dtype) / max(model.param_count(), 1) / tp
        kv = mem.kv_per_token / max(model.kv_layers, 1)
    out = replace(mem, weights=mem.weights + weights, kv_per_token=mem.kv_per_token + kv)
    if not fixed_blocks:
        per_block = out.kv_per_token * out.block_size
        blocks = int(out.kv_bytes // per_block) if out.kv_bytes > 0 else 0
        if blocks < 1:
            raise HermesError(f"the {cfg.method} proposer leaves no KV memory: {out.describe()}")
        out = replace(out, num_blocks=blocks)
    return out


# ---- the replica's decoders -------------------------------------------------------------------
class SpecDecoders:
    """The decode aggregate of a replica with speculation on (``attach`` binds its methods over the
    replica's own): requests grouped by tokens per speculative step ``m``, each group with a clock
    (KV of a member = its base + the clock), block-boundary counts by residue and a finish heap."""

    def __init__(self, rep: "Replica", cfg: "SpeculativeConfig", cost: SpecCost, rates: Rates) -> None:
        self.rep, self.cost, self.rates = rep, cost, rates
        k = self.k = cfg.num_speculative_tokens
        self.look = k                               # lookahead slots held per decoder (vLLM)
        self.off_above = cfg.disable_above_batch or inf
        bs = rep.bs
        self.clock = [0] * (k + 2)
        self.cnt = [0] * (k + 2)
        self.heaps: list[list] = [[] for _ in range(k + 2)]
        self.res = [[0] * bs for _ in range(k + 2)]  # members by (base + lookahead) mod block size
        self.groups: list[int] = []                 # the m with members
        self.K = 0                                  # KV tokens of all decoders
        # blocks a decoder whose position is r mod bs takes when its clock moves d: (r, blocks) != 0
        self.nz = [[]] + [[(r, b) for r in range(bs) for b in [-(-(r + d) // bs) - (1 if r else 0)] if b]
                          for d in range(1, k + 2)]
        self.on = False                             # the step in progress speculates
        self.spec_steps = self.plain_steps = 0
        self.seq_steps = 0                          # sum of decoders over decode steps
        self.tokens = 0                             # tokens the decode steps emitted

    # ---- membership ---------------------------------------------------------------------------
    def join(self, rid: int, kv: int, t: float) -> None:
        rep, st = self.rep, self.rep.store
        if not rep.n:
            rep._last_dec_end = t
        m = self.rates(rid)
        c = self.clock[m]
        base = kv - c
        st.base[rid] = base
        st.ver[rid] += 1
        st.fin_at[rid] = f = c + st.left[rid]
        heappush(self.heaps[m], (f, rid, st.ver[rid]))
        rep.running[rid] = None
        rep.n += 1
        self.K += kv
        self.res[m][(base + self.look) % rep.bs] += 1
        if not self.cnt[m]:
            self.groups = sorted(self.groups + [m])
        self.cnt[m] += 1

    def leave(self, rid: int, base: int) -> None:
        rep = self.rep
        m = self.rates(rid)
        del rep.running[rid]
        rep.n -= 1
        self.K -= base + self.clock[m]
        self.res[m][(base + self.look) % rep.bs] -= 1
        self.cnt[m] -= 1
        if not self.cnt[m]:
            self.groups = [g for g in self.groups if g != m]

    def finish(self, j: int = 0, t: float = 0.0) -> None:
        """Members whose clock reached their finish leave (``j`` unused: the clocks say)."""
        rep, st = self.rep, self.rep.store
        look, bs = self.look, rep.bs
        for m in tuple(self.groups):
            heap, c = self.heaps[m], self.clock[m]
            while heap and heap[0][0] <= c:
                f, rid, ver = heappop(heap)
                if ver != st.ver[rid]:
                    continue
                base = st.base[rid]
                self.leave(rid, base)
                self.tokens -= c - f                # the last step emitted only what was left
                held = -(-(base + c + look) // bs)
                rep.release(held - st.shared[rid])
                if rep._resv:
                    rep._unreserve(rid, held)
                st.left[rid] = 0
                rep.outstanding -= st.prompt[rid] + st.output[rid]
                rep.done(rid, t)

    def preempt_last(self) -> None:
        rep, st = self.rep, self.rep.store
        rid = next(reversed(rep.running))
        base = st.base[rid]
        m = self.rates(rid)
        kv = base + self.clock[m]                   # KV held after the last step
        self.leave(rid, base)
        st.ver[rid] += 1
        st.left[rid] = st.fin_at[rid] - self.clock[m]
        rep.requeue(rid, kv, rep.blocks_for(kv + self.look))

    # ---- a step ---------------------------------------------------------------------------------
    def need(self, on: bool) -> int:
        """Blocks the decoders take in the next step (speculative or plain)."""
        tot, bs, clock, res, nz = 0, self.rep.bs, self.clock, self.res, self.nz
        for m in self.groups:
            c, r = clock[m], res[m]
            for s, b in nz[m if on else 1]:
                x = r[(s - c) % bs]
                if x:
                    tot += b * x
        return tot

    def decode_alloc(self) -> int:
        """As ``Replica.decode_alloc``; returns the step's decode tokens (k + 1 per sequence when
        it speculates), which the policies take out of the token budget as vLLM V1 does."""
        rep = self.rep
        if not rep.n:
            return 0
        on = rep.n <= self.off_above
        need = self.need(on)
        take = min(need, rep.spare)
        while rep.used + need - take > rep.total_blocks and rep.n:
            self.preempt_last()
            on = rep.n <= self.off_above
            need = self.need(on)
            take = min(need, rep.spare)
        rep.spare -= take
        rep.used += need - take
        self.on = on
        return rep.n * (self.k + 1) if on else rep.n

    def advance(self, n: int) -> None:
        """The decoders' step is done: every group's clock moves, then members that are done leave."""
        on, clock, cnt = self.on, self.clock, self.cnt
        moved = 0
        for m in self.groups:
            d = m if on else 1
            clock[m] += d
            moved += cnt[m] * d
        self.K += moved
        self.tokens += moved
        self.seq_steps += n
        if on:
            self.spec_steps += 1
        else:
            self.plain_steps += 1

    def due(self) -> bool:
        clock, heaps = self.clock, self.heaps
        for m in self.groups:
            h = heaps[m]
            if h and h[0][0] <= clock[m]:
                return True
        return False

    def begin(self) -> float | None:
        """``Replica._begin`` with the speculative step's cost."""
        rep = self.rep
        rep._chunks = []
        rep._extra = 0.0
        decodes = rep.policy.plan(rep)
        rep._dec = decodes
        chunks = rep._chunks
        if not decodes and not chunks:
            return None
        n = rep.n if decodes else 0
        pairs = [(q, e[1] + q) for e, q in chunks]
        ptok = sum(q for q, _ in pairs)
        rep._ptok = ptok
        if rep.debug:
            self.check()
        c = rep.cost
        if n and self.on:
            g = self.cost(n, self.K) if not pairs else self.cost.mixed(n, self.K, pairs)
            h = self.cost.host(n, ptok, len(pairs))
        else:
            g = c(n + ptok, n, self.K + n if n else 0, pairs)
            h = c.cpu(n + ptok, n + len(pairs))
        if c.asyn:
            h -= rep._gprev
            rep._gprev = g
            if h > 0:
                g += h
        return g + rep._extra

    def end(self, t0: float, t1: float) -> None:
        rep = self.rep
        n = 0
        gap = 0.0
        if rep._dec:
            n = rep.n
            rep.D += 1
            gap = t1 - rep._last_dec_end
            rep._last_dec_end = t1
            self.advance(n)
            if self.due():
                self.finish(0, t1)
        finished = False
        for e, q in rep._chunks:
            e[1] += q
            if e[1] >= e[2]:
                rep._prefilled(e[0], e[2], t1)
                finished = True
        if finished:
            rep.prefilling = [e for e in rep.prefilling if e[1] < e[2]]
        rep.steps.extend((t0, t1, n, rep._ptok, rep.used, gap))

    def burst(self, t: float) -> float:
        """Decode-only steps back to back (``Replica._decode_burst`` with speculation): the same
        arithmetic as ``begin``/``end`` (tested: debug runs take those and must agree)."""
        rep = self.rep
        tok, seq, cpu, decodes = rep._fixed_dec
        if not rep.n or not decodes:
            return t
        env, queue, xs, dec, top, max_n, asyn, _, bs, total, _, ext = rep._fixed
        sc = self.cost
        sxs, stop, rows, fixed, scpu = sc.xs, sc.top, sc.rows, sc.fixed, sc.cpu
        clock, cnt, res, nz, groups, heaps = self.clock, self.cnt, self.res, self.nz, self.groups, self.heaps
        n, used, last, spare, gp, K = rep.n, rep.used, rep._last_dec_end, rep.spare, rep._gprev, self.K
        off = self.off_above
        t_start = t
        horizon = queue[0][0] if queue else inf
        hi, seg_n = -inf, -1
        steps = tokens = seq_steps = spec_steps = 0   # counters, added to the replica's on the way out
        while n and n < max_n:
            on = n <= off
            need = 0
            for m in groups:
                c, r = clock[m], res[m]
                for s, b in nz[m if on else 1]:
                    x = r[(s - c) % bs]
                    if x:
                        need += b * x
            if need:
                take = need if need < spare else spare
                if used + need - take > total:
                    break                           # preemption: general path
                spare -= take
                used += need - take
            # the mean context only grows while the batch is unchanged: its table segment is cached
            x = K / n if on else (K + n) / n
            if x >= hi or n != seg_n:
                if on:
                    hi, x0, dx, r0, dr = _segment(sxs, stop, rows[n], x)
                    fixed_n, host = fixed[n], scpu[n]
                else:
                    hi, x0, dx, r0, dr = _segment(xs, top, dec[n], x)
                    fixed_n, host = tok[n] + seq[n], cpu[n]
                seg_n = n
            ty = (x - x0) / dx
            g = fixed_n + (r0 + dr * (ty if ty > 0 else 0.0))
            if asyn:
                h = host - gp
                gp = g
                if h > 0:
                    g += h
            t_end = t + g
            if t_end >= horizon:
                rep.used, rep._last_dec_end, rep.spare, rep._gprev = used, last, spare, gp
                self.K, self.on = K, on
                self._stats(steps, tokens, seq_steps, spec_steps)
                rep.busy += t_end - t_start
                rep._dec, rep._chunks, rep._ptok = True, (), 0
                rep._t_end = t_end
                env.schedule(t_end, rep._step_end, t, t_end)
                return -1.0
            steps += 1
            moved = 0
            due = False
            for m in groups:                        # advance, inlined
                d = m if on else 1
                c = clock[m] + d
                clock[m] = c
                moved += cnt[m] * d
                h = heaps[m]
                if h and h[0][0] <= c:
                    due = True
            K += moved
            tokens += moved
            seq_steps += n
            if on:
                spec_steps += 1
            if due:
                self.on, self.K = on, K
                self._stats(steps, tokens, seq_steps, spec_steps)
                steps = tokens = seq_steps = spec_steps = 0
                env.now = t_end
                rep.used, rep._last_dec_end, rep.spare, rep._gprev = used, t_end, spare, gp
                self.finish(0, t_end)
                ext((t, t_end, n, 0, rep.used, t_end - last))
                n, used, spare, K, groups = rep.n, rep.used, rep.spare, self.K, self.groups
                last = t = t_end
                if queue and queue[0][0] <= t:
                    rep.busy += t - t_start
                    env.schedule(t, rep._resume, priority=LATE)
                    return -1.0
                horizon = queue[0][0] if queue else inf
                if rep.waiting or rep.ready:
                    break
            else:
                ext((t, t_end, n, 0, used, t_end - last))
                last = t = t_end
        env.now = t
        rep.used, rep._last_dec_end, rep.spare, rep._gprev = used, last, spare, gp
        self.K = K
        self._stats(steps, tokens, seq_steps, spec_steps)
        rep.busy += t - t_start
        return t

    def _stats(self, steps: int, tokens: int, seq_steps: int, spec_steps: int) -> None:
        """A burst's counters into the replica's (decode iterations, tokens, speculative steps)."""
        self.rep.D += steps
        self.tokens += tokens
        self.seq_steps += seq_steps
        self.spec_steps += spec_steps
        self.plain_steps += steps - spec_steps

    def chunk_burst(self, t: float) -> float:
        """``Replica._chunk_burst`` with speculation: a chunked policy's steps with the decoders,
        the one prefill in progress and at most the one admission ``admit`` takes, the same
        arithmetic as ``begin``/``end`` (tested against debug runs). Returns the time reached,
        or -1 after handing the replica to the event queue."""
        rep = self.rep
        env, queue, _, _, _, max_seqs, asyn, _, bs, total, _, ext = rep._fixed
        (_, _, _, _, full, chunk, _, waiting, ready, plen, cached, max_batch, room, reserve, pkeys,
         own) = rep._fixed_chunk
        sc, c, k1, off, look = self.cost, rep.cost, self.k + 1, self.off_above, self.look
        e = rep.prefilling[0] if rep.prefilling else None
        used, spare, gp = rep.used, rep.spare, rep._gprev
        horizon = queue[0][0] if queue else inf
        while rep.n and not ready:
            n = rep.n
            on = n <= off
            need = self.need(on)
            take = need if need < spare else spare
            after = used + need - take
            if after > total:
                break                       # preemption: general path
            budget = full - (n * k1 if on else n)
            q = q2 = 0
            if e is not None:
                left = e[2] - e[1]
                q = left if left < budget else budget
                if chunk < q:
                    q = chunk
                if q <= 0:
                    break
            free = budget - q
            if waiting and free > 0:
                rid = waiting[0]
                if rid in pkeys:
                    rep._lookup(rid)
                if rid in own:
                    rep._own_hit(rid)
                if rep._loads:
                    break                   # a request waits for its host KV: general path
                p = plen[rid]
                left2 = p - cached[rid]
                q2 = left2 if left2 < free else free
                if chunk < q2:
                    q2 = chunk
                m = n if e is None else n + 1
                extra = rep._output_blocks(rid, p) if reserve else 0
                if (m >= max_batch or after + -(-(p + look) // bs) + extra > room
                        or (len(waiting) > 1 and free - q2 > 0 and m + 1 < max_batch)):
                    break                   # admit() would take none or maybe several: general path
            elif e is None:
                break
            if n + (e is not None) + (q2 > 0) > max_seqs:
                break
            spare -= take
            used = after
            chunks = [(e, q)] if q else []
            if q2:                          # admits exactly the one request
                rep.used, rep.spare = used, spare
                rep._chunks = []
                rep.admit(free, chunk, False)
                chunks.append(rep._chunks[0])
                used, spare = rep.used, rep.spare
            pairs = [(qq, ee[1] + qq) for ee, qq in chunks]
            ptok = q + q2
            if on:
                g = sc.mixed(n, self.K, pairs)
                h = sc.host(n, ptok, len(pairs))
            else:
                g = c(n + ptok, n, self.K + n, pairs)
                h = c.cpu(n + ptok, n + len(pairs))
            if asyn:
                h -= gp
                gp = g
                if h > 0:
                    g += h
            t_end = t + g
            rep.busy += g
            self.on = on
            if t_end >= horizon:
                rep.used, rep.spare, rep._gprev = used, spare, gp
                rep._dec, rep._chunks, rep._ptok = True, chunks, ptok
                rep._t_end = t_end
                env.schedule(t_end, rep._step_end, t, t_end)
                return -1.0
            env.now = t_end
            rep.used, rep.spare, rep._gprev = used, spare, gp
            rep.D += 1
            gap = t_end - rep._last_dec_end
            rep._last_dec_end = t_end
            self.advance(n)
            if self.due():
                self.finish(0, t_end)
            ended = False
            for ee, qq in chunks:
                ee[1] += qq
                if ee[1] >= ee[2]:
                    rep._prefilled(ee[0], ee[2], t_end)
                    ended = True
            if ended:
                rep.prefilling = [x for x in rep.prefilling if x[1] < x[2]]
            ext((t, t_end, n, ptok, rep.used, gap))
            t = t_end
            if queue and queue[0][0] <= t:  # same-time events (arrivals) go first
                env.schedule(t, rep._resume, priority=LATE)
                return -1.0
            pf = rep.prefilling
            if len(pf) > 1 or not (pf or waiting):
                return t
            e = pf[0] if pf else None
            used, spare = rep.used, rep.spare
            horizon = queue[0][0] if queue else inf
        rep.used, rep.spare, rep._gprev = used, spare, gp
        return t

    # ---- invariants (debug) -------------------------------------------------------------------
    def check(self) -> None:
        """``Replica.check`` for these decoders (runs after the step's plan)."""
        rep, st = self.rep, self.rep.store
        look = self.look
        assert 0 <= rep.used <= rep.total_blocks, (rep.used, rep.total_blocks)
        assert rep.n == len(rep.running) == sum(self.cnt) == sum(map(sum, self.res))
        pos = {r: st.base[r] + self.clock[self.rates(r)] for r in rep.running}
        assert self.K == sum(pos.values()), (self.K, sum(pos.values()))
        held = sum(rep.blocks_for(p + look) - st.shared[r] for r, p in pos.items())
        held += sum(rep.blocks_for(e[2] + look) for e in rep.prefilling)
        assert held + rep.spare <= rep.used, (held, rep.spare, rep.used)
        if rep._resv:
            step = rep._dec and rep.n
            adv = {r: (self.rates(r) if self.on else 1) if step else 0 for r in rep.running}
            in_use = sum(rep.blocks_for(p + adv[r] + look) for r, p in pos.items() if r in rep._resv)
            in_use += sum(rep.blocks_for(e[2] + look) for e in rep.prefilling if e[0] in rep._resv)
            assert rep.spare == sum(rep._resv.values()) - in_use, (rep.spare, in_use)
        assert rep.n + len(rep.prefilling) <= rep.max_batch or not rep.prefilling

    def summary(self) -> dict:
        steps = self.spec_steps + self.plain_steps
        return {"speculative_steps": self.spec_steps, "plain_steps": self.plain_steps,
                "decode_tokens": self.tokens,
                "tokens_per_sequence_step": self.tokens / self.seq_steps if self.seq_steps else 0.0,
                "speculating_share": self.spec_steps / steps if steps else 0.0}


def attach(rep: "Replica", cfg: "SpeculativeConfig", cost: SpecCost, rates: Rates) -> SpecDecoders:
    """Speculation on ``rep``: its decode aggregate and step methods become ``SpecDecoders``'
    (bound on the instance, so replicas without it run their own code unchanged)."""
    spec = SpecDecoders(rep, cfg, cost, rates)
    rep.spec, rep.look = spec, spec.look
    rep._decode_burst, rep._chunk_burst, rep._begin, rep._end = spec.burst, spec.chunk_burst, spec.begin, spec.end
    rep._join, rep._leave, rep._finish, rep._preempt_last = spec.join, spec.leave, spec.finish, spec.preempt_last
    rep.decode_alloc, rep.check = spec.decode_alloc, spec.check
    return spec


def attach_to(deployment, rep: "Replica", pool) -> SpecDecoders:
    """Speculation on a decoding replica of ``deployment`` (an ``Aggregated``): the step cost of
    its pool and the deployment's per-request rates, built on first use and shared."""
    dep = deployment.dep
    cfg = dep.speculative
    if getattr(dep, "lora", None) is not None:
        raise HermesError(f"deployment '{dep.name}': speculative decoding with LoRA adapters is not modelled")
    cache = deployment.__dict__.setdefault("_speculative", {})
    if "rates" not in cache:
        cache["rates"] = Rates(cfg, deployment.store, dep.name)
    cost = cache.get(id(pool))
    if cost is None:
        draft = None
        if cfg.method == "draft":
            from profiling.models import resolve_model

            from .stepcost import step_table
            d = resolve_model(cfg.draft_model)
            tp = pool.tp if d.num_heads % pool.tp == 0 and (d.num_kv_heads % pool.tp == 0
                                                              or pool.tp % d.num_kv_heads == 0) else 1
            try:
                draft = step_table(deployment.surrogate, d, pool.hw, dtype=dep.dtype, kv_dtype=dep.kv_dtype,
                                   tp=tp, pp=1)
            except HermesError as e:
                raise HermesError(f"deployment '{dep.name}' speculative.draft_model: {e}") from None
        cost = cache[id(pool)] = spec_cost(pool.cost, cfg.num_speculative_tokens, cfg.method,
                                           pool.model.num_layers, draft)
    return attach(rep, cfg, cost, cache["rates"])
