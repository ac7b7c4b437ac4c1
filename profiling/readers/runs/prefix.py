"""Each request's prompt composition as prefix segments (the canonical ``prefix`` column).

A value is space-separated ``ID:TOKENS`` pairs in prompt order, e.g. ``"9f2a61c0b3d4e5f6:100
11aa22bb33cc44dd:474"``: IDs are hex strings equal across requests exactly when the prompts
are equal up to and including that segment (chained), and a request's TOKENS sum to its
``prompt_tokens``. '' means unknown. Built from prompt texts (``prompt_segments``, no
tokenizer needed) or, when a run kept no text, from its generator's declared shape
(``spec_segments``, inference-perf's ``shared_prefix`` data).
"""
from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

import numpy as np

# Characters per hashed chunk: small enough that a shared prefix loses under one chunk at its
# end, large enough that 20,000 prompts hash in well under a second.
CHUNK_CHARS = 64
_DIGEST = 8


def _chunk_digests(text: str) -> list[bytes]:
    """Chained digests of ``text``'s CHUNK_CHARS-character chunks (the last may be partial)."""
    out, prev = [], b""
    for i in range(0, len(text), CHUNK_CHARS):
        prev = blake2b(prev + text[i:i + CHUNK_CHARS].encode("utf-8", "surrogatepass"),
                       digest_size=_DIGEST).digest()
        out.append(prev)
    return out


