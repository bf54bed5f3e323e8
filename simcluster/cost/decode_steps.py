"""Pure-decode runs of an :class:`~.model.IterationTimer`: per-step times of many identical
decode steps as one vector (:meth:`DecodeSteps.decode_steps`), from a table per batch size
filled in blocks of context sums, each block evaluated with the batch-size parts bound once
(:meth:`DecodeSteps._decode_fn`). A mixin of the timer, kept apart so that modules stay short.
"""

from __future__ import annotations

import numpy as np

#: Context sums per block of a timer's decode step table, and blocks kept (the least recently
#: read go first: on the Mooncake conversation trace — 128k contexts, TP-4 Llama-3.1-70B
#: replicas, chunked prefill — a run reads about 480 distinct blocks; clearing the whole table
#: when full rebuilt 1,013 blocks in a warm run, evicting the least recently read 525).
#: A run of ``k`` steps of ``n`` sequences reads ``n * k`` consecutive sums: with 1,024-sum
#: blocks, runs of long outputs joined four blocks on average (8 us per run); with 16,384
#: they join 1.2 and the table holds about as many floats as before (fewer, larger blocks:
#: 19 MiB for 16x outputs, 12 MiB on the Azure trace; 23.1 and 14.8 MiB with the overlap
#: below).
STEP_BLOCK = 16384
STEP_BLOCKS_KEPT = 256
#: Sums past its end that a block also holds (the next block's first ones, the same floats):
#: a run that starts near a block's end is still one slice. With 16x outputs a run reads a
#: median 2,047 sums (p90 7,084) and 19% of runs crossed a block's end (a concatenation of
#: two slices); with 4,096 more sums a block, 4.6% do (the ``decode_steps`` calls of
#: ``bench_simulator``'s out-x16 row, recorded). A block is 25% larger (160 KiB).
STEP_OVERLAP = 4096


