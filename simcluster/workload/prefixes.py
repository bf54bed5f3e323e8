"""Synthetic workloads that reuse prefixes, with block-hash chains: shared system prompts and
multi-turn conversations.

Both generators return a :class:`~simcluster.workload.trace.Trace` whose ``hash_ids`` follow
Mooncake's convention (:mod:`.hashes`): one id per ``block_tokens`` block of each prompt, the
last block possibly partial; a *full* block gets the same id wherever the same tokens follow the
same prefix, and every partial block (and every block of unshared text) a fresh id. Ids are
consecutive integers in order of first use. Randomness comes from the ``rng`` passed in only.

* :func:`shared_prefix_trace` -- every prompt is one of ``system_prompts`` system prompts of
  ``system_tokens`` tokens (picked uniformly, or by a Zipf law of exponent ``zipf_s``)
  followed by a unique user part. With an unbounded cache and each request finished before the
  next arrives, a request whose system prompt was seen before hits its
  ``floor(system_tokens / block_tokens)`` full system blocks, and nothing else hits: the
  token hit rate is that over the prompt tokens (:func:`shared_prefix_hit_rate`).
* :func:`conversation_trace` -- conversations start as a Poisson process; turn ``t + 1`` of a
  conversation arrives ``think`` seconds (exponential) after turn ``t`` (open loop: the trace
  cannot know when the answer finished) and its prompt is the whole conversation so far
  (optional shared system prompt, every earlier user message and answer) plus a new user
  message. Extras ``conversation`` and ``turn`` say which is which.
"""

from __future__ import annotations

import math

import numpy as np

from simcluster.workload.hashes import MOONCAKE_BLOCK_TOKENS
from simcluster.workload.synthetic import (LengthSpec, _count, _generator, _positive,
                                           _realise, fixed_lengths, poisson_arrivals)
from simcluster.workload.trace import Trace


class _Ids:
    """Consecutive ids, one per distinct key, in order of first use."""

    def __init__(self):
        self.ids: dict = {}

    def __call__(self, key) -> int:
        hit = self.ids.get(key)
        if hit is None:
            hit = self.ids[key] = len(self.ids)
        return hit

    def fresh(self) -> int:
        return self((object(),))   # a key nothing else shares