def _token_count(v: Any) -> int | None:
    """A positive whole prompt length, or None (missing, NaN, zero or not a number)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x) or round(x) < 1:
        return None
    return int(round(x))


def prompt_segments(texts: Sequence[str | None], prompt_tokens: Sequence[float]) -> list[str]:
    """The ``prefix`` value of each request from its prompt text and token count.

    Texts are cut into CHUNK_CHARS-character chunks with chained IDs; chunk j spans tokens
    [round(j*K/c), round((j+1)*K/c)) at the run's mean c characters per token (so a shared
    prefix maps to the same token span in every request), clipped to the request's length,
    the last chunk taking the rest. Consecutive chunks held by the same number of distinct
    prompts merge into one segment (chained IDs: the same count is the same set of prompts).
    Requests lacking a text or a token count get ''.
    """
    if len(texts) != len(prompt_tokens):
        raise ValueError(f"{len(texts)} texts but {len(prompt_tokens)} token counts")
    tokens = [_token_count(t) for t in prompt_tokens]
    usable = [i for i, (s, t) in enumerate(zip(texts, tokens)) if isinstance(s, str) and s and t]
    out = [""] * len(texts)
    if not usable:
        return out
    chars = sum(len(texts[i]) for i in usable)
    cpt = chars / sum(tokens[i] for i in usable)  # type: ignore[misc]
    # Distinct texts, and distinct (text, length) units: equal units get equal values.
    text_id: dict[str, int] = {}
    unit_id: dict[tuple[int, int], int] = {}
    unit_of = np.empty(len(usable), dtype=np.int64)
    for k, i in enumerate(usable):
        t = text_id.setdefault(texts[i], len(text_id))  # type: ignore[arg-type]
        unit_of[k] = unit_id.setdefault((t, tokens[i]), len(unit_id))  # type: ignore[arg-type]
    digests = [_chunk_digests(s) for s in text_id]
    held = Counter(d for ds in digests for d in ds)  # distinct texts holding each chunk ID

    # Every unit's chunks laid end to end, so the spans and merges are a few array operations.
    units = list(unit_id)
    nchunks = np.array([len(digests[t]) for t, _ in units], dtype=np.int64)
    length = np.array([n for _, n in units], dtype=np.int64)
    flat = [d for t, _ in units for d in digests[t]]
    unit = np.repeat(np.arange(len(units)), nchunks)
    first = np.concatenate([[0], np.cumsum(nchunks)[:-1]])
    j = np.arange(len(flat)) - first[unit]
    step = CHUNK_CHARS / cpt
    start = np.minimum(np.round(j * step), length[unit])
    last = j == nchunks[unit] - 1
    end = np.where(last, length[unit], np.minimum(np.round((j + 1) * step), length[unit]))
    keep = np.flatnonzero(end > start)
    count = np.fromiter((held[flat[k]] for k in keep), dtype=np.int64, count=len(keep))
    ku, kt = unit[keep], (end - start)[keep].astype(np.int64)
    new = np.ones(len(keep), dtype=bool)
    new[1:] = (ku[1:] != ku[:-1]) | (count[1:] != count[:-1])
    begins = np.flatnonzero(new)
    seg_tokens = np.add.reduceat(kt, begins)
    seg_last = np.append(begins[1:], len(keep)) - 1
    values: list[list[str]] = [[] for _ in units]
    for u, k, n in zip(ku[begins].tolist(), keep[seg_last].tolist(), seg_tokens.tolist()):
        values[u].append(f"{flat[k].hex()}:{n}")
    joined = [" ".join(v) for v in values]
    for k, i in enumerate(usable):
        out[i] = joined[unit_of[k]]
    return out


def _id(*parts: Any) -> str:
    return blake2b(json.dumps(parts).encode(), digest_size=_DIGEST).hexdigest()


def spec_segments(n: int, prompt_tokens: Sequence[float], num_groups: int, prompts_per_group: int,
                  system_tokens: int, *, multi_turn: bool = False) -> list[str]:
    """The ``prefix`` values of a run from inference-perf's ``shared_prefix`` generator shape.

    Request i (in send order) uses prompt slot ``i % (G*P)``, of group ``slot % G``: the
    group's system prompt (``system_tokens``, leaving at least one token) then the slot's own
    question (its ID also keyed on its length, should the recorded lengths of a slot differ).
    With ``multi_turn`` a slot's next request extends its previous prompt (the generator keeps
    each user's conversation), so it repeats that request's segments and adds one for the new
    turn when it is longer. '' where the length is unknown.
    """
    if len(prompt_tokens) != n:
        raise ValueError(f"n = {n} but {len(prompt_tokens)} token counts")
    if num_groups < 1 or prompts_per_group < 1:
        raise ValueError("num_groups and prompts_per_group must be positive")
    slots = num_groups * prompts_per_group
    sys_ids = [_id("sys", g) for g in range(num_groups)]
    history: dict[int, tuple[list[str], int]] = {}  # slot -> (its last segments, their tokens)
    out = []
    for i in range(n):
        total = _token_count(prompt_tokens[i])
        if total is None:
            out.append("")
            continue
        slot = i % slots
        prev = history.get(slot) if multi_turn else None
        if prev is not None and total > prev[1]:
            # The new turn is this request's own: no other request's prompt holds it whole.
            segs = [*prev[0], f"{_id('turn', slot, i)}:{total - prev[1]}"]
        else:
            system = max(0, min(int(system_tokens), total - 1))
            segs = [f"{sys_ids[slot % num_groups]}:{system}"] if system else []
            # A slot's prompt has one length: another length means other content, so another ID.
            segs.append(f"{_id('slot', slot, total - system)}:{total - system}")
        history[slot] = (segs, total)
        out.append(" ".join(segs))
    return out


def payload_text(request: Any) -> str | None:
    """The prompt text of one inference-perf ``request`` entry (the OpenAI payload, as a JSON
    string or a dict): a completion's ``prompt``, or a chat's messages as ``role: content``
    lines; token-ID prompts become their IDs joined by spaces. None when there is none."""
    if isinstance(request, str):
        try:
            request = json.loads(request)
        except (json.JSONDecodeError, RecursionError):
            return None
    if not isinstance(request, dict):
        return None
    if "prompt" in request:
        return _prompt_text(request["prompt"])
    messages = request.get("messages")
    if isinstance(messages, list):
        lines = []
        for m in messages:
            if not isinstance(m, dict):
                continue
            content = _content_text(m.get("content"))
            if content is not None:
                lines.append(f"{m.get('role', '')}: {content}")
        return "\n".join(lines) if lines else None
    return None


def _prompt_text(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
            return " ".join(map(str, prompt))
        parts = [_prompt_text(x) for x in prompt]
        if all(p is not None for p in parts):
            return "\n".join(parts)  # type: ignore[arg-type]
    return None


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content
                 if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)]
        return "\n".join(texts) if texts else None
    return None
