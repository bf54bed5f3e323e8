"""``hf_cb``: the scheduling rules of Hugging Face transformers' continuous batching.

Mirrors ``transformers.generation.continuous_batching`` (v5.x) with its default ``fifo``
scheduler (``FIFOScheduler.schedule_batch`` -> ``Scheduler._process_candidates``), as run by
the reference engine profiled under ``hwspecs/engines/``. Per iteration:

1. **Candidates, in order**: running requests that are decoding (admission order), then
   running requests whose prompt was split (partial prefill), then waiting requests (FIFO).
2. **Token budget** ``max_batch_tokens`` (``InstanceConfig.max_batched_tokens``): a decode takes
   one token; a prompt takes what is left of it, so prompts are chunked (the remainder is
   scheduled first among the prompts in the next iterations). The loop stops when the budget
   is spent or ``max_requests_per_batch`` requests are scheduled.
3. **Safety margin**: once fewer than ``safety_margin`` (0.15) of the KV blocks are free, no
   prompt (new or partial) is scheduled in an iteration that already holds a request; decodes
   still are.
4. **KV blocks** of ``block_size`` tokens (default 256) are allocated as a request's KV
   grows. ``num_blocks`` is the engine's cache size; the policy never lets the replica use
   more (the simulator's replica may have more memory than the engine was given).
5. **Eviction**: a decode that cannot get a block evicts the most recently admitted running
   request; transformers (with no CPU offload space) *soft-resets* it — its prompt plus the
   tokens generated so far are prefilled again later. The simulator's instance re-queues such
   a request at the head of the waiting queue; transformers appends it to the tail. Under the
   safety margin this is rare (the replays in ``hwspecs/engines`` saw none).

Differences kept on purpose, and why:

* transformers skips a waiting request that does not fit the free blocks and tries the next
  one; the simulator's instance admits strictly in queue order, so the policy stops at the
  first waiting request that does not fit (only matters near a full cache).
* transformers allocates ``(tokens + 1) // block_size + 1`` blocks for a new chunk, one more
  than needed when a length is a multiple of the block size; the instance allocates
  ``ceil(tokens / block_size)``. The difference is under one block per request.
* There is no ``max_num_seqs`` cap on running requests in transformers (only on requests per
  batch); the policy admits while ``max_requests_per_batch`` allows, so the two coincide
  while every running request is scheduled in every iteration, as they are here.
"""

from __future__ import annotations

from simcluster.policies.batching import Plan, blocks_for, take_decodes
from simcluster.policies.registry import BATCHERS


@BATCHERS.register("hf_cb")
class HFContinuousBatching:
    """transformers' FIFO continuous-batching scheduler (see module docstring)."""

    #: Settings its rules fix (simcluster.policies.batching: ``fixed_settings``). Without the
    #: first, a prompt longer than the token budget was rejected "without chunked prefill"
    #: under the default InstanceConfig, though transformers chunks it.
    fixed_settings = {"chunked_prefill": (True, "chunks every prompt into the token budget "
                                                "(rule 2 of simcluster.policies.hf_cb)"),
                      "prefix_caching": (False, "keeps no prefix cache (transformers' "
                                                "continuous batching has none)")}

    def __init__(self, safety_margin: float = 0.15, num_blocks: int | None = None,
                 max_requests_per_batch: int | None = None):
        if not 0.0 <= safety_margin < 1.0:
            raise ValueError(f"safety_margin must be in [0, 1), got {safety_margin}")
        for name, value in (("num_blocks", num_blocks),
                            ("max_requests_per_batch", max_requests_per_batch)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.safety_margin = safety_margin
        self.num_blocks = num_blocks
        self.max_requests_per_batch = max_requests_per_batch
        self.inst = None

    def bind(self, instance) -> "HFContinuousBatching":
        self.inst = instance
        return self

    def total_blocks(self) -> int:
        """The engine's KV blocks: ``num_blocks``, at most what the replica holds."""
        total = self.inst.kv.total_blocks
        return min(total, self.num_blocks) if self.num_blocks else total

    def steady_decode(self, now: float) -> bool:
        """True when :meth:`schedule` would decode every running request and do nothing else
        (nothing waits, all decode, all fit the token and request budgets and the blocks)."""
        inst, cfg = self.inst, self.inst.config
        n = inst.group.n
        slots = self.max_requests_per_batch or cfg.max_num_seqs
        return (not inst.waiting and n == len(inst.running) and n <= cfg.max_batched_tokens
                and n <= slots and n <= self.total_blocks() - inst.kv.used_blocks)

    def schedule(self, now: float) -> Plan:
        inst, cfg = self.inst, self.inst.config
        bs = cfg.block_size
        total = self.total_blocks()
        free = total - inst.kv.used_blocks
        margin = self.safety_margin * total
        budget = cfg.max_batched_tokens
        slots = self.max_requests_per_batch or cfg.max_num_seqs
        plan = Plan()
        plan, free = self._decodes(plan, free, min(budget, slots))
        budget -= len(plan.decode)
        slots -= len(plan.decode)
        gone = {id(r) for r in plan.preempt}
        partial = [r for r in inst.running
                   if r.group is None and r.prefilling and id(r) not in gone]
        for req, waiting in [(r, False) for r in partial] + [(r, True) for r in inst.waiting]:
            if budget <= 0 or slots <= 0:
                break
            if free < margin and not plan.empty:
                break                               # safety margin: decodes only
            if plan.preempt and waiting:
                break                               # an eviction: no admission this iteration
            remaining = req.prefill_target - req.kv_tokens
            if remaining == 0:                      # KV complete (handed off): decode
                chunk = 1
            else:
                chunk = min(remaining, budget)
            need = blocks_for(req, req.kv_tokens + chunk, bs)
            if need > free:
                if waiting:
                    break                           # admission in queue order
                continue
            free -= need
            budget -= chunk
            slots -= 1
            if waiting:
                plan.admit.append(req)
            if remaining == 0:
                plan.decode.append(req)
            else:
                plan.prefill.append((req, chunk))
        return plan

    def _decodes(self, plan: Plan, free: int, limit: int):
        """Every decoding request takes one token (up to ``limit``); a decode that finds no
        free block evicts the newest running request."""
        return take_decodes(self.inst.running, plan, free, self.inst.config.block_size, limit)
