"""What a replica asks its iteration timer, memoised for the event loop.

The cost model is a pure function of the batch shape, so a replica keeps what it asked: single
iterations are memoised by their shape (prompt chunks and contexts, decode count and context
sum, samples) — a trace's prompt lengths repeat, and so do the prefill-only iterations of
vLLM's default scheduler. The timer is called exactly as the replica did before (int64 arrays
of the chunks and contexts), so the times are the same floats.
"""

from __future__ import annotations

import numpy as np

_EMPTY = np.zeros(0, dtype=np.int64)
MEMO_SIZE = 1 << 15     # shapes kept before the memo is cleared


def iteration_time(memo: dict, timer, key: tuple) -> float:
    """``timer.time`` of the iteration ``key = (chunks, contexts, n_decode, context_sum,
    samples)`` (chunks and contexts as tuples), kept in ``memo``."""
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    chunks, ctx, n_decode, context_sum, samples = key
    c = np.array(chunks, dtype=np.int64) if chunks else _EMPTY
    x = np.array(ctx, dtype=np.int64) if ctx else _EMPTY
    t = memo[key] = timer.time(c, x, n_decode, context_sum, samples)
    return t
