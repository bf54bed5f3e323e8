"""A replica's block-hash prefix cache, as vLLM's automatic prefix caching keeps one.

Semantics (vLLM v1, ``docs/design/prefix_caching``; Kwon et al.'s RFC vllm#2614):

* Only *full* blocks are cached, each keyed by the hash chain of its prefix: here a block of
  the trace's ``hash_block_tokens`` tokens (one *unit*, ``units x block_size`` KV blocks of the
  replica) keyed by ``hash((parent key, block id))`` -- :func:`chain_keys`.
* A new request looks up the longest run of its leading units present in the cache, over at
  most ``(prompt_tokens - 1) // unit`` units (the last prompt token is always computed, so that
  the model produces logits). Those tokens skip prefill: the request starts with them as KV
  (its prefill chunks then attend to them as context) and records them as ``cached_tokens``.
* A unit becomes cached when a request's prefill has computed it; a unit computed again by a
  second request before the first finished is not deduplicated (vLLM keeps block tables
  append-only): that request keeps its own copy.
* A cached unit held by running requests has a reference count; when the count drops to zero
  the unit joins the tail of an LRU queue of evictable units -- a finished request's units in
  reverse order, so its deepest (least shared) units go first. Evictable units count as free
  KV blocks; an allocation that finds too few truly free blocks evicts from the head.

KV accounting stays exact: a request's ``blocks`` are all the KV blocks its table maps, of which
``shared_blocks`` belong to cached units it references; a referenced unit's blocks are counted
once however many requests share them (``KVCache.used_blocks`` = exclusive blocks of running
requests + blocks of referenced units), and :meth:`PrefixCache.check` verifies it.

Work: a lookup, an admission or a release costs O(units of that request); nothing is done per
token or per iteration, and a replica whose requests carry no hashes never builds a cache.
"""

from __future__ import annotations

from collections import OrderedDict


def chain_keys(ids) -> tuple[int, ...]:
    """vLLM-style chained keys of a prompt's block ids: key_i = hash((key_{i-1}, id_i))."""
    out, parent = [], 0
    for i in ids:
        parent = hash((parent, int(i)))
        out.append(parent)
    return tuple(out)


class PrefixCache:
    """The cached units of one replica's KV cache (see module docstring)."""

    def __init__(self, kv, unit_tokens: int):
        if unit_tokens % kv.block_size:
            raise ValueError(f"hash blocks of {unit_tokens} tokens are not a whole number of "
                             f"KV blocks of {kv.block_size} tokens")
        self.kv, self.unit = kv, unit_tokens
        self.bpu = unit_tokens // kv.block_size          # KV blocks per unit
        self.refs: dict[int, int] = {}                   # cached unit -> references
        self.lru: OrderedDict[int, None] = OrderedDict()  # unreferenced units, oldest first
        self.evictions = 0

    @property
    def evictable_blocks(self) -> int:
        return len(self.lru) * self.bpu

    # -- lookups ---------------------------------------------------------------------------
    def usable_units(self, req) -> int:
        """Units of ``req`` that may hit: full, and short of the prompt's last token."""
        return min(len(req.prefix_keys), (req.prompt_tokens - 1) // self.unit)

    def match(self, req) -> int:
        """Leading units of ``req`` present in the cache (held or evictable)."""
        keys, refs = req.prefix_keys, self.refs
        n, limit = 0, self.usable_units(req)
        while n < limit and keys[n] in refs:
            n += 1
        return n

    def peek(self, req) -> tuple[int, int]:
        """(tokens a hit would skip, free KV blocks it would take back from the LRU queue)."""
        n = self.match(req)
        touched = sum(1 for key in req.prefix_keys[:n] if not self.refs[key])
        return n * self.unit, touched * self.bpu

    # -- state changes ---------------------------------------------------------------------
    def acquire(self, req, units: int) -> None:
        """Give ``req`` (with no KV yet) the first ``units`` cached units as its KV."""
        for key in req.prefix_keys[:units]:
            if not self.refs[key]:
                del self.lru[key]
                self.kv.free_blocks -= self.bpu    # evictable -> in use (never below zero)
            self.refs[key] += 1
        req.units_held = list(req.prefix_keys[:units])
        req.blocks = req.shared_blocks = units * self.bpu
        req.kv_tokens = req.cached_upto = units * self.unit

    def computed(self, req) -> None:
        """Cache the units ``req``'s prefill has completed since the last call."""
        if req.prefix_block_tokens != self.unit:      # (hashed in another block size)
            return
        full = min(len(req.prefix_keys), req.kv_tokens // self.unit,
                   req.prompt_tokens // self.unit)
        done = req.cached_upto // self.unit
        if full <= done:
            return
        held = req.units_held if isinstance(req.units_held, list) else []
        for i in range(done, full):
            key = req.prefix_keys[i]
            if key in self.refs:        # computed twice: not deduplicated, stays exclusive
                continue
            self.refs[key] = 1
            held.append(key)
            req.shared_blocks += self.bpu
        req.units_held = held
        req.cached_upto = max(req.cached_upto, full * self.unit)

    def release(self, req) -> None:
        """Drop ``req``'s references; units nobody holds become evictable (deepest first)."""
        freed = 0
        for key in reversed(req.units_held):
            left = self.refs[key] - 1
            self.refs[key] = left
            if not left:
                self.lru[key] = None
                freed += 1
        if freed:
            self.kv.release(freed * self.bpu)
        req.units_held, req.shared_blocks, req.cached_upto = [], 0, 0

    def make_room(self, blocks: int) -> None:
        """Evict LRU units until ``blocks`` KV blocks are free without them."""
        short = blocks - (self.kv.free_blocks - self.evictable_blocks)
        while short > 0 and self.lru:
            key, _ = self.lru.popitem(last=False)
            del self.refs[key]
            self.evictions += 1
            short -= self.bpu

    def check(self, running) -> None:
        """Assert the exact accounting (tests): used blocks = exclusive blocks of ``running``
        requests + blocks of referenced units; reference counts = holders."""
        held: dict[int, int] = {}
        exclusive = 0
        for req in running:
            exclusive += req.blocks - req.shared_blocks
            for key in req.units_held:
                held[key] = held.get(key, 0) + 1
        referenced = {k: v for k, v in self.refs.items() if v}
        assert referenced == held, "reference counts differ from the holders"
        assert set(self.lru) == {k for k, v in self.refs.items() if not v}
        assert self.kv.used_blocks == exclusive + len(referenced) * self.bpu
