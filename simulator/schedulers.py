"""Batching policies: one class each, one method ``plan(replica) -> decodes this step?``.

A plan adds prefill chunks through the replica's helpers and says whether the decoders
advance; the replica applies it. Limits: ``max_batch_size`` sequences, ``max_tokens_per_step``
new tokens per step, ``chunk_size`` tokens of one prompt per step (chunked policies).
"""
from __future__ import annotations

from math import inf

from .scenario import SchedulerConfig


class Policy:
    """Base: holds the limits. ``whole_prompts`` policies never split a prompt, so a
    prompt longer than the token budget can only run alone (or is rejected up front)."""

    whole_prompts = False
    decodes = True          # False for pools that never decode (disaggregated prefill)

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


class Mixed(Policy):
    """Orca / TensorRT-LLM in-flight batching: decodes and whole new prompts share a step."""

    whole_prompts = True

    def plan(self, rep) -> bool:
        if rep.ready:
            rep.admit_ready()
        n = rep.decode_alloc()
        if rep.waiting:
            rep.admit(max(self.max_tokens - n, 1), inf, whole=True)
        return n > 0


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
    "prefill": PrefillOnly, "prefill_whole": WholePrefillOnly,
    # the decode pool of "disaggregated" uses Chunked (it only ever sees ready requests)
    "decode": Chunked,
}
