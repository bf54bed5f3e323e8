"""Synthetic profiling sweeps: which batches the profiler submits.

Both sweeps are sized from the engine settings and the workload's longest contexts, so that
the fitted engine model covers what the replays will make the engine run (an engine model is
only trusted inside its profiled envelope; the simulator counts iterations outside it):

* :func:`serving_sweep` (the main one): a *background* of ``n`` sequences decodes while single
  prompts of controlled sizes are *injected* one at a time, so every prompt chunk is timed
  inside a decode batch of known size and context, as prompts arrive in a served trace.
  Backgrounds span 1 to 192 decoding sequences and per-sequence contexts up to ~90% of
  ``max_context``; injected prompts span 64 tokens to the token budget, one and a half budgets
  (chunked) and the longest prompt the context allows.
* :func:`sweep` (``grid``): groups of ``n`` equal requests submitted together (back-to-back
  prompt chunks, then decode steps), single prompts, mixed groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .hf_cb import EngineSettings, Submission


@dataclass(frozen=True)
class Group:
    """Synthetic batch: requests submitted at given offsets from the group's start."""

    name: str
    subs: tuple = field(default_factory=tuple)


def _blocks(tokens: int, bs: int) -> int:
    """Blocks transformers allocates for ``tokens`` of KV: (tokens + 1) // bs + 1."""
    return (tokens + 1) // bs + 1


def injected_sizes(settings: EngineSettings, max_context: int, quick: bool = False) -> list[int]:
    """Prompt sizes injected into each background: 64 tokens up to the budget, 1.5 budgets
    (chunked: a full chunk, then the rest reading its KV) and the longest the context allows."""
    budget = settings.max_batch_tokens
    if quick:
        sizes = [256, budget]
    else:
        sizes = [64, 256, 512, 1024, 2048, 3000, budget, int(1.5 * budget),
                 int(0.9 * max_context)]
    return sorted({s for s in sizes if 16 <= s <= max_context - 8})


def serving_sweep(settings: EngineSettings, quick: bool = False, max_context: int | None = None,
                  seed: int = 0) -> list[Group]:
    """Backgrounds of decoding sequences with single prompts injected (module docstring)."""
    bs, budget = settings.block_size, settings.max_batch_tokens
    max_ctx = int(max_context or settings.max_position_embeddings)
    out_bg = 12 if quick else 40
    sizes = injected_sizes(settings, max_ctx, quick)
    room = (1 - settings.safety_margin) * settings.num_blocks - _blocks(max(sizes) + 2, bs) - 1
    long_ctx = int(0.9 * max_ctx) - out_bg
    backgrounds = ([(8, 512)] if quick else
                   [(1, 1024), (8, 512), (1, long_ctx), (16, 2000), (32, 1024), (4, long_ctx),
                    (64, 512), (48, 256), (96, 256), (12, min(3000, long_ctx)),
                    (2, long_ctx // 2), (128, 16), (192, 16), (24, 1500)])
    groups = []
    for n, p in backgrounds:
        if p <= 0 or p + out_bg >= max_ctx:
            continue
        if n * _blocks(p + out_bg + 1, bs) > room:
            continue
        subs = [Submission(0.0, p, out_bg) for _ in range(n)]
        # first injection once the background's prompts are done (~0.15 s per full chunk)
        t = 0.15 * (n * p // budget + 1) + 0.3
        for size in sizes:
            subs.append(Submission(t, size, 2))
            t += 0.35 + 0.25 * size / 2048        # a long prompt runs longer: space it more
        groups.append(Group(f"serve-n{n}-p{p}", tuple(subs)))
    return groups


def sweep(settings: EngineSettings, quick: bool = False, seed: int = 0,
          max_context: int | None = None) -> list[Group]:
    """The grid groups, most informative first (a time cap keeps a prefix of them).

    Steady decode of ``n`` sequences with prompts of ``p`` tokens (so KV per sequence from p
    to p + out), the prefills that start each group (chunks of up to ``max_batch_tokens``
    packed from several prompts, later chunks reading earlier ones' KV), and mixed iterations
    (prompts arriving while a background of sequences decodes).
    """
    rng = np.random.default_rng(seed)
    out_steps = 8 if quick else 24
    bs = settings.block_size
    max_ctx = int(max_context or settings.max_position_embeddings)
    room = (1 - settings.safety_margin - 0.01) * settings.num_blocks
    grid = []
    ns = [1, 8, 64] if quick else [1, 2, 4, 8, 16, 24, 32, 40, 48, 64, 96, 128, 192]
    ps = [1024] if quick else sorted({16, 256, 1024, 2000, 3000, int(0.8 * max_ctx)})
    for p in ps:
        if p + out_steps >= max_ctx:
            continue
        for n in ns:
            if n * _blocks(p + out_steps + 1, bs) <= room:
                grid.append((n, p))
    order = rng.permutation(len(grid))
    groups = []
    for i in order:
        n, p = grid[i]
        groups.append(Group(f"decode-n{n}-p{p}",
                            tuple(Submission(0.0, p, out_steps) for _ in range(n))))
    # pure prefills: one prompt of each size, two output tokens
    for p in ([512, 2048] if quick else [32, 128, 512, 1024, 2048, 3000, int(0.9 * max_ctx)]):
        if p < max_ctx - 4:
            groups.append(Group(f"prefill-p{p}", (Submission(0.0, p, 2),)))
    if not quick:
        # mixed: a background of decoders, prompts of random length arriving every 150 ms
        for n_bg, p_bg in ((16, 512), (48, 256), (8, 2000)):
            subs = [Submission(0.0, p_bg, 120) for _ in range(n_bg)]
            for k in range(12):
                subs.append(Submission(0.4 + 0.15 * k, int(rng.integers(64, 2500)), 16))
            groups.append(Group(f"mixed-bg{n_bg}-p{p_bg}", tuple(subs)))
    return groups
