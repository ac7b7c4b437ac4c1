"""Batching policies: one class each, one method ``plan(replica) -> decodes this step?``.

A plan adds prefill chunks through the replica's helpers and says whether the decoders
advance; the replica applies it. Limits: ``max_batch_size`` sequences, ``max_tokens_per_step``
new tokens per step, ``chunk_size`` tokens of one prompt per step (chunked policies).
"""
from __future__ import annotations

from math import inf

from .config import SchedulerConfig


class Policy:
    """Base: holds the limits. ``whole_prompts`` policies never split a prompt, so a
    prompt longer than the token budget can only run alone (or is rejected up front)."""

    whole_prompts = False
    decodes = True          # False for pools that never decode (disaggregated prefill)
    # True when ``plan`` is Chunked's: decoders first, then prefills in progress in chunks of at
    # most ``chunk`` within ``max_tokens`` - decoders, then admissions (the replica's chunk loop
    # inlines that rule for the steps with one prefill in progress and at most one admission)
    steady_chunks = False

    def __init__(self, cfg: SchedulerConfig) -> None:
        self.max_tokens = cfg.max_tokens_per_step
        self.chunk = cfg.chunk_size
        # a pool that never decodes hands its requests on: nothing to reserve for output
        self.reserve_output = cfg.kv_reservation == "full" and self.decodes

    def plan(self, rep) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


class Static(Policy):
    """Request-level batching: up to ``max_batch_size`` waiting requests are prefilled
    together (no token budget, as a padded batch) and decode until the last one finishes;
    no request joins a running batch."""

    whole_prompts = False   # no token budget, so no prompt is too long for a step

    def plan(self, rep) -> bool:
        if rep.n == 0 and not rep.prefilling:
            if rep.ready:
                rep.admit_ready()
                return rep.decode_alloc() > 0
            rep.admit(inf, inf, whole=True)
            return False
        return rep.decode_alloc() > 0


class Continuous(Policy):
    """vLLM v0: prefill-prioritized; a step runs either new prompts (whole) or decodes."""

    whole_prompts = True

    def plan(self, rep) -> bool:
        if rep.ready:
            rep.admit_ready()
        if rep.waiting and rep.admit(self.max_tokens, inf, whole=True):
            return False
        return rep.decode_alloc() > 0


class Chunked(Policy):
    """vLLM v1 / Sarathi: decodes first, then prefill chunks fill the token budget."""

    steady_chunks = True

    def plan(self, rep) -> bool:
        if rep.ready:
            rep.admit_ready()
        n = rep.decode_alloc()
        budget = self.max_tokens - n
        if rep.prefilling:
            budget -= rep.continue_prefills(budget, self.chunk)
        if rep.waiting and budget > 0:
            rep.admit(budget, self.chunk, whole=False)
        return n > 0


class PrefillFirst(Policy):
    """SGLang without ``enable_mixed_chunk``: a step is either prefill or decode, never both;
    waiting prompts (chunked at ``chunk_size``, within the token budget) go first, and the
    running decodes advance only in steps with no prefill work."""

    def plan(self, rep) -> bool:
        if rep.ready:
            rep.admit_ready()
        budget = self.max_tokens
        if rep.prefilling:
            budget -= rep.continue_prefills(budget, self.chunk)
        if rep.waiting and budget > 0:
            budget -= rep.admit(budget, self.chunk, whole=False)
        if budget < self.max_tokens:
            return False
        return rep.decode_alloc() > 0


class Mixed(Policy):
    """Orca / TensorRT-LLM in-flight batching: decodes and whole new prompts share a step.
    With batch waiting on, prompts that would join running decodes wait (decode-only
    steps) until the step they would form reaches ``batch_wait_tokens_ratio`` of the token
    budget or ``batch_wait_iters`` steps have passed, as TensorRT-LLM's executor does."""

    whole_prompts = True

    def __init__(self, cfg: SchedulerConfig) -> None:
        super().__init__(cfg)
        self.wait_iters = cfg.batch_wait_iters
        self.wait_tokens = cfg.batch_wait_tokens_ratio * cfg.max_tokens_per_step
        self.waited = 0

    def plan(self, rep) -> bool:
        if rep.ready:
            rep.admit_ready()
        n = rep.decode_alloc()
        if rep.waiting:
            budget = max(self.max_tokens - n, 1)
            if n and self.wait_iters and self._hold(rep, n, budget):  # 0 steps: never waits
                return True
            rep.admit(budget, inf, whole=True)
        return n > 0

    def _hold(self, rep, n: int, budget: int) -> bool:
        """True while the prompts the step would take should keep waiting."""
        if self.waited >= self.wait_iters or n + rep.waiting_tokens(budget) >= self.wait_tokens:
            self.waited = 0
            return False
        self.waited += 1
        return True


class PrefillOnly(Policy):
    """The prefill pool of a disaggregated deployment: chunked prompts, no decoders."""

    decodes = False

    def plan(self, rep) -> bool:
        budget = self.max_tokens
        if rep.prefilling:
            budget -= rep.continue_prefills(budget, self.chunk)
        if rep.waiting and budget > 0:
            rep.admit(budget, self.chunk, whole=False)
        return False


class WholePrefillOnly(PrefillOnly):
    """Prefill pool variant that runs prompts whole (no chunking)."""

    whole_prompts = True

    def plan(self, rep) -> bool:
        if rep.waiting:
            rep.admit(self.max_tokens, inf, whole=True)
        return False


SCHEDULERS: dict[str, type[Policy]] = {
    "static": Static, "continuous": Continuous, "chunked": Chunked, "mixed": Mixed,
    "prefill_first": PrefillFirst,
    "prefill": PrefillOnly, "prefill_whole": WholePrefillOnly,
    # the decode pool of "disaggregated" uses Chunked (it only ever sees ready requests)
    "decode": Chunked,
}