class DecodeSteps:
    """The decode-run half of :class:`~.model.IterationTimer` (it holds ``_step_table``,
    ``_decode_fns`` and the parts the step functions bind)."""

    def decode_steps(self, n_decode: int, context_sum: int, steps: int,
                     pad_tokens: int = 0, pad_samples: int = 0) -> np.ndarray:
        """Per-step times of ``steps`` pure-decode iterations of ``n_decode`` sequences whose
        KV lengths sum to ``context_sum`` at the first step and grow by one token each step
        (``pad_tokens``, ``pad_samples``: as for :meth:`time`).

        A step's time is a function of the batch size and the context sum alone, so the timer
        keeps a table of it per batch size (and padding), filled in blocks of
        :data:`STEP_BLOCK` consecutive context sums (and the :data:`STEP_OVERLAP` after them)
        the first time a run needs one: a run is then a strided slice of the table (the same
        floats as evaluating its steps: every operation is elementwise), of the block its
        first sum falls in. The array returned is read-only (a view of the table).

        The block a batch size read last is looked up first (``_step_hot``, one per batch
        size, dropped with its block): 88% of the runs of one replica on the Azure trace,
        99.9% on four, 62% with 16x outputs read the block their batch size read last. Such a
        read skips the table's bookkeeping (a call and a re-insertion: ``bench_instructions``
        worker, thousand instructions a request, one tree, azure-x1 169.91 -> 167.88,
        azure-x4 196.82 -> 194.42, out-x16 245.30 -> 244.06) and so does not refresh the
        block's place in it: in a working set larger than the table, a block read only so
        can go and be rebuilt (the same floats)."""
        fk = (n_decode, pad_tokens, pad_samples) if pad_tokens or pad_samples else n_decode
        lo, hi = context_sum, context_sum + n_decode * (steps - 1)
        c = lo // STEP_BLOCK
        base = c * STEP_BLOCK
        if hi - base < STEP_BLOCK + STEP_OVERLAP:
            hot = self._step_hot.get(fk)
            if hot is not None and hot[0] == c:
                return hot[1][lo - base:hi - base + 1:n_decode]
            return self._step_block(fk, c)[lo - base:hi - base + 1:n_decode]
        parts, s = [], lo
        while s <= hi:
            c = s // STEP_BLOCK
            base = c * STEP_BLOCK
            block = self._step_block(fk, c)
            last = min(hi, base + STEP_BLOCK + STEP_OVERLAP - 1)
            parts.append(block[s - base:last - base + 1:n_decode])
            s += n_decode * ((last - s) // n_decode + 1)
        return np.concatenate(parts)

    def _step_block(self, fk, c: int) -> np.ndarray:
        """Step times of batches ``fk`` (a size, or (size, pad rows, pad samples)) at context
        sums ``c * STEP_BLOCK`` onwards: from the table (re-inserted, so that the dict's order
        is the order blocks were last read in), else computed, dropping the block read longest
        ago when the table is full."""
        table, key = self._step_table, (fk, c)
        block = table.pop(key, None)
        if block is not None:
            table[key] = block
            self._step_hot[fk] = (c, block)
            return block
        fn = self._decode_fns.get(fk)
        if fn is None:
            fn = self._decode_fns[fk] = (self._decode_fn(*fk) if isinstance(fk, tuple)
                                         else self._decode_fn(fk))
        if len(table) >= STEP_BLOCKS_KEPT:
            old = next(iter(table))
            gone = table.pop(old)
            if self._step_hot.get(old[0], (0, None))[1] is gone:
                del self._step_hot[old[0]]
        block = fn(np.arange(c * STEP_BLOCK, (c + 1) * STEP_BLOCK + STEP_OVERLAP, dtype=float))
        block.flags.writeable = False
        table[key] = block
        self._step_hot[fk] = (c, block)
        return block

    def _decode_fn(self, n: int, pad_tokens: int = 0, pad_samples: int = 0):
        """``sums -> step times`` of batches of ``n`` at the context sums ``sums``: the
        batch-size parts (dense operators, links, host dispatch, the calibration's slice) bound
        once, the same floats as evaluating every part per step."""
        rows, samples = n + int(pad_tokens), n + int(pad_samples)
        links = self._links(rows, n)
        mode = self.execution.decode
        host = self._host
        if not self._scalar:
            dense = self._dense(rows, samples)[:, :, None]

            def steps_general(sums):
                per_rank = dense + self._attn_decode(n, sums)
                per_rank = host.apply(per_rank, False, True, True, mode)
                return per_rank.max(axis=1).sum(axis=0) + links
            return steps_general
        rs, layers = self.ranks[0], self.stage_layers[0]
        dense0 = self._dense(rows, samples)[0, 0]
        if mode != "graphs":
            def steps_host(sums):
                t = self._attn_decode_scalar(n, sums) + dense0
                return host.scalar(t, False, True, True, mode) + links
            return steps_host
        const = dense0 + links
        shape = {"batch": n, "kv_len": 1.0, "heads": rs.heads, "kv_heads": rs.kv_heads}
        kernel = self.cal.slice_kernel(self._device(0, 0), "attn_decode", shape, self.dtype)
        if (kernel is None or rs.variant or rs.recompute
                or self.kernels.kv_cache == "concat"):      # (the general per-step formula)
            def steps_scalar(sums):
                return self._attn_decode_scalar(n, sums) + const
            return steps_scalar

        flops_per_kv, frac, bytes_per_kv, bytes_fixed, scale = rs.attn_decode_terms(n)
        # decode attention is memory-bound when even at infinite context (the largest
        # FLOPs-to-bytes ratio) the FLOPs roofline stays 0.1% below the bytes roofline:
        # then max() picks the bytes term for every step, bit for bit
        memory_bound = (frac == 0 or flops_per_kv * kernel.bw
                        < 0.999 * scale * bytes_per_kv * kernel.peak)

        def steps_sliced(sums):
            if memory_bound and sums[0] >= n:        # (kv_len = sums / n >= 1)
                by = bytes_per_kv * sums
                if frac != 1.0:
                    by *= frac
                by += bytes_fixed
                by *= scale
                t = kernel.bytes_bound(by, sums / n)
            else:
                f, by = rs.attn_decode(n, sums)
                t = kernel(f, by, sums / n)
            t *= layers
            t += const
            return t
        return steps_sliced
