"""The paged KV cache of one replica."""

from __future__ import annotations


class KVCache:
    """Paged KV cache: a count of free blocks of ``block_size`` tokens.

    With a prefix cache attached (``cache``, :mod:`.prefix_cache`), ``free_blocks`` counts the
    blocks of evictable cached units too, as vLLM's free block queue does; an allocation that
    needs more than the truly free blocks first evicts the least recently used units.
    """

    def __init__(self, total_blocks: int, block_size: int):
        self.total_blocks = total_blocks
        self.block_size = block_size
        self.free_blocks = total_blocks
        self.cache = None

    @property
    def used_blocks(self) -> int:
        return self.total_blocks - self.free_blocks

    def alloc(self, n: int):
        if n > self.free_blocks:
            raise RuntimeError(f"KV cache over capacity: {n} blocks asked, "
                               f"{self.free_blocks} free of {self.total_blocks}")
        if self.cache is not None:
            self.cache.make_room(n)
        self.free_blocks -= n

    def release(self, n: int):
        self.free_blocks += n
        assert self.free_blocks <= self.total_blocks
