"""Length-bucketed prefill batching (hLLM's hierarchical GPU scheduler) and padded batches.

Prompts of very different lengths in one prefill batch interfere: a *static* batch (one
``[batch, longest]`` tensor, as in Hugging Face ``generate`` or an engine without variable-length
kernels) pads every prompt to the longest, so a batch of one 2,000-token and seven 100-token
prompts costs eight 2,000-token prompts. Grouping prompts of similar length removes the padding.

* ``bucketed`` (``BATCHERS``) — vLLM-like batching whose prefill admissions stop at the first
  waiting request in another length bucket than the first one admitted, and at ``max_batch``
  requests. ``buckets`` are the upper bounds of prompt length (tokens still to prefill), e.g.
  ``[256, 512, 1024, 2048]`` (longer prompts form a last bucket). With ``padded = true`` the
  instance's prefill iterations cost as static padded batches (:class:`PaddedPrefillTimer`).
* ``length_buckets`` (``ROUTERS``) — the top level: a queueing router that holds a pool's new
  requests in one FCFS queue per bucket and hands an instance a batch of up to ``max_batch``
  requests of one bucket (within its ``max_batched_tokens``) whenever the instance has nothing
  waiting or prefilling. ``pick = "oldest"`` serves the bucket of the oldest held request
  (bounded wait), ``"fullest"`` the bucket holding most. Meant for prefill pools, whose requests
  leave after prefill; in a colocated instance a new batch is handed over at the next finish.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Sequence

import numpy as np

from simcluster.policies.batching import Plan, VLLMBatching
from simcluster.policies.registry import BATCHERS, ROUTERS

DEFAULT_BUCKETS = (128, 256, 512, 1024, 2048, 4096, 8192)


def _bounds(buckets: Sequence[int]) -> tuple[int, ...]:
    b = tuple(int(x) for x in buckets)
    if not b or any(x < 1 for x in b) or list(b) != sorted(set(b)):
        raise ValueError(f"buckets must be increasing positive token counts, got {buckets!r}")
    return b


def bucket_of(tokens: int, bounds: Sequence[int]) -> int:
    """Index of the bucket holding a prompt of ``tokens`` (bucket i: bounds[i-1] < t <= bounds[i];
    the last index, len(bounds), holds longer prompts)."""
    return bisect_left(bounds, tokens)


def _to_prefill(req) -> int:
    return req.prefill_target - req.kv_tokens


class PaddedPrefillTimer:
    """An iteration timer whose multi-sequence prefill iterations run as one static batch:
    every prompt chunk padded to the longest chunk of the iteration (contexts unchanged).
    Decode work is not padded. Wraps any timer with the ``IterationTimer`` interface."""

    def __init__(self, timer):
        self.inner = timer

    def time(self, prefill_tokens, prefill_context, n_decode, decode_context_sum, n_samples):
        chunks = np.asarray(prefill_tokens)
        if len(chunks) > 1:
            chunks = np.full(len(chunks), int(chunks.max()), dtype=np.int64)
        return self.inner.time(chunks, prefill_context, n_decode, decode_context_sum, n_samples)

    def decode_steps(self, n_decode, context_sum, steps):
        return self.inner.decode_steps(n_decode, context_sum, steps)

    def __getattr__(self, name):          # model, layout, ... of the wrapped timer
        return getattr(self.inner, name)


@BATCHERS.register("bucketed")
class BucketedBatching(VLLMBatching):
    """vLLM batching with length-homogeneous prefill batches (see module docstring)."""

    def __init__(self, buckets: Sequence[int] = DEFAULT_BUCKETS, max_batch: int | None = None,
                 padded: bool = False, watermark_blocks: int = 0):
        super().__init__(watermark_blocks=watermark_blocks)
        self.bounds = _bounds(buckets)
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch, self.padded = max_batch, bool(padded)

    def wrap_timer(self, timer):
        return PaddedPrefillTimer(timer) if self.padded else timer

    def schedule(self, now: float) -> Plan:
        plan = super().schedule(now)
        prefilling = {id(r) for r, _ in plan.prefill}
        bucket, n, cut = None, 0, len(plan.admit)
        for k, req in enumerate(plan.admit):
            if id(req) not in prefilling:
                continue                       # KV arrived complete: a decode, no bucket
            b = bucket_of(_to_prefill(req), self.bounds)
            if bucket is None:
                bucket = b
            n += 1
            if b != bucket or (self.max_batch and n > self.max_batch):
                cut = k
                break
        if cut < len(plan.admit):
            dropped = {id(r) for r in plan.admit[cut:]}
            plan.admit = plan.admit[:cut]
            plan.prefill = [(r, c) for r, c in plan.prefill if id(r) not in dropped]
            plan.decode = [r for r in plan.decode if id(r) not in dropped]
        return plan


@ROUTERS.register("length_buckets")
class LengthBucketRouter:
    """Per-bucket queues in front of a prefill pool (see module docstring)."""

    def __init__(self, buckets: Sequence[int] = DEFAULT_BUCKETS, max_batch: int | None = None,
                 pick: str = "oldest"):
        if pick not in ("oldest", "fullest"):
            raise ValueError(f"pick must be 'oldest' or 'fullest', got {pick!r}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.bounds, self.max_batch, self.pick = _bounds(buckets), max_batch, pick
        self.queues = [deque() for _ in range(len(self.bounds) + 1)]
        self.pool = None

    def bind(self, cluster):
        self.pool = cluster
        return self

    @property
    def held(self) -> int:
        return sum(map(len, self.queues))

    def route(self, request, candidates, now):
        self.queues[bucket_of(_to_prefill(request), self.bounds)].append(
            (request, tuple(candidates)))
        self._dispatch()
        return None

    def freed(self, instance, now):
        self._dispatch()

    def _idle(self, inst) -> bool:
        # (decode group members are past their prompts)
        return not inst.waiting and not any(r.group is None and r.prefilling
                                            for r in inst.running)

    def _dispatch(self):
        # the active instances, in id order; parked ones only while none is active (handing
        # a batch over parks or activates none)
        queues, instances = self.queues, self.pool.instances
        for inst in [i for i in instances if i.active] or instances:
            if not any(queues):
                return
            if self._idle(inst):
                self._hand(inst)

    def _hand(self, inst):
        live = [q for q in self.queues if q]
        if self.pick == "oldest":
            queue = min(live, key=lambda q: q[0][0].arrival_s)
        else:
            queue = max(live, key=len)
        budget, n = inst.config.max_batched_tokens, 0
        limit = min(self.max_batch or inst.config.max_num_seqs, inst.config.max_num_seqs)
        skipped = deque()
        while queue and n < limit:
            req, able = queue[0]
            if inst not in able:                   # another instance must take this one
                skipped.append(queue.popleft())
                continue
            need = _to_prefill(req)
            if n and need > budget:
                break
            queue.popleft()
            inst.submit(req)
            budget -= need
            n += 1
        queue.extendleft(reversed(skipped))
