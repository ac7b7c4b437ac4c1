"""Shared-prefix structure of a workload: system prompts and multi-turn sessions.

Each request's prompt becomes a list of segments ``(content id, tokens)``: one of
``system_prompts`` shared system prompts, then (multi-turn) the session's earlier user
messages and answers, then its own new message. A turn's prompt therefore *contains* the
previous turn's prompt and answer, which is what a prefix cache can reuse. Sessions are
interleaved: ``concurrent_sessions`` are open at once, and request ``i`` is the next turn
of session slot ``i mod concurrent_sessions`` — so consecutive turns of one conversation
are that many arrivals apart, as with many users chatting at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kv_tiers import Segment


@dataclass(frozen=True)
class PrefixSpec:
    system_prompts: int = 1          # distinct shared system prompts (0: none)
    system_tokens: int = 0
    zipf: float = 0.0                 # popularity skew of system prompts (0: uniform)
    turns: int = 1                    # turns per conversation (1: single-shot)
    concurrent_sessions: int = 16
    max_context: int = 1 << 30        # a conversation restarts when the next turn would not fit


def build_segments(spec: PrefixSpec, user: np.ndarray, output: np.ndarray,
                   rng: np.random.Generator) -> tuple[list[list[Segment]], np.ndarray, np.ndarray]:
    """Segments per request, the resulting prompt lengths, and each request's turn index.

    ``user`` are the new-message lengths (the workload's prompt lengths) and ``output``
    the answer lengths; prompt = system + history + new message."""
    n = len(user)
    if spec.system_prompts > 0 and spec.system_tokens > 0:
        w = 1.0 / np.arange(1, spec.system_prompts + 1) ** spec.zipf
        sys_of = rng.choice(spec.system_prompts, size=n, p=w / w.sum())
    else:
        sys_of = None
    slots = max(1, spec.concurrent_sessions)
    history: dict[int, list[Segment]] = {}
    turn_in: dict[int, int] = {}
    session_of_slot = list(range(slots))
    next_session = slots
    segs: list[list[Segment]] = []
    prompt = np.empty(n, dtype=np.int64)
    turn = np.zeros(n, dtype=np.int64)
    for i in range(n):
        slot = i % slots
        sid = session_of_slot[slot]
        new = ("user", sid, turn_in.get(sid, 0))
        hist = history.get(sid)
        if hist is None:
            hist = [(("sys", int(sys_of[i])), spec.system_tokens)] if sys_of is not None else []
        length = sum(t for _, t in hist) + int(user[i])
        if turn_in.get(sid, 0) >= spec.turns or (hist and length + int(output[i]) > spec.max_context):
            sid = session_of_slot[slot] = next_session       # start a new conversation
            next_session += 1
            new = ("user", sid, 0)
            hist = [(("sys", int(sys_of[i])), spec.system_tokens)] if sys_of is not None else []
            length = sum(t for _, t in hist) + int(user[i])
        k = turn_in.get(sid, 0)
        seg = hist + [(new, int(user[i]))]
        segs.append(seg)
        prompt[i] = length
        turn[i] = k
        history[sid] = seg + [(("answer", sid, k), int(output[i]))]
        turn_in[sid] = k + 1
    return segs, prompt, turn


def analytic_token_hit_rate(segs: list[list[Segment]], output: np.ndarray, block_tokens: int) -> float:
    """Hit rate an unbounded prefix cache must reach when requests run one after another:
    for each prompt, the full blocks of its longest prefix that an earlier request's
    prompt + answer already contained (computed from the segment lists directly, not
    through the cache), over all prompt tokens."""
    seen_prefixes: set[tuple] = set()
    hit = total = 0
    for seg, out in zip(segs, output):
        tokens = sum(t for _, t in seg)
        total += tokens
        # longest earlier stream that is a segment-prefix of this one
        best = 0
        acc = 0
        for j in range(1, len(seg) + 1):
            acc += seg[j - 1][1]
            if tuple(seg[:j]) in seen_prefixes:
                best = acc
        # an earlier stream may also end inside a segment: a system prompt shared only in part
        # never happens here (segments are atomic), so full segment prefixes are exact.
        hit += (best // block_tokens) * block_tokens
        full = seg + [(("answer",) + tuple(seg[-1][0][1:]), int(out))] if seg else seg
        for j in range(1, len(seg) + 1):
            seen_prefixes.add(tuple(seg[:j]))
        # the answer extends the stream: the next turn's prefix includes it
        acc_full = tuple(full)
        for j in range(len(seg) + 1, len(full) + 1):
            seen_prefixes.add(acc_full[:j])
    return hit / total if total else 0.0
