"""What a replica asks its iteration timer, memoised for the event loop.

The cost model is a pure function of the batch shape, so a replica keeps what it asked: single
iterations are memoised by their shape (prompt chunks and contexts, decode count and context
sum, samples) — a trace's prompt lengths repeat, and so do the prefill-only iterations of
vLLM's default scheduler. An iteration with a prompt chunk calls the timer exactly as the
replica did before (int64 arrays of the chunks and contexts), so its time is the same float.

A pure-decode iteration (no prompt chunk, one sample per sequence) is one step of a decode run:
where the timer says so (``single_decode_from_table``, the plain cost model's
:class:`~simcluster.cost.model.IterationTimer`), its time is read from the timer's decode step
table, as a run's steps are, instead of evaluating the scalar formula (about 1.5 us instead of
20; a decode pool of disaggregated serving admits each request it receives in such an
iteration — most of them now start together with the decode run after them, reading the same
table: :meth:`~simcluster.serving.decode_run.DecodeRuns._start_folded`).
The scalar and the vectorised formula of the measured calibration's kernel curves differ in
the last bits for 1.4% of shapes (none under the datasheet calibration; at most 1.4e-14
relative: numpy's array and scalar paths; ``benchmarks/decode_step_formulas.py``), so a result
may move by that much where a lone decode step used to be timed by the scalar formula; every
bundled experiment gives identical digests (``benchmarks/digest_experiments.py``).
Timers that count or wrap iterations (engine models and their envelopes, NUMA placements,
padded batches) keep ``time``.
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
    if (not chunks and samples == n_decode > 0
            and getattr(type(timer), "single_decode_from_table", False)):
        t = memo[key] = float(timer.decode_steps(n_decode, context_sum, 1)[0])
        return t
    c = np.array(chunks, dtype=np.int64) if chunks else _EMPTY
    x = np.array(ctx, dtype=np.int64) if ctx else _EMPTY
    t = memo[key] = timer.time(c, x, n_decode, context_sum, samples)
    return t
