"""A request's life in the simulator: its tokens and the times it passed each stage."""

from __future__ import annotations

import math

NaN = math.nan


class Request:
    """One request: arrival, prompt and output tokens, and its progress through an instance.

    ``kv_tokens`` are the tokens whose KV is in the cache; ``prefill_target`` is how many
    must be there before it decodes (the prompt, or prompt plus generated tokens after a
    preemption by recompute); ``generated`` counts sampled output tokens; ``blocks`` the KV
    blocks it holds.

    While a request decodes in a replica's :class:`~.decode_group.DecodeGroup` (``group``),
    its stored counts are relative to the group's clock and the properties add the clock back,
    so readers always see the current values. A Request lives only while it is in flight: the
    simulation records its times in columns when it ends.

    Prefix caching (:mod:`.prefix_cache`): ``prefix_keys`` are the chained keys of the
    prompt's hash blocks (None: the trace has none), ``cached_tokens`` the prompt tokens its
    first admission found cached (they skipped prefill); ``shared_blocks`` of its ``blocks``
    belong to cached units it references (``units_held``), ``cached_upto`` tokens of its prompt
    are registered in the cache.
    """

    __slots__ = ("id", "arrival_s", "prompt_tokens", "output_tokens", "instance", "device",
                 "_kv", "prefill_target", "_gen", "_blocks", "admit_seq",
                 "prefill_start_s", "first_token_s", "finish_s", "group", "_join", "__dict__")

    # Fields most requests never change, as class defaults (one is set per request only when
    # it changes: a request is built per arrival, on the hot path).
    preemptions = 0
    reason = ""
    tag = ""        # free-form label a policy may set (e.g. the pool that decoded it)
    prefix_keys = None
    prefix_block_tokens = 0
    cached_tokens = 0
    shared_blocks = 0
    units_held = ()
    cached_upto = 0
    # KV hand-off to another instance (disaggregated pools): when its KV started and finished
    # crossing the link, and how many bytes
    handoff_start_s = NaN
    handoff_end_s = NaN
    handoff_bytes = 0

    def __init__(self, rid: int, arrival_s: float, prompt_tokens: int, output_tokens: int):
        self.id = rid
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.instance = -1
        self.device = ""
        self._kv = 0
        self.prefill_target = prompt_tokens
        self._gen = 0
        self._blocks = 0
        self.admit_seq = -1
        self.prefill_start_s = NaN
        self.first_token_s = NaN
        self.finish_s = NaN
        self.group = None

    # -- counts (clock-relative while in a decode group) ---------------------------------------
    @property
    def kv_tokens(self) -> int:
        g = self.group
        return self._kv if g is None else self._kv + g.clock

    @kv_tokens.setter
    def kv_tokens(self, value: int):
        g = self.group
        if g is not None:
            raise AttributeError("a decode group member's kv_tokens change with its group")
        self._kv = value

    @property
    def generated(self) -> int:
        g = self.group
        return self._gen if g is None else self._gen + g.clock

    @generated.setter
    def generated(self, value: int):
        if self.group is not None:
            raise AttributeError("a decode group member's generated changes with its group")
        self._gen = value

    @property
    def blocks(self) -> int:
        g = self.group
        return self._blocks if g is None else -(-(self._kv + g.clock + g.ahead) // g.bs)

    @blocks.setter
    def blocks(self, value: int):
        if self.group is not None:
            raise AttributeError("a decode group member's blocks change with its group")
        self._blocks = value

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
