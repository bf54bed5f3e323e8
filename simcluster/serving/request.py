"""A request's life in the simulator: its tokens and the times it passed each stage."""

from __future__ import annotations

import math

NaN = math.nan


class Request:
    """One request: arrival, prompt and output tokens, and its progress through an instance.

    ``kv_tokens`` are the tokens whose KV is in the cache; ``prefill_target`` is how many
    must be there before it decodes (the prompt, or prompt plus generated tokens after a
    preemption by recompute); ``generated`` counts sampled output tokens.

    Prefix caching (:mod:`.prefix_cache`): ``prefix_keys`` are the chained keys of the
    prompt's hash blocks (None: the trace has none), ``cached_tokens`` the prompt tokens its
    first admission found cached (they skipped prefill); ``shared_blocks`` of its ``blocks``
    belong to cached units it references (``units_held``), ``cached_upto`` tokens of its prompt
    are registered in the cache.
    """

    __slots__ = ("id", "arrival_s", "prompt_tokens", "output_tokens", "instance", "device",
                 "kv_tokens", "prefill_target", "generated", "blocks", "admit_seq",
                 "prefill_start_s", "first_token_s", "finish_s", "preemptions", "reason",
                 "tag", "prefix_keys", "prefix_block_tokens", "cached_tokens",
                 "shared_blocks", "units_held", "cached_upto", "handoff_start_s",
                 "handoff_end_s", "handoff_bytes")

    def __init__(self, rid: int, arrival_s: float, prompt_tokens: int, output_tokens: int):
        self.id = rid
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.instance = -1
        self.device = ""
        self.kv_tokens = 0
        self.prefill_target = prompt_tokens
        self.generated = 0
        self.blocks = 0
        self.admit_seq = -1
        self.prefill_start_s = NaN
        self.first_token_s = NaN
        self.finish_s = NaN
        self.preemptions = 0
        self.reason = ""
        self.tag = ""   # free-form label a policy may set (e.g. the pool that decoded it)
        self.prefix_keys = None
        self.prefix_block_tokens = 0
        self.cached_tokens = 0
        self.shared_blocks = 0
        self.units_held = ()
        self.cached_upto = 0
        # KV hand-off to another instance (disaggregated pools): when its KV started and
        # finished crossing the link, and how many bytes
        self.handoff_start_s = NaN
        self.handoff_end_s = NaN
        self.handoff_bytes = 0

    @property
    def prefilling(self) -> bool:
        return self.kv_tokens < self.prefill_target

    @property
    def remaining_output(self) -> int:
        return self.output_tokens - self.generated

    @property
    def max_kv_tokens(self) -> int:
        """KV tokens held at the end: prompt plus all outputs but the last."""
        return self.prompt_tokens + self.output_tokens - 1

    def __repr__(self):
        return (f"Request(id={self.id}, arrival_s={self.arrival_s:.3f}, "
                f"prompt={self.prompt_tokens}, output={self.output_tokens}, "
                f"kv={self.kv_tokens}/{self.prefill_target}, generated={self.generated})")
