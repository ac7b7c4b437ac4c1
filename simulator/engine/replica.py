"""One serving engine (a TP x PP group of devices): queues, paged KV blocks, the step loop.

Per-step work does not depend on the batch size. Decoding requests are kept as an
aggregate — count ``n``, ``B`` = sum of (KV length - decode iteration) so the batch's KV
total at iteration ``j`` is ``B + n*j``, block-boundary counts by residue, and a heap of
finish iterations — so a step touches only the requests that start, finish or are
preempted in it. Per-request timings come from the step end times (``Store``).

The policy (``simulator.engine.schedulers``) decides each step's composition through the
``admit_ready`` / ``decode_alloc`` / ``continue_prefills`` / ``admit`` helpers. Most steps
never reach it: ``_decode_burst`` (decoders only, any policy) and ``_chunk_burst`` (the
chunked policy's steps with the prefill in progress and at most one admission) run them
inline with the general path's arithmetic; debug runs take the general path for every step.
With speculative decoding (``simulator.engine.speculative.attach``) the decoders are grouped by
tokens per step, and that module's versions of these methods are bound on the instance.
"""
from __future__ import annotations

from collections import deque
from bisect import bisect_right
from heapq import heappop, heappush
from math import inf
from typing import Callable

from .core import LATE, LATER, Environment
from .memory import MemoryPlan
from .prefix import EnginePrefixCache
from .stepcost import StepCost
from .store import Store


def _segment(xs: list, top: int, row: list, x: float) -> tuple[float, float, float, float, float]:
    """The decode-attention table segment holding mean context ``x`` (clamped to the table):
    its upper edge (inf for the last), left knot, width, and the row's value and slope there."""
    k = bisect_right(xs, x)
    if k < 1:
        k = 1
    elif k > top:
        k = top
    x0 = xs[k - 1]
    r0 = row[k - 1]
    return (xs[k] if k < top else inf), x0, xs[k] - x0, r0, row[k] - r0


