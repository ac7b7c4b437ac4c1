"""LoRA adapters served on one base model (vLLM multi-LoRA, SGLang, punica/S-LoRA style).

Three pieces, resolved once per deployment (``LoraSetup``) and given to each replica (``LoraState``):

* **Which adapter a request names**: ``draw_adapters`` (the ``lora.popularity`` block, from the
  scenario's seed). Sub-requests (reasoning branches) name none.
* **Where adapters live** (``LoraState``, one per replica): ``max_loras`` GPU slots (LRU), an LRU
  CPU cache of ``max_cpu_loras``, the rest on disk or a remote store. A cold adapter is read from
  disk (``disk_latency_s`` + full checkpoint bytes / ``disk_bw_gb_s``) and copied over the host
  link (one device's shard / ``pcie_bw_gb_s``). The admission rule is vLLM V1's: a waiting
  request whose adapter would make the running batch hold more than ``max_loras`` distinct
  adapters is skipped (it keeps its place, later requests go ahead); requests without an adapter
  are never skipped. ``loading: blocking`` (vLLM: the worker loads the batch's adapters before
  the forward) adds the load to that step; ``background`` (SGLang's overlap loading) loads beside
  the steps, one load at a time over the link, and only the adapter's requests wait.
* **What adapters cost** (``LoraCost``): each target module of each layer adds a shrink GEMM
  [tokens x d_in] x [d_in x r] and an expand GEMM [tokens x r] x [r x d_out] (at ``max_lora_rank``:
  vLLM's kernels run over the padded stacked weights), priced by the deployment's operator
  predictor; the packed q/k/v and gate/up projections are one launch each, as in vLLM's punica
  kernels (their slices side by side). ``k`` adapters in one step are priced as the MoE grouped GEMM is
  (``profiling.operators``): one GEMM as wide as their weights side by side, tokens / k rows each.
  The slots' memory (``slot_bytes``) comes off the KV cache, as vLLM's memory profiling with
  dummy adapters does.

Replicas with adapters take the general step path (``Replica.general``); replicas without keep
their fast paths and their outputs byte for byte.
"""
from __future__ import annotations

import zlib
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from profiling.dtypes import dtype_bytes
from profiling.errors import HermesError
from profiling.hardware import HardwareSpec
from profiling.models import ModelSpec
from profiling.operators import GEMM, Operator, activation_dtype
from surrogates.compiled import _ops_ms_each

from .config import LORA_MODULES, LoraConfig
from .stepcost import load_predictor

LORA_SEED_OFFSET = 7_919          # keeps the adapter draw apart from the other seeded streams
COLUMN_PARALLEL = frozenset({"q", "k", "v", "gate", "up"})   # the rest (o, down) are row-parallel


def module_dims(model: ModelSpec, module: str) -> tuple[int, int]:
    """(d_in, d_out) of one target projection of a dense decoder layer."""
    h, i = model.hidden_size, model.intermediate_size
    return {"q": (h, model.q_dim), "k": (h, model.kv_dim), "v": (h, model.kv_dim), "o": (model.q_dim, h),
            "gate": (h, i), "up": (h, i), "down": (i, h)}[module]


def _check_model(model: ModelSpec, modules) -> None:
    if model.is_moe and any(m in ("gate", "up", "down") for m in modules):
        raise HermesError(f"lora: adapters on the MLP of the mixture-of-experts model {model.name} are not "
                          "modelled (target q, k, v, o only)")