def _whole(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _blocks(prompt: int, shared: int, bt: int, ids: _Ids, key) -> list[int]:
    """Ids of a prompt whose first ``shared`` tokens are the shared text ``key``."""
    out = []
    for b in range(-(-prompt // bt)):
        full = (b + 1) * bt <= prompt
        out.append(ids((key, b)) if full and (b + 1) * bt <= shared else ids.fresh())
    return out


def shared_prefix_trace(n: int, *, arrivals, system_tokens: int, user: LengthSpec,
                        output: LengthSpec, rng: np.random.Generator, system_prompts: int = 1,
                        zipf_s: float = 0.0, block_tokens: int = MOONCAKE_BLOCK_TOKENS,
                        name: str = "shared-prefix") -> Trace:
    """``n`` requests sharing system prompts (see module docstring). ``arrivals`` as in
    :func:`~simcluster.workload.synthetic.synthetic_trace`; ``user`` and ``output`` lengths
    as an int, an array or a callable ``f(n, rng=rng)``. Draws arrivals, the system prompt of
    each request, user lengths, output lengths, in that order."""
    n = _count(n, "n")
    rng = _generator(rng)
    s_tokens = _whole(system_tokens, "system_tokens", 0)
    prompts = _whole(system_prompts, "system_prompts", 1)
    bt = _whole(block_tokens, "block_tokens", 1)
    zipf = _positive(zipf_s, "zipf_s", allow_zero=True)
    times = _realise(arrivals, n, rng, "arrivals", lambda k, r: poisson_arrivals(k, r, rng))
    weights = 1.0 / np.arange(1, prompts + 1) ** zipf
    which = rng.choice(prompts, size=n, p=weights / weights.sum())
    users = _realise(user, n, rng, "user", fixed_lengths)
    outs = _realise(output, n, rng, "output", fixed_lengths)
    ids = _Ids()
    prompt = s_tokens + np.asarray(users, dtype=np.int64)
    hashes = [_blocks(int(p), s_tokens, bt, ids, ("system", int(j)))
              for p, j in zip(prompt, which)]
    trace = Trace(times, prompt, outs, name=name, extras={"system_prompt": which})
    return trace.with_block_hashes(hashes, bt)


def shared_prefix_hit_rate(trace: Trace, system_tokens: int, block_tokens: int) -> float:
    """The analytic token hit rate of :func:`shared_prefix_trace` under an unbounded cache
    with every request finished before the next arrives (vLLM's rule: full blocks only, and
    never the prompt's last token)."""
    seen, hit = set(), 0
    full = system_tokens // block_tokens
    for j, p in zip(trace.extras["system_prompt"], trace.prompt_tokens):
        if j in seen:
            hit += min(full, (int(p) - 1) // block_tokens) * block_tokens
        seen.add(j)
    return hit / float(trace.prompt_tokens.sum())


def conversation_trace(conversations: int, *, rate_per_s: float, turns: LengthSpec,
                       user: LengthSpec, output: LengthSpec, rng: np.random.Generator,
                       think_s: float = 30.0, system_tokens: int = 0,
                       block_tokens: int = MOONCAKE_BLOCK_TOKENS,
                       name: str = "conversations") -> Trace:
    """Multi-turn conversations (see module docstring): ``turns`` per conversation (>= 1),
    ``user`` tokens per message and ``output`` tokens per answer, drawn per turn. Draws
    conversation starts, turn counts, then per turn (all turns of all conversations in
    order) user and output lengths, then think times."""
    c = _count(conversations, "conversations")
    rng = _generator(rng)
    rate = _positive(rate_per_s, "rate_per_s")
    think = _positive(think_s, "think_s", allow_zero=True)
    s_tokens = _whole(system_tokens, "system_tokens", 0)
    bt = _whole(block_tokens, "block_tokens", 1)
    starts = poisson_arrivals(c, rate, rng)
    n_turns = np.asarray(_realise(turns, c, rng, "turns", fixed_lengths), dtype=np.int64)
    if c and n_turns.min() < 1:
        raise ValueError("turns must be >= 1 per conversation")
    total = int(n_turns.sum())
    users = np.asarray(_realise(user, total, rng, "user", fixed_lengths), dtype=np.int64)
    outs = np.asarray(_realise(output, total, rng, "output", fixed_lengths), dtype=np.int64)
    gaps = rng.exponential(think, size=total) if think > 0 else np.zeros(total)
    ids = _Ids()
    rows = []
    k = 0
    for conv in range(c):
        t_arr, history = float(starts[conv]), s_tokens
        for turn in range(int(n_turns[conv])):
            prompt = history + int(users[k])
            hashes = []
            for b in range(-(-prompt // bt)):
                if (b + 1) * bt > prompt:
                    hashes.append(ids.fresh())                   # the partial last block
                elif (b + 1) * bt <= s_tokens:
                    hashes.append(ids(("system", b)))
                else:
                    hashes.append(ids(("conversation", conv, b)))
            rows.append((t_arr, prompt, int(outs[k]), hashes, conv, turn))
            history = prompt + int(outs[k])
            t_arr += float(gaps[k])
            k += 1
    rows.sort(key=lambda r: r[0])
    trace = Trace(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                  np.array([r[2] for r in rows]), name=name,
                  extras={"conversation": np.array([r[4] for r in rows], dtype=np.int64),
                          "turn": np.array([r[5] for r in rows], dtype=np.int64)})
    return trace.with_block_hashes([r[3] for r in rows], bt)


def ideal_hit_rate(trace: Trace, capacity_blocks: int | None = None) -> float:
    """Token hit rate of a trace's block hashes with one cache that holds every full prompt
    block from the moment its request arrives -- unbounded (an upper bound for a simulation,
    where a block is cached only once computed, per replica, and may be evicted), or an LRU
    pool of ``capacity_blocks`` blocks (the single global pool of Mooncake's technical report,
    section 4.2). Prefix hits only, never a prompt's last token (vLLM's rule)."""
    from collections import OrderedDict
    bt, hit = trace.hash_block_tokens, 0
    seen: OrderedDict = OrderedDict()
    for ids, p in zip(trace.extras["hash_ids"], trace.prompt_tokens):
        usable = min(len(ids), (int(p) - 1) // bt)
        j = 0
        while j < usable and ids[j] in seen:
            j += 1
        hit += j * bt
        for x in ids[: int(p) // bt]:
            seen[x] = None
            seen.move_to_end(x)
        while capacity_blocks is not None and len(seen) > capacity_blocks:
            seen.popitem(last=False)
    return hit / float(trace.prompt_tokens.sum()) if len(trace) else math.nan
