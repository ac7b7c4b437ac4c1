"""The engine's automatic prefix cache: vLLM's prefix caching, SGLang's radix cache,
TensorRT-LLM's KV block reuse.

A prompt is a list of segments ``(content id, tokens)``; its KV is a chain of fixed-size
blocks whose key hashes the content inside the block *and* the key before it, so two prompts
share a block only when they share everything up to it. A request's hit is the longest chain
of its block keys the cache holds; the engine computes only the rest. The KV-tier hierarchy
of the pipelines (``simulator.pipelines.kv_tiers``) keys its blocks the same way.
"""
from __future__ import annotations

from collections import OrderedDict

Segment = tuple[object, int]   # (content id, tokens)


def block_keys(segments: list[Segment], block_tokens: int) -> list[int]:
    """Hash-chain keys of the *full* blocks of a token stream made of ``segments``.

    Only full blocks are cacheable (as in vLLM / LMCache); block ``i``'s key depends on
    the content pieces inside it and on block ``i-1``'s key."""
    keys: list[int] = []
    prev = 0
    pieces: list[tuple] = []
    fill = 0
    for sid, length in segments:
        off = 0
        while off < length:
            take = min(length - off, block_tokens - fill)
            pieces.append((sid, off, off + take))
            off += take
            fill += take
            if fill == block_tokens:
                prev = hash((prev, tuple(pieces)))
                keys.append(prev)
                pieces, fill = [], 0
    return keys


class PrefixCache:
    """LRU set of block keys with a capacity in blocks."""

    __slots__ = ("capacity", "blocks")

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = max(int(capacity_blocks), 0)
        self.blocks: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, key: int) -> bool:
        return key in self.blocks

    def touch(self, key: int) -> None:
        self.blocks.move_to_end(key)

    def insert(self, keys: list[int]) -> None:
        """Add (or refresh) blocks, evicting the least recently used beyond capacity."""
        if not self.capacity:
            return
        b = self.blocks
        for k in keys:
            if k in b:
                b.move_to_end(k)
            else:
                b[k] = None
        while len(b) > self.capacity:
            b.popitem(last=False)

    def __len__(self) -> int:
        return len(self.blocks)


def parse_segments(text: str) -> list[Segment]:
    """Segments from a run table's ``prefix`` value (space-separated ``ID:TOKENS``; '' = none)."""
    out: list[Segment] = []
    for part in text.split():
        sid, _, tok = part.rpartition(":")
        out.append((sid, int(tok)))
    return out


class EnginePrefixCache:
    """One replica's prefix cache: block keys in LRU order, as many as the replica has KV
    blocks (a finished request's blocks stay cached until new allocations evict them).

    A hit never covers the whole prompt: the engine recomputes at least its last token to
    produce the first output (vLLM V1), so at most ``prompt - 1`` tokens, whole blocks only.

    ``host_blocks`` > 0 adds the engine's KV offload to host memory (vLLM ``kv_offloading_size``,
    SGLang's hierarchical cache, TensorRT-LLM's ``host_cache_size``): every block the GPU caches
    is also written to a host LRU of that many blocks, so a block the GPU evicted can still hit,
    at the price of copying it back over PCIe (``last_host``: the host-held tokens of the last
    lookup)."""

    __slots__ = ("cache", "host", "block", "hit_tokens", "prompt_tokens", "host_hit_tokens", "last_host")

    def __init__(self, capacity_blocks: int, block_tokens: int, host_blocks: int = 0) -> None:
        self.cache = PrefixCache(capacity_blocks)
        self.host = PrefixCache(host_blocks) if host_blocks > 0 else None
        self.block = int(block_tokens)
        self.hit_tokens = 0
        self.prompt_tokens = 0
        self.host_hit_tokens = 0
        self.last_host = 0

    def keys(self, segments: str) -> list[int]:
        return block_keys(parse_segments(segments), self.block)

    def lookup(self, keys: list[int], prompt: int) -> int:
        """Tokens of ``prompt`` whose KV the cache holds (touching the blocks it uses); of
        them, ``last_host`` are held only by the host tier."""
        c, h = self.cache, self.host
        n = from_host = 0
        for k in keys[:max(prompt - 1, 0) // self.block]:
            if k in c:
                c.touch(k)
            elif h is not None and k in h:
                from_host += 1
            else:
                break
            if h is not None and k in h:
                h.touch(k)
            n += 1
        self.hit_tokens += n * self.block
        self.prompt_tokens += prompt
        self.last_host = from_host * self.block
        self.host_hit_tokens += self.last_host
        return n * self.block

    def insert(self, keys: list[int]) -> None:
        """The request's prompt blocks are allocated (and cached as they are computed); with
        a host tier they are offloaded there too (write-through, as vLLM's offloading
        connector stores every computed block)."""
        self.cache.insert(keys)
        if self.host is not None:
            self.host.insert(keys)