class Replica:
    def __init__(self, env: Environment, store: Store, name: str, cost: StepCost, mem: MemoryPlan,
                 policy, *, max_batch: int, devices: int, swap_bw: float = 0.0,
                 handoff: Callable[[int, float], None] | None = None, debug: bool = False,
                 done: Callable[[int, float], None] | None = None, prefix_caching: bool = False,
                 host_kv_bytes: float = 0.0, host_kv_ratio: float = 0.0, host_bw: float = 0.0) -> None:
        self.env, self.store, self.name, self.cost, self.mem = env, store, name, cost, mem
        self.done = done or store.complete          # where a finished request goes next
        self.policy, self.max_batch, self.devices = policy, max_batch, devices
        self.handoff, self.debug = handoff, debug
        # every step through plan/_begin/_end, never a burst: debug runs (checked each step) and
        # replicas with LoRA adapters (``simulator.engine.lora``, set by the deployment)
        self.general = debug
        self.lora = None
        self.swap_bw = swap_bw                      # host link B/s; 0 means recompute only
        self.bs = mem.block_size
        self.total_blocks = mem.num_blocks
        self.watermark = max(1, self.total_blocks // 100)
        self.used = 0
        # Full KV reservation: blocks held for output not generated yet (counted in
        # ``used``); decode growth draws on them first. ``_resv`` = each holder's final
        # block count. Both stay empty with on-demand KV.
        self.reserve = getattr(policy, "reserve_output", False)
        self.steady = getattr(policy, "steady_chunks", False)
        self.spare = 0
        self._resv: dict[int, int] = {}
        self.waiting: deque[int] = deque()          # (re)prefill queue, preempted at the front
        self.ready: deque[tuple[int, int, bool]] = deque()  # (rid, kv, swapped): KV present or arriving
        self.prefilling: list[list[int]] = []       # [rid, done, total]
        self.running: dict[int, None] = {}         # decoders in admission order (victim = last)
        self.n = 0
        self.B = 0
        self.D = 0                                  # decode iterations so far
        self.res = [0] * self.bs                    # decoders by (base mod block size)
        self.fin: list[tuple[int, int, int]] = []   # (finish iteration, rid, version)
        self.idle = True
        self.busy = 0.0
        self.outstanding = 0                        # prompt+output tokens not yet finished
        self.steps: list[float] = []                # flat: t0, t1, decoders, prefill tokens, used blocks, itl gap
        self.preemptions = 0
        self._chunks: list[tuple[list[int], int]] = []
        self._extra = 0.0
        self._last_dec_end = 0.0
        # The engine's prefix cache, for requests that carry their prompt's segments: block
        # keys wait in ``_pkeys`` until the request is first considered for admission (the
        # lookup), then in ``_pins`` until it is admitted (its blocks enter the cache).
        # KV offloaded to host memory (``host_kv_*``): a host tier of whole blocks, each block
        # the size of one across the replica's devices; a hit there is copied back before the
        # request runs, each device its shard over its own link (``_load_s`` per token), and
        # the request waits aside meanwhile (``_loads``: when its KV is back) as vLLM's
        # offloading connector keeps a request waiting for its KV out of the queue's way.
        host_blocks = 0
        if host_kv_bytes or host_kv_ratio:
            host_blocks = (int(host_kv_bytes // (mem.kv_per_token * devices * self.bs))
                           + int(host_kv_ratio * self.total_blocks))
        self.prefix = (EnginePrefixCache(self.total_blocks if prefix_caching else 0, self.bs, host_blocks)
                       if (prefix_caching or host_blocks) and store.segments is not None else None)
        self._pkeys: dict[int, list[int]] = {}
        self._pins: dict[int, list[int]] = {}
        # With the engine's prefix cache a preempted request's freed blocks stay cached until
        # reused, so a recompute starts from what is left of them (``_own_hit``).
        self.keeps_own = prefix_caching
        self._own: dict[int, tuple[int, int, int, int]] = {}
        self.freed = 0
        # Requests resumed after a preemption: how many, the tokens they had to recompute
        # without a cache, and how many of those the cache held.
        self.resumed = self.resume_tokens = self.resume_cached = 0
        self._load_s = mem.kv_per_token / host_bw if host_blocks and host_bw > 0 else 0.0
        self._loads: dict[int, float] = {}
        self.load_seconds = 0.0
        # Async scheduling (cost.asyn): the previous step's kernel seconds, which the host work
        # of the next step overlaps; 0 after idling (nothing to hide behind).
        self._gprev = 0.0
        # End of the step in progress whose end is an event (-inf between steps): with async
        # scheduling the step after it was planned when it began, so a request arriving now
        # waits for the planning at its end.
        self._t_end = -inf
        self.arriving = 0                           # requests on their way to ``waiting``
        # Speculative decoding (``simulator.engine.speculative.attach``): its decoders replace the
        # aggregate below; ``look`` = KV lookahead slots each decoder holds (0 without it).
        self.spec = None
        self.look = 0
        # Front end (API server) that streams every emitted token and admits new requests
        # in one process, in order: a request reaches the scheduler once the token work
        # queued before it is done. 0 = no such bottleneck (the common, fast path).
        self.stream_s = cost.overhead.stream_token_s
        self._fe_busy = 0.0                         # the front end is busy until then
        self._fe_seen = 0                           # entries of ``steps`` already streamed
        # What the burst loops read, gathered once (none of these is ever rebound): a burst
        # is often a step or two long, so its set-up counts.
        c = cost
        self._fixed = (env, env._queue, c._kv, c._dec, len(c._kv) - 1, c.max_seqs, c.asyn,
                       self.res, self.bs, self.total_blocks, self.fin, self.steps.extend)
        self._fixed_dec = (c._tokd, c._seqd, c._cpud, policy.decodes)
        self._fixed_chunk = (c._tok, c._seq, c.prefill, c.max_tokens,
                             policy.max_tokens, policy.chunk, c.overhead,
                             self.waiting, self.ready, store.plen, store.cached, max_batch,
                             self.total_blocks - self.watermark, self.reserve, self._pkeys, self._own)

    # ---- entry points ---------------------------------------------------------------
    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.bs)

    def can_ever_fit(self, tokens: int) -> bool:
        return self.blocks_for(tokens + 2 * self.look) <= self.total_blocks - self.watermark

    def submit(self, rid: int, t: float) -> None:
        """A request to prefill (and decode) here (after the front end's queued work)."""
        if self.stream_s > 0:
            t_in = self._frontend_free(t)
            if t_in > t:
                self.env.schedule(t_in, self._enqueue, rid, t_in)
                return
        self._enqueue(rid, t)

    def _frontend_free(self, t: float) -> float:
        """When the front end gets to a request arriving at ``t``: every decode token of
        the steps ended by ``t`` costs it ``stream_s`` after its step ends (first tokens,
        a few per step, are left out). Saturates near 1 / ``stream_s`` tokens per second,
        so new requests queue there while running streams continue."""
        s, i, busy, c = self.steps, self._fe_seen, self._fe_busy, self.stream_s
        while i + 6 <= len(s) and s[i + 1] <= t:
            t1 = s[i + 1]
            busy = (busy if busy > t1 else t1) + s[i + 2] * c
            i += 6
        self._fe_seen, self._fe_busy = i, busy
        return busy if busy > t else t

    def _enqueue(self, rid: int, t: float) -> None:
        self.outstanding += self.store.prompt[rid] + self.store.output[rid]
        if self.cost.asyn and not self.idle and self._gprev > 0:
            # vLLM's async scheduling keeps two steps in flight: the one after the running
            # step is already planned, so a new request joins the step after that one. Not
            # before the first step after idling (``_gprev`` 0): requests arriving together
            # then (a closed loop's first wave) are all there when it is planned.
            self.arriving += 1
            self.env.schedule(self._t_end if self._t_end > t else t, self._arrived, rid, priority=LATER)
            return
        self._wait(rid, t)

    def _arrived(self, rid: int) -> None:
        self.arriving -= 1
        self._wait(rid, self.env.now)

    def _wait(self, rid: int, t: float) -> None:
        if self.prefix is not None:
            segs = self.store.segments
            if rid < len(segs) and segs[rid]:
                self._pkeys[rid] = self.prefix.keys(segs[rid])
        self.waiting.append(rid)
        if self.idle:                               # _kick, inlined (once per request)
            self.idle = False
            self.env.schedule(t, self._resume, priority=LATE)

    def accept_decode(self, rid: int, t: float, kv: int) -> None:
        """A request whose ``kv`` tokens of KV arrive from elsewhere (disaggregation)."""
        self.ready.append((rid, kv, False))
        self.outstanding += self.store.prompt[rid] + self.store.output[rid]
        self._kick(t)

    def _kick(self, t: float) -> None:
        if self.idle:
            self.idle = False
            self.env.schedule(t, self._resume, priority=LATE)

    # ---- step loop ------------------------------------------------------------------
    def _resume(self) -> None:
        self._run(self.env.now)

    def _run(self, t: float) -> None:
        env = self.env
        queue = env._queue
        while True:
            if not (self.ready or self.general):
                if not (self.waiting or self.prefilling):
                    t = self._decode_burst(t)
                    if t < 0:
                        return
                elif self.steady and len(self.prefilling) < 2:
                    t = self._chunk_burst(t)
                    if t < 0:
                        return
                    if not (self.waiting or self.prefilling):
                        continue            # the next step is decode-only: the decode burst's
            dur = self._begin()
            if dur is None:
                self.idle = True
                self._gprev = 0.0
                return
            t_end = t + dur
            self.busy += dur
            if queue and t_end >= queue[0][0]:
                self._t_end = t_end
                env.schedule(t_end, self._step_end, t, t_end)
                return
            env.now = t_end                 # nothing can happen before t_end: run ahead
            self._end(t, t_end)
            t = t_end
            if queue and queue[0][0] <= t:  # same-time events (arrivals) go first
                env.schedule(t, self._resume, priority=LATE)
                return

    def _step_end(self, t0: float, t1: float) -> None:
        self._t_end = -inf
        self._end(t0, t1)
        self.env.schedule(t1, self._resume, priority=LATE)

    def _decode_burst(self, t: float) -> float:
        """Back-to-back decode-only steps with every lookup inlined — the hot loop of a
        simulation. Same arithmetic as ``_begin``/``_end`` (tested: debug runs take the
        general path and must agree). Returns the time reached, or -1 after handing the
        replica to the event queue."""
        tok, seq, cpu, decodes = self._fixed_dec
        if not self.n or not decodes:
            return t
        # The sums are grouped as StepCost groups them, so both paths round alike.
        env, queue, xs, dec, top, max_n, asyn, res, bs, total, fin, ext = self._fixed
        n, B, D, used, last, spare, gp = self.n, self.B, self.D, self.used, self._last_dec_end, self.spare, self._gprev
        t_start = t
        # Nothing else can change until a request finishes here: no event fires inside
        # the burst, so the horizon, the queues and the next finish are cached.
        horizon = queue[0][0] if queue else inf
        next_fin = fin[0][0] if fin else inf
        # The mean KV length x only grows while the batch is unchanged, so the table segment
        # [xs[k-1], hi) and the batch's row stay cached until x leaves it or a request leaves.
        hi = -inf
        while n and n < max_n:
            j = D + 1
            need = res[(1 - j) % bs]
            if need:                        # 0 leaves used and spare as they are (used <= total)
                take = need if need < spare else spare  # reserved blocks first (full reservation)
                if used + need - take > total:
                    break                   # preemption: general path
                spare -= take
                used += need - take
            x = (B + n * j) / n
            if x >= hi:
                hi, x0, dx, r0, dr = _segment(xs, top, dec[n], x)
                fixed = tok[n] + seq[n]
                host = cpu[n]
            ty = (x - x0) / dx
            g = fixed + (r0 + dr * (ty if ty > 0 else 0.0))
            if asyn:                        # host work beyond the previous step's kernels
                h = host - gp
                gp = g
                if h > 0:
                    g += h
            t_end = t + g
            if t_end >= horizon:
                self.used, self.D, self._last_dec_end, self.spare, self._gprev = used, D, last, spare, gp
                self.busy += t_end - t_start
                self._dec, self._chunks, self._ptok = True, (), 0
                self._t_end = t_end
                env.schedule(t_end, self._step_end, t, t_end)
                return -1.0
            D = j
            if next_fin <= j:
                env.now = t_end
                self.used, self.D, self._last_dec_end, self.spare, self._gprev = used, D, t_end, spare, gp
                self._finish(j, t_end)
                ext((t, t_end, n, 0, self.used, t_end - last))
                n, B, used, spare = self.n, self.B, self.used, self.spare
                hi = -inf                   # the batch changed: look its row up again
                last = t = t_end
                next_fin = fin[0][0] if fin else inf
                if queue and queue[0][0] <= t:
                    self.busy += t - t_start
                    env.schedule(t, self._resume, priority=LATE)
                    return -1.0
                horizon = queue[0][0] if queue else inf
                if self.waiting or self.ready:
                    break
            else:
                ext((t, t_end, n, 0, used, t_end - last))
                last = t = t_end
        env.now = t
        self.used, self.D, self._last_dec_end, self.spare, self._gprev = used, D, last, spare, gp
        self.busy += t - t_start
        return t

    def _chunk_burst(self, t: float) -> float:
        """Steps of a ``steady_chunks`` policy with decoders and prefill chunks: the prefill in
        progress goes on and, in the budget left, at most the one request ``admit`` takes
        starts. The other hot loop, ``plan``/``_begin``/``_end`` inlined with the same
        arithmetic (tested: debug runs take the general path and must agree). Returns the time
        reached, the general path (or the decode burst, with nothing waiting or prefilling)
        taking the next step, or -1 after handing the replica to the event queue."""
        env, queue, xs, dec, top, max_seqs, asyn, res, bs, total, fin, ext = self._fixed
        (tok, seq, prefill, max_tokens, full, chunk, o, waiting, ready, plen, cached, max_batch,
         room, reserve, pkeys, own) = self._fixed_chunk
        e = self.prefilling[0] if self.prefilling else None
        n, B, D, used, last, spare = self.n, self.B, self.D, self.used, self._last_dec_end, self.spare
        gp, busy = self._gprev, self.busy
        horizon = queue[0][0] if queue else inf
        next_fin = fin[0][0] if fin else inf
        hi = -inf                           # decode-attention segment cached as in _decode_burst
        while n and not ready:
            # Chunked.plan, checked before anything changes: the decoders' blocks first, then
            # the chunk of the prefill in progress, then admissions in the budget left
            j = D + 1
            need = res[(1 - j) % bs]
            take = need if need < spare else spare
            after = used + need - take
            if after > total:
                break                       # preemption: general path
            budget = full - n
            q = q2 = 0
            if e is not None:
                left = e[2] - e[1]
                q = left if left < budget else budget
                if chunk < q:
                    q = chunk
                if q <= 0:
                    break                   # no room for the chunk: general path
            free = budget - q
            if waiting and free > 0:
                rid = waiting[0]
                if rid in pkeys:
                    self._lookup(rid)
                if rid in own:
                    self._own_hit(rid)
                if self._loads:
                    break                   # a request waits for its host KV: general path
                p = plen[rid]
                left2 = p - cached[rid]
                q2 = left2 if left2 < free else free
                if chunk < q2:
                    q2 = chunk
                m = n if e is None else n + 1   # sequences before the admission
                if (m >= max_batch or after + -(-p // bs) + (self._output_blocks(rid, p) if reserve else 0) > room
                        or (len(waiting) > 1 and free - q2 > 0 and m + 1 < max_batch)):
                    break                   # admit() would take none or maybe several: general path
            elif e is None:
                break                       # decode only: the decode burst or general path
            seqs = n + (e is not None) + (q2 > 0)
            tokens = n + q + q2
            if tokens > max_tokens or seqs > max_seqs:
                break
            spare -= take
            used = after
            if q2:                          # admits exactly the one request
                self.used, self.spare = used, spare
                self._chunks = []
                self.admit(free, chunk, False)
                e2 = self._chunks[0][0]
                used, spare = self.used, self.spare
            # StepCost.__call__, inlined but for the prefill chunks
            g = tok[tokens] + seq[seqs]
            x = (B + n * j) / n
            if x >= hi:
                hi, x0, dx, r0, dr = _segment(xs, top, dec[n], x)
            ty = (x - x0) / dx
            if ty < 0:
                ty = 0.0
            g += r0 + dr * ty
            if q:
                g += prefill(q, e[1] + q)
            if q2:
                g += prefill(q2, e2[1] + q2)
            if asyn:                        # as _begin: host work beyond the previous kernels
                h = o.step_s + o.per_seq_s * seqs + o.per_token_s * tokens - gp
                gp = g
                if h > 0:
                    g += h
            t_end = t + g
            busy += g
            if t_end >= horizon:
                self.used, self.spare, self.D, self._last_dec_end = used, spare, D, last
                self._gprev, self.busy = gp, busy
                chunks = [(e, q)] if q else []
                if q2:
                    chunks.append((e2, q2))
                self._dec, self._chunks, self._ptok = True, chunks, q + q2
                self._t_end = t_end
                env.schedule(t_end, self._step_end, t, t_end)
                return -1.0
            env.now = t_end
            # _end: decoders finish, then the chunks are done (and may end their prefills)
            D = j
            gap = t_end - last
            last = t_end
            if next_fin > j and not q2 and q < left:
                e[1] += q
                ext((t, t_end, n, q, used, gap))
                t = t_end
                continue
            self.used, self.spare, self.D, self._last_dec_end = used, spare, D, last
            self._gprev, self.busy = gp, busy
            if next_fin <= j:
                self._finish(j, t_end)
            ended = False
            if q:
                e[1] += q
                if q == left:
                    self._prefilled(e[0], e[2], t_end)
                    ended = True
            if q2:
                e2[1] += q2
                if q2 == left2:
                    self._prefilled(e2[0], e2[2], t_end)
                    ended = True
            if ended:
                self.prefilling = [x for x in self.prefilling if x[1] < x[2]]
            ext((t, t_end, n, q + q2, self.used, gap))
            t = t_end
            if queue and queue[0][0] <= t:  # same-time events (arrivals) go first
                env.schedule(t, self._resume, priority=LATE)
                return -1.0
            pf = self.prefilling
            if len(pf) > 1 or not (pf or waiting):
                return t                    # two prefills (general path) or decode only
            e = pf[0] if pf else None
            n, B, used, spare = self.n, self.B, self.used, self.spare
            hi = -inf                       # the batch changed: look its row up again
            next_fin = fin[0][0] if fin else inf
            horizon = queue[0][0] if queue else inf
        self.used, self.spare, self.D, self._last_dec_end, self._gprev, self.busy = used, spare, D, last, gp, busy
        return t

    def _begin(self) -> float | None:
        self._chunks = []
        self._extra = 0.0
        decodes = self.policy.plan(self)
        self._dec = decodes
        chunks = self._chunks
        if not decodes and not chunks:
            return None
        n = self.n if decodes else 0
        tokens = n
        pairs = []
        for e, q in chunks:
            pairs.append((q, e[1] + q))
            tokens += q
        self._ptok = tokens - n
        kv_sum = self.B + n * (self.D + 1) if n else 0
        if self.debug:
            self.check()
        c = self.cost
        g = c(tokens, n, kv_sum, pairs)
        if self.lora is not None:
            g += self.lora.step_s(decodes, chunks)
        if c.asyn:
            # Async scheduling: the host prepares this step while the previous one's kernels
            # run, so only the host time beyond them adds: g + max(0, cpu - g_prev).
            h = c.cpu(tokens, n + len(pairs)) - self._gprev
            self._gprev = g
            if h > 0:
                g += h
        return g + self._extra

    def _end(self, t0: float, t1: float) -> None:
        n = 0
        gap = 0.0
        if self._dec:
            n = self.n
            j = self.D = self.D + 1
            gap = t1 - self._last_dec_end
            self._last_dec_end = t1
            fin = self.fin
            if fin and fin[0][0] <= j:
                self._finish(j, t1)
        finished = False
        for e, q in self._chunks:
            e[1] += q
            if e[1] >= e[2]:
                self._prefilled(e[0], e[2], t1)
                finished = True
        if finished:                        # only a finished prefill leaves the list
            self.prefilling = [e for e in self.prefilling if e[1] < e[2]]
        self.steps.extend((t0, t1, n, self._ptok, self.used, gap))

    def _finish(self, j: int, t: float) -> None:
        st, fin = self.store, self.fin
        while fin and fin[0][0] <= j:
            _, rid, ver = heappop(fin)
            if ver != st.ver[rid]:
                continue
            base = st.base[rid]
            self._leave(rid, base)
            held = -(-(base + j) // self.bs)
            self.release(held - st.shared[rid])
            if self._resv:
                self._unreserve(rid, held)
            st.left[rid] = 0
            self.outstanding -= st.prompt[rid] + st.output[rid]
            self.done(rid, t)

    def _prefilled(self, rid: int, kv: int, t: float) -> None:
        """Prefill done: the forward emits a token; then decode here, elsewhere, or finish."""
        st = self.store
        st.emit_first(rid, t)
        st.left[rid] -= 1
        st.prefill_tokens += kv - st.cached[rid]
        st.cached[rid] = 0
        if st.left[rid] <= 0:
            if self.lora is not None:
                self.lora.left(rid, False)
            self.release(self.blocks_for(kv + self.look))
            if self._resv:
                self._unreserve(rid, self.blocks_for(kv + self.look))
            self.outstanding -= st.prompt[rid] + st.output[rid]
            self.done(rid, t)
        elif self.handoff is not None:
            self.outstanding -= st.prompt[rid] + st.output[rid]
            self.handoff(rid, t)
            self.release(self.blocks_for(kv + self.look))
        else:
            self._join(rid, kv, t)

    # ---- aggregate decode state -------------------------------------------------------
    def _join(self, rid: int, kv: int, t: float) -> None:
        """Decode from the next iteration, which processes token ``kv + 1``."""
        st = self.store
        if not self.n:
            self._last_dec_end = t
        base = kv - self.D
        st.base[rid] = base
        st.ver[rid] += 1
        st.fin_at[rid] = f = self.D + st.left[rid]
        heappush(self.fin, (f, rid, st.ver[rid]))
        self.running[rid] = None
        if self.lora is not None:
            self.lora.joined(rid)
        self.n += 1
        self.B += base
        self.res[base % self.bs] += 1

    def _leave(self, rid: int, base: int) -> None:
        del self.running[rid]
        if self.lora is not None:
            self.lora.left(rid, True)
        self.n -= 1
        self.B -= base
        self.res[base % self.bs] -= 1

    def _preempt_last(self) -> None:
        st = self.store
        rid = next(reversed(self.running))
        base = st.base[rid]
        self._leave(rid, base)
        st.ver[rid] += 1
        kv = base + self.D                      # KV held after the last iteration
        st.left[rid] = st.fin_at[rid] - self.D  # tokens still to emit
        self.requeue(rid, kv, self.blocks_for(kv))

    def requeue(self, rid: int, kv: int, blocks: int) -> None:
        """A decoder just preempted with ``kv`` tokens in ``blocks`` blocks gives them back and
        waits: swapped out (back in when there is room), or to recompute its prompt and generated
        tokens, from what is left of its cached blocks then (``_own_hit``)."""
        st = self.store
        held = blocks - st.shared[rid]
        if self.swap_bw <= 0:
            # (blocks allocated so far, free blocks queued ahead of its own, its blocks, its KV)
            self._own[rid] = (self.used + self.freed, self.total_blocks - self.used, held, kv)
        self.release(held)
        if self._resv:
            self._unreserve(rid, blocks)
        st.preemptions[rid] += 1
        self.preemptions += 1
        if self.swap_bw > 0:                    # swap out now, back in when room
            self._extra += kv * self.mem.kv_per_token / self.swap_bw
            self.ready.appendleft((rid, kv, True))
        else:                                   # recompute prompt + generated tokens
            st.plen[rid] = kv + 1
            st.shared[rid] = 0                  # recomputed alone: it will own all its blocks
            self.waiting.appendleft(rid)

    # ---- helpers for policies -----------------------------------------------------------
    def decode_alloc(self) -> int:
        """Blocks for every decoder's next token, preempting the newest decoders if short."""
        if not self.n:
            return 0
        j = self.D + 1
        need = self.res[(1 - j) % self.bs]
        take = min(need, self.spare)
        while self.used + need - take > self.total_blocks and self.n:
            self._preempt_last()
            need = self.res[(1 - j) % self.bs]
            take = min(need, self.spare)
        self.spare -= take
        self.used += need - take
        return self.n

    def admit_ready(self) -> None:
        """Requests whose KV is already here or arriving (swap-in, disaggregated decode)."""
        st = self.store
        while self.ready and self.n + len(self.prefilling) < self.max_batch:
            rid, kv, swapped = self.ready[0]
            need = self.blocks_for(kv + self.look) - st.shared[rid]   # a branch shares its sibling's prompt blocks
            extra = self._output_blocks(rid, kv)
            if self.used + need + extra > self.total_blocks - self.watermark:
                break
            self.ready.popleft()
            self.used += need
            self._reserve(rid, kv, extra)
            if swapped:
                self._extra += kv * self.mem.kv_per_token / self.swap_bw
            self._join(rid, kv, self.env.now)

    def continue_prefills(self, budget: int, chunk: int) -> int:
        used = 0
        for e in self.prefilling:
            q = min(e[2] - e[1], budget - used, chunk)
            if q <= 0:
                break
            self._chunks.append((e, q))
            used += q
        return used

    def waiting_tokens(self, budget: int) -> int:
        """Prompt tokens ``admit(budget, whole=True)`` would schedule, ignoring KV room."""
        st, used, slots = self.store, 0, self.max_batch - self.n - len(self.prefilling)
        loads, now = self._loads, self.env.now
        for rid in self.waiting:
            if rid in self._pkeys:
                self._lookup(rid)
            if rid in self._own:
                self._own_hit(rid)
            if loads and loads.get(rid, now) > now:
                continue                    # its KV is still coming back from the host
            q = st.plen[rid] - st.cached[rid]
            if slots <= 0 or (used + q > budget and used):
                break
            used += q
            slots -= 1
        return used

    def admit(self, budget: float, chunk: float, whole: bool) -> int:
        """Start new prefills from the waiting queue (FCFS) within ``budget`` tokens."""
        if self.lora is not None:               # FCFS, skipping requests whose adapter cannot run yet
            return self.lora.admit(budget, chunk, whole)
        st, waiting, prefilling, chunks = self.store, self.waiting, self.prefilling, self._chunks
        room = self.total_blocks - self.watermark
        used = 0
        loads, skipped = self._loads, []
        while waiting and budget - used > 0:
            if self.n + len(prefilling) >= self.max_batch:
                break
            rid = waiting[0]
            if rid in self._pkeys:
                self._lookup(rid)
            if rid in self._own:
                self._own_hit(rid)
            if loads and self._still_loading(rid):
                skipped.append(waiting.popleft())   # keeps its place once its KV is back
                continue
            p = st.plen[rid]
            c = st.cached[rid]                  # prefix KV already here (a cache hit): not recomputed
            if whole and p - c > budget - used and (used or chunks):
                break                           # whole prompts only; an oversize one goes alone
            need = -(-(p + self.look) // self.bs)
            extra = self._output_blocks(rid, p) if self.reserve else 0
            if self.used + need + extra > room:
                break
            waiting.popleft()
            q = p - c if whole else min(p - c, budget - used, chunk)
            self._start_prefill(rid, c, p, need, extra, q)
            used += q
        if skipped:
            waiting.extendleft(reversed(skipped))
        return used

    def _still_loading(self, rid: int) -> bool:
        """Whether ``rid``'s host-held KV is still being copied back (it waits aside); once it
        is back, the request is admitted like any other."""
        t = self._loads.get(rid)
        if t is None:
            return False
        if t > self.env.now:
            return True
        del self._loads[rid]
        return False

    def _start_prefill(self, rid: int, cached: int, prompt: int, need: int, extra: int, q: int) -> None:
        """Admit ``rid`` (just taken off the waiting queue): its prompt blocks enter the prefix
        cache and the KV count, and its first chunk of ``q`` tokens joins this step."""
        if rid in self._pins:
            self.prefix.insert(self._pins.pop(rid))
        if self._own.pop(rid, None) is not None:
            self.resumed += 1
            self.resume_tokens += prompt
            self.resume_cached += cached
        self.used += need
        if self.reserve:
            self._reserve(rid, prompt, extra)
        self.store.start(rid, self.env.now)
        e = [rid, cached, prompt]
        self.prefilling.append(e)
        self._chunks.append((e, q))

    def _lookup(self, rid: int) -> None:
        """The prefix cache's hit for a request about to be considered for admission; blocks
        only the host tier holds start their copy back to the GPU now."""
        keys = self._pkeys.pop(rid)
        st, pc = self.store, self.prefix
        hit = pc.lookup(keys, st.plen[rid])
        if hit > st.cached[rid]:
            st.cached[rid] = hit
            if pc.last_host and self._load_s:
                dt = pc.last_host * self._load_s
                self.load_seconds += dt
                self._loads[rid] = t = self.env.now + dt
                self.env.schedule(t, self._kick, t, priority=LATE)
        self._pins[rid] = keys

    def _output_blocks(self, rid: int, kv: int) -> int:
        """Blocks a full reservation holds beyond ``kv`` tokens: room for every output
        token still to come (0 with on-demand KV)."""
        if not self.reserve:
            return 0
        # with speculation the last step may overshoot by up to ``look`` tokens
        return self.blocks_for(kv + self.store.left[rid] + 2 * self.look) - self.blocks_for(kv + self.look)

    def _reserve(self, rid: int, kv: int, extra: int) -> None:
        if self.reserve:
            self.used += extra
            self.spare += extra
            self._resv[rid] = self.blocks_for(kv + self.look) + extra

    def _unreserve(self, rid: int, held: int) -> None:
        """A holder leaves with ``held`` blocks in use: its unused reservation is freed."""
        total = self._resv.pop(rid, None)
        if total is not None and total > held:
            self.release(total - held)
            self.spare -= total - held

    def release(self, blocks: int) -> None:
        """``blocks`` go back to the free pool (``freed`` counts them: with ``used`` it gives
        every block ever allocated, which orders the evictions of ``_own_hit``)."""
        self.used -= blocks
        self.freed += blocks

    def _own_hit(self, rid: int) -> None:
        """A preempted request's prefix still cached when it is next considered for admission
        (vLLM V1 with prefix caching, SGLang's radix cache): its freed blocks joined the end of
        the free queue tail first, and allocations take from the front, so of its ``held``
        blocks those still there are its first ones, minus what was allocated since beyond
        the free blocks queued ahead of them. Only full blocks are cached (the partial last
        one goes first). Those tokens are not recomputed. Without the cache, nothing is kept."""
        if not self.keeps_own:
            return
        alloc0, ahead, held, kv = self._own[rid]
        gone = self.used + self.freed - alloc0 - ahead
        kept = held - min(max(gone, 0), held)
        self.store.cached[rid] = min(kept, kv // self.bs) * self.bs

    # ---- invariants (debug) -----------------------------------------------------------
    def check(self) -> None:
        """Assert the aggregate state against a recount from the requests (slow)."""
        st = self.store
        assert 0 <= self.used <= self.total_blocks, (self.used, self.total_blocks)
        assert self.n == len(self.running) == sum(self.res)
        assert self.B == sum(st.base[r] for r in self.running)
        held = sum(self.blocks_for(st.base[r] + self.D) - st.shared[r] for r in self.running)
        held += sum(self.blocks_for(e[2]) for e in self.prefilling)
        assert held + self.spare <= self.used, (held, self.spare, self.used)
        # reservations are exact: spare = what holders reserved minus what they use, with
        # the decoders' blocks for this step's iteration already drawn (check runs after plan)
        j = self.D + (1 if self._dec and self.n else 0)
        in_use = sum(self.blocks_for(st.base[r] + j) for r in self.running if r in self._resv)
        in_use += sum(self.blocks_for(e[2]) for e in self.prefilling if e[0] in self._resv)
        assert self.spare == sum(self._resv.values()) - in_use, (self.spare, self._resv, in_use)
        assert self.n + len(self.prefilling) <= self.max_batch or not self.prefilling
        if self.lora is not None:
            self.lora.check()