def adapter_bytes(model: ModelSpec, modules, rank: int, dtype: str, tp: int = 1, pp: int = 1) -> float:
    """Bytes of one adapter's A and B matrices: the whole checkpoint (tp = pp = 1) or one
    device's share (A replicated and B split over TP on column-parallel layers, the reverse on
    row-parallel ones; a pipeline stage holds its layers)."""
    layers = -(-model.num_layers // pp)
    per_layer = 0.0
    for m in modules:
        d_in, d_out = module_dims(model, m)
        per_layer += d_in + d_out / tp if m in COLUMN_PARALLEL else d_in / tp + d_out
    return layers * per_layer * rank * dtype_bytes(dtype)


def slot_bytes(cfg: LoraConfig, model: ModelSpec, dtype: str | None, tp: int, pp: int) -> float:
    """Device memory the GPU slots reserve: ``max_loras`` adapters of ``max_lora_rank`` on every
    LoRA-capable projection (vLLM allocates the stacked weights for all of them up front, whatever
    the adapters target; on a MoE model the attention projections only)."""
    _check_model(model, {m for a in cfg.adapter_list() for m in a.target_modules})
    mods = ("q", "k", "v", "o") if model.is_moe else LORA_MODULES
    return cfg.max_loras * adapter_bytes(model, mods, cfg.max_lora_rank,
                                         activation_dtype(model, dtype or model.dtype), tp, pp)


def draw_adapters(cfg: LoraConfig, n: int, seed: int, name: str) -> list[int]:
    """The adapter (index into ``cfg.adapter_list()``, -1 none) each of ``n`` requests names."""
    k = len(cfg.adapter_list())
    p = cfg.popularity
    if p.dist == "zipf":
        w = 1.0 / np.arange(1, k + 1, dtype=float) ** p.exponent
    elif p.dist == "uniform":
        w = np.ones(k)
    else:
        w = np.asarray(p.weights, dtype=float)
    rng = np.random.default_rng([seed, LORA_SEED_OFFSET, zlib.crc32(name.encode())])
    ids = rng.choice(k, size=n, p=w / w.sum())
    if p.base_share > 0:
        ids = np.where(rng.random(n) < p.base_share, -1, ids)
    return ids.tolist()


class LoraCost:
    """Seconds the adapters add to a step of ``tokens`` adapter tokens over ``k`` adapters (all
    ``pp`` stages, times the kernel scale), interpolated on a (k, tokens) grid of predictions."""

    def __init__(self, cfg: LoraConfig, model: ModelSpec, hw: HardwareSpec, predictor, *, dtype: str | None,
                 tp: int, pp: int, max_tokens: int, kernel_scale: float) -> None:
        dt = activation_dtype(model, dtype or model.dtype)
        r = cfg.max_lora_rank
        mods = sorted({m for a in cfg.adapter_list() for m in a.target_modules}, key=LORA_MODULES.index)
        _check_model(model, mods)
        self.tok = np.unique(np.round(np.geomspace(1, max(max_tokens, 2), 24))).astype(int).tolist()
        self.ks = list(range(1, cfg.max_loras + 1)) if cfg.max_loras <= 16 else \
            np.unique(np.round(np.geomspace(1, cfg.max_loras, 16))).astype(int).tolist()
        # vLLM's packed layers (qkv_proj, gate_up_proj) run one shrink and one expand launch over
        # their slices: (name, d_in on this device, rank columns, output columns on this device)
        groups = []
        for name, members in (("qkv", ("q", "k", "v")), ("o", ("o",)), ("gate_up", ("gate", "up")),
                              ("down", ("down",))):
            ms_ = [x for x in members if x in mods]
            if ms_:
                d_in = module_dims(model, ms_[0])[0]
                col = ms_[0] in COLUMN_PARALLEL
                outs = sum(module_dims(model, x)[1] // (tp if col else 1) for x in ms_)
                groups.append((name, d_in if col else d_in // tp, r * len(ms_), outs))
        lists = []
        for k in self.ks:
            for t in self.tok:
                m = -(-t // k)
                ops = []
                for name, d_in, cols, outs in groups:
                    ops += [Operator(GEMM, f"lora_{name}_shrink", {"m": m, "n": cols * k, "k": d_in}, dt),
                            Operator(GEMM, f"lora_{name}_expand", {"m": m, "n": outs * k, "k": r}, dt)]
                lists.append(ops)
        layers = -(-model.num_layers // pp)
        ms = _ops_ms_each(lists, hw, predictor).reshape(len(self.ks), len(self.tok))
        grid = ms * 1e-3 * layers * pp * kernel_scale
        # more tokens or adapters never cost less (kernels have tile dips)
        grid = np.maximum.accumulate(np.maximum.accumulate(grid, axis=1), axis=0)
        self.rows = grid.tolist()

    def __call__(self, tokens: int, k: int) -> float:
        if tokens <= 0 or k <= 0:
            return 0.0
        ks = self.ks
        i = bisect_right(ks, k) - 1
        lo = self._row(self.rows[i if i >= 0 else 0], tokens)
        if i + 1 >= len(ks) or ks[i] == k:
            return lo
        hi = self._row(self.rows[i + 1], tokens)
        return lo + (hi - lo) * (k - ks[i]) / (ks[i + 1] - ks[i])

    def _row(self, row: list[float], t: int) -> float:
        xs = self.tok
        j = bisect_right(xs, t)
        if j < 1:
            return row[0]
        if j >= len(xs):
            j = len(xs) - 1             # extrapolate linearly above the grid
        x0 = xs[j - 1]
        return row[j - 1] + (row[j] - row[j - 1]) * (t - x0) / (xs[j] - x0)


@dataclass
class LoraStats:
    """What one replica's adapters did."""

    requests: int = 0               # adapter requests admitted (each admission, re-admissions too)
    hits: int = 0                   # ... whose adapter was in a GPU slot and ready when first looked at
    loads_cpu: int = 0              # loads from the CPU cache
    loads_disk: int = 0             # loads from disk / remote
    load_s: float = 0.0             # seconds of loads
    peak_active: int = 0            # most distinct adapters in a running batch


class LoraState:
    """One replica's adapter slots, CPU cache, per-request bookkeeping and step cost."""

    def __init__(self, rep, cfg: LoraConfig, adapter_of: list[int], cost: LoraCost, full_bytes: list[float],
                 dev_bytes: list[float], host_bw: float) -> None:
        self.rep, self.cfg, self.adapter_of, self.cost = rep, cfg, adapter_of, cost
        self.n_req = len(adapter_of)
        self.max_loras, self.background = cfg.max_loras, cfg.loading == "background"
        self.gpu: OrderedDict[int, None] = OrderedDict()    # adapters in GPU slots, LRU first
        self.cpu: OrderedDict[int, None] = OrderedDict()    # adapters in the CPU cache, LRU first
        self.ready_at: dict[int, float] = {}                # background: a slot's load ends then
        self.refs: dict[int, int] = {}                      # adapter -> requests prefilling or decoding
        self.dec = 0                                        # decoders with an adapter
        self.link_free = 0.0                                # background: the host link is busy until then
        self.first_wait: dict[int, float] = {}              # rid -> when it was first skipped
        self.waits: dict[int, float] = {}                   # rid -> seconds waited for its adapter
        self.stats = LoraStats()
        self._disk_s = [cfg.disk_latency_s + b / (cfg.disk_bw_gb_s * 1e9) for b in full_bytes]
        self._h2d_s = [b / host_bw for b in dev_bytes]

    def adapter(self, rid: int) -> int:
        return self.adapter_of[rid] if rid < self.n_req else -1

    # ---- admission (the policy's ``admit``, with vLLM's max_loras skip) -------------------
    def admit(self, budget: float, chunk: float, whole: bool) -> int:
        """``Replica.admit`` with adapters: a request whose adapter cannot join the batch now is
        skipped and keeps its place; KV or token budget running out still ends the admissions."""
        rep = self.rep
        st, waiting, prefilling, chunks = rep.store, rep.waiting, rep.prefilling, rep._chunks
        room = rep.total_blocks - rep.watermark
        now = rep.env.now
        used = 0
        skipped: list[int] = []
        while waiting and budget - used > 0:
            if rep.n + len(prefilling) >= rep.max_batch:
                break
            rid = waiting[0]
            a = self.adapter(rid)
            if a >= 0 and not self._can_run(a, now):
                if rid not in self.first_wait:
                    self.first_wait[rid] = now
                skipped.append(waiting.popleft())
                continue
            if rid in rep._pkeys:
                rep._lookup(rid)
            if rep._loads and rep._still_loading(rid):
                skipped.append(waiting.popleft())   # its KV is still coming back from the host
                continue
            p = st.plen[rid]
            c = st.cached[rid]
            if whole and p - c > budget - used and (used or chunks):
                break
            need = -(-p // rep.bs)
            extra = rep._output_blocks(rid, p) if rep.reserve else 0
            if rep.used + need + extra > room:
                break
            waiting.popleft()
            if a >= 0:
                self._run_adapter(rid, a, now)
            q = p - c if whole else min(p - c, budget - used, chunk)
            rep._start_prefill(rid, c, p, need, extra, q)
            used += q
        if skipped:
            waiting.extendleft(reversed(skipped))
        return used

    def _can_run(self, a: int, now: float) -> bool:
        """Whether a request of adapter ``a`` may start now (starting a background load if not)."""
        if self.refs.get(a):
            return True                         # already in the batch
        if not self.background:
            return len(self.refs) < self.max_loras
        t = self.ready_at.get(a)
        if t is not None:
            return t <= now                     # in a slot: loaded, or loading
        victim = self._victim()
        if victim is None:
            return False                        # every slot is in use or loading
        start = self.link_free if self.link_free > now else now
        self.link_free = done = start + self._place(a, victim)
        self.ready_at[a] = done
        self.rep.env.schedule(done, self.rep._kick, done)
        return False

    def _victim(self) -> int | None:
        """A slot to load into: -1 for a free one, else the least recently used adapter not in
        the batch and not loading; None when there is none."""
        if len(self.gpu) < self.max_loras:
            return -1
        now = self.rep.env.now
        for b in self.gpu:
            if not self.refs.get(b) and self.ready_at.get(b, -1.0) <= now:
                return b
        return None

    def _place(self, a: int, victim: int) -> float:
        """Put ``a`` in a GPU slot (evicting ``victim``), through the CPU cache; its load seconds."""
        if victim >= 0:
            del self.gpu[victim]
            self.ready_at.pop(victim, None)
        s = self._h2d_s[a]
        if a in self.cpu:
            self.cpu.move_to_end(a)
            self.stats.loads_cpu += 1
        else:
            s += self._disk_s[a]
            self.stats.loads_disk += 1
            if len(self.cpu) >= self.cfg.cpu_slots:
                # the CPU cache evicts its least recently used adapter not in a GPU slot
                out = next((b for b in self.cpu if b not in self.gpu), next(iter(self.cpu)))
                del self.cpu[out]
            self.cpu[a] = None
        self.gpu[a] = None
        self.stats.load_s += s
        return s

    def _run_adapter(self, rid: int, a: int, now: float) -> None:
        """Request ``rid`` of adapter ``a`` joins the batch (blocking mode: loading it into this step)."""
        hit = rid not in self.first_wait
        wait = now - self.first_wait.pop(rid, now)
        if a in self.gpu:
            self.gpu.move_to_end(a)
        else:                                   # blocking mode: this step runs the load first
            victim = self._victim()
            self.rep._extra += self._place(a, victim if victim is not None else next(iter(self.gpu)))
            self.ready_at[a] = now + self.rep._extra
        t = self.ready_at.get(a, now)
        if t > now:                             # loaded in this step (blocking): waits for it
            wait += t - now
            hit = False
        if a in self.cpu:
            self.cpu.move_to_end(a)
        self.refs[a] = self.refs.get(a, 0) + 1
        if len(self.refs) > self.stats.peak_active:
            self.stats.peak_active = len(self.refs)
        self.stats.requests += 1
        self.stats.hits += hit
        self.waits[rid] = self.waits.get(rid, 0.0) + wait

    # ---- the batch leaving, and the step's cost ------------------------------------------
    def joined(self, rid: int) -> None:
        if self.adapter(rid) >= 0:
            self.dec += 1

    def left(self, rid: int, decoding: bool) -> None:
        """``rid`` leaves the batch (finished, or preempted back to the queue)."""
        a = self.adapter(rid)
        if a < 0:
            return
        if decoding:
            self.dec -= 1
        r = self.refs[a] - 1
        if r:
            self.refs[a] = r
        else:
            del self.refs[a]

    def step_s(self, decodes: bool, chunks) -> float:
        """Seconds the adapters add to a step: the decoders with an adapter (when they advance)
        plus the adapter requests' prefill chunk tokens."""
        tokens = self.dec if decodes else 0
        for e, q in chunks:
            if self.adapter(e[0]) >= 0:
                tokens += q
        return self.cost(tokens, len(self.refs)) if tokens else 0.0

    def check(self) -> None:
        """Adapters never exceed their slots (debug)."""
        assert len(self.refs) <= self.max_loras, (self.refs, self.max_loras)
        assert len(self.gpu) <= self.max_loras
        assert all(a in self.gpu for a in self.refs), (self.refs, self.gpu)
        assert len(self.cpu) <= self.cfg.cpu_slots


_COSTS: dict[tuple, LoraCost] = {}


def lora_cost(cfg: LoraConfig, pool, surrogate: str | None, dtype: str | None, max_tokens: int,
              kernel_scale: float) -> LoraCost:
    """``LoraCost`` memoized on what it depends on (building one takes 0.1-0.3 s: a search's
    trials share it, as they share step tables)."""
    mods = tuple(sorted({m for a in cfg.adapter_list() for m in a.target_modules}))
    key = (cfg.max_lora_rank, cfg.max_loras, mods, pool.model.model_dump_json(warnings=False),
           pool.hw.model_dump_json(warnings=False), surrogate, dtype, pool.tp, pool.pp, int(max_tokens),
           float(kernel_scale))
    hit = _COSTS.get(key)
    if hit is None:
        if len(_COSTS) > 64:
            _COSTS.clear()
        hit = _COSTS[key] = LoraCost(cfg, pool.model, pool.hw, load_predictor(surrogate), dtype=dtype, tp=pool.tp,
                                     pp=pool.pp, max_tokens=max_tokens, kernel_scale=kernel_scale)
    return hit


class LoraSetup:
    """A deployment's adapters resolved once: their sizes, the step cost table and the adapter
    each request names; ``attach`` gives a replica its own slots and caches."""

    def __init__(self, dep, pool, surrogate: str | None, store) -> None:
        cfg: LoraConfig = dep.lora
        model, hw = pool.model, pool.hw
        if hw.pcie_bw_gb_s <= 0:
            raise HermesError(f"deployment '{dep.name}' lora: hardware '{hw.name}' has no pcie_bw_gb_s "
                              "(the host link adapters load over)")
        self.cfg = cfg
        dt = activation_dtype(model, dep.dtype or model.dtype)
        adapters = cfg.adapter_list()
        self.full = [adapter_bytes(model, a.target_modules, a.rank, dt) for a in adapters]
        self.dev = [adapter_bytes(model, a.target_modules, a.rank, dt, pool.tp, pool.pp) for a in adapters]
        self.host_bw = hw.pcie_bw_gb_s * 1e9
        self.cost = lora_cost(cfg, pool, surrogate, dep.dtype, dep.scheduler.max_tokens_per_step,
                              dep.overhead.kernel_scale)
        self.adapter_of = draw_adapters(cfg, store.n, store.seed, dep.name)

    def attach(self, rep) -> None:
        rep.lora = LoraState(rep, self.cfg, self.adapter_of, self.cost, self.full, self.dev, self.host_bw)
        rep.general = True


def summarize(deps) -> dict | None:
    """Per LoRA deployment: adapter requests, hit rate, loads, waits (None without adapters)."""
    out = {}
    for d in deps:
        states = [r.lora for r in getattr(d, "replicas", ()) if getattr(r, "lora", None) is not None]
        if not states:
            continue
        cfg = states[0].cfg
        waits = np.asarray([w for s in states for w in s.waits.values()], dtype=float)
        n = int(waits.size)
        hits = sum(s.stats.hits for s in states)
        loads_cpu = sum(s.stats.loads_cpu for s in states)
        loads_disk = sum(s.stats.loads_disk for s in states)
        pool = d.pool
        out[d.dep.name] = {
            "adapters": len(cfg.adapter_list()), "max_loras": cfg.max_loras, "max_cpu_loras": cfg.cpu_slots,
            "max_lora_rank": cfg.max_lora_rank, "loading": cfg.loading,
            "slot_gb_per_device": slot_bytes(cfg, pool.model, d.dep.dtype, pool.tp, pool.pp) / 1e9,
            "adapter_requests": n, "hit_rate": hits / max(sum(s.stats.requests for s in states), 1),
            "loads": loads_cpu + loads_disk, "loads_from_cpu": loads_cpu, "loads_from_disk": loads_disk,
            "load_s_total": sum(s.stats.load_s for s in states),
            "requests_that_waited": int((waits > 0).sum()),
            "adapter_wait_s": {"mean": float(waits.mean()) if n else float("nan"),
                               "p99": float(np.percentile(waits, 99)) if n else float("nan"),
                               "max": float(waits.max()) if n else float("nan")},
            "peak_active_adapters": max(s.stats.peak_active for s in states),
        }
    return out or None


def columns(deps, n: int) -> dict[str, list] | None:
    """Request-table columns of a run with adapters: the adapter each request named ('' none)
    and the seconds it waited for it (NaN where no LoRA deployment admitted it)."""
    names = [""] * n
    wait = [float("nan")] * n
    seen = False
    for d in deps:
        setup = getattr(d, "lora", None)
        if not isinstance(setup, LoraSetup):
            continue
        seen = True
        ids = [a.id for a in setup.cfg.adapter_list()]
        for rid, a in enumerate(setup.adapter_of[:n]):
            if a >= 0:
                names[rid] = ids[a]
        for r in d.replicas:
            for rid, w in r.lora.waits.items():
                if rid < n:
                    wait[rid] = w
    return {"adapter": names, "adapter_wait_s": wait} if seen else None
