"""Batching policies: which sequences run in an instance's next iteration.

A batching policy is bound to one instance and answers ``schedule(now) -> Plan``. It reads the
instance's ``running`` list (admission order), ``waiting`` deque, ``kv`` free blocks and
``config``, and never mutates them: the instance applies the plan. It may also read the
instance's decode ``group`` (:class:`~simcluster.serving.decode_group.DecodeGroup`): its members
are running requests past their prompts, with tight blocks, whose counts it keeps — so a plan
need not ask each member what the group knows (how many start a block, that none prefills).

``vllm`` mirrors vLLM's scheduler. Without chunked prefill (vLLM v0 default): if any waiting
request can be admitted, the iteration is prefill-only (FCFS admission while ``max_num_seqs``,
``max_batched_tokens`` and free KV blocks allow), otherwise every running sequence decodes one
token. With chunked prefill (Sarathi-style, vLLM v1): decodes first, then ongoing partial
prefills, then new admissions, filling a ``max_batched_tokens`` token budget with prompt chunks.
A decode that needs a block when none is free preempts the most recently admitted running
sequence (recompute: its KV is dropped and it waits at the head of the queue).

A waiting request whose KV is already complete (handed off by a prefill pool) is admitted
straight into decoding, in FCFS order with the others, in a decode iteration.

Prefix caching: a batcher whose class sets ``prefix_caching = True`` asks the instance, for
each request it would admit, how many leading prompt tokens are cached
(``instance.prefix_hit(req)``: tokens, and the free blocks the hit takes back from the
evictable pool); those tokens need no prefill chunk, no token budget and no new blocks, and the
plan records them (``Plan.cached``) for the instance to apply. A preempted sequence's blocks
are counted as freed only where they are its own (``blocks - shared_blocks``): blocks of
cached units it shares may stay in use.

A policy whose rules fix a scheduler setting states it in a class attribute
``fixed_settings`` — ``{InstanceConfig field: (value, why)}`` — and its instances run with
that value (``hf_cb`` chunks every prompt and keeps no prefix cache, whatever
``chunked_prefill`` and ``prefix_caching`` say; :func:`settled_config`). An experiment that
sets such a field to another value is refused, naming the policy and why.

A policy may also answer ``steady_decode(now)``: True only when ``schedule(now)`` would decode
every running request and do nothing else. The instance then skips planning (the common case
between arrivals); a contract test checks the two agree for every policy that has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.policies.registry import BATCHERS

if TYPE_CHECKING:   # (a type only: policies sit below the serving layer)
    from simcluster.serving.request import Request


def settled_config(config, batcher):
    """``config`` with the settings ``batcher``'s rules fix (its class's ``fixed_settings``;
    see the module docstring); ``config`` itself when there are none or they agree."""
    fixed = {k: v for k, (v, _) in getattr(batcher, "fixed_settings", {}).items()
             if getattr(config, k) != v}
    if not fixed:
        return config
    from dataclasses import replace
    return replace(config, **fixed)


class Plan:
    """One iteration's work: prompt chunks, decode steps, preemptions, admissions.

    (A plain slotted class: one is built per planned iteration, on the hot path.)
    """

    __slots__ = ("prefill", "decode", "preempt", "admit", "cached")

    def __init__(self, prefill: list[tuple[Request, int]] | None = None,
                 decode: list[Request] | None = None, preempt: list[Request] | None = None,
                 admit: list[Request] | None = None, cached: dict | None = None):
        self.prefill = [] if prefill is None else prefill
        self.decode = [] if decode is None else decode
        self.preempt = [] if preempt is None else preempt
        self.admit = [] if admit is None else admit
        self.cached = {} if cached is None else cached   # id(request) -> prompt tokens cached

    def __repr__(self):
        return (f"Plan(prefill={self.prefill!r}, decode={self.decode!r}, "
                f"preempt={self.preempt!r}, admit={self.admit!r}, cached={self.cached!r})")

    def __eq__(self, other):
        return isinstance(other, Plan) and all(getattr(self, k) == getattr(other, k)
                                               for k in self.__slots__)

    @property
    def steady(self) -> bool:
        """A pure-decode plan: the same plan repeats until an arrival, a completion or a
        block shortage, so the instance may advance many steps at once."""
        return not (self.prefill or self.preempt or self.admit)

    @property
    def empty(self) -> bool:
        return not (self.prefill or self.decode)


def blocks_for(req: Request, tokens: int, block_size: int) -> int:
    """New blocks ``req`` needs to hold ``tokens`` KV tokens."""
    return max(0, -(-tokens // block_size) - req.blocks)


def take_decodes(running, plan: Plan, free: int, block_size: int, limit: int | None = None):
    """Every decoding sequence of ``running`` (admission order) takes one token — the first
    ``limit`` of them if given; a decode that finds no free block preempts the most recently
    admitted running sequence (itself if none is left). Returns the plan and the blocks left.

    (Decode group members are decoding, and with no step in flight — ``group.ahead`` 0 —
    their blocks are tight: a member needs a new block exactly when its KV length is a block
    multiple, which its stored count tells without the properties the loop reads of others.)
    """
    group = running[0].group if running else None
    decoding = None
    if (group is not None and group.n == len(running)
            and (limit is None or limit >= group.n)):
        # every running request decodes in the instance's decode group, which knows how
        # many of them start a new block (the common case, O(1) in the batch size): when
        # those blocks are free, no decode below could preempt, and each takes its token
        need = group.step_blocks()
        if need <= free:
            plan.decode.extend(running)
            return plan, free - need
        if not group.ahead and group.n > 1:
            # fewer blocks than that, the usual way, in O(1): the loop below would give the
            # free blocks to the members before the (free + 1)-th that starts a block, then
            # preempt the last member for that one; when the blocks the last member frees
            # cover every member from there on that starts a block (``rest``, the last one
            # left out), nothing else is preempted and every other member decodes. Not when
            # that (free + 1)-th member is the last one (``rest`` 0 with the last one
            # starting a block): the loop then preempts the one before it. (On
            # ``bench_simulator``'s out-x16 and overload rows this answers 97% and 98% of the
            # shortages, in batches of a median 30 and 97 requests that the loop went over;
            # counted instructions per request 274.3 -> 267.7 thousand and 228.6 -> 204.8.)
            victim, bs = running[-1], group.bs
            v_need = 1 if (victim._kv - 1) % bs == (bs - 1 - group.clock) % bs else 0
            rest = need - free - v_need
            freed = victim.blocks - victim.shared_blocks
            if rest <= freed and (rest or not v_need):
                plan.decode.extend(running[:-1])
                plan.preempt.append(victim)
                return plan, freed - rest
        # fewer blocks than that: the members before the (free + 1)-th that starts a block
        # take their tokens as the loop below would (no shortage before it; the group's
        # members are ``running``, in the same order), using every free block; the loop goes
        # on from there
        lead = group.lead_before_shortage(free)
        plan.decode.extend(running[:lead])
        decoding, free = running[lead:], 0
    # (members' counts read from the group, unless a step in flight holds blocks ahead)
    members = group if group is not None and not group.ahead else None
    if decoding is None:               # (not the group alone: each request by its counts)
        decoding = [r for r in running
                    if r.group is not None or r.kv_tokens >= r.prefill_target]
        if limit is not None:
            decoding = decoding[:limit]
        if len(decoding) <= free:
            # each decode needs at most one new block: no shortage possible
            plan.decode.extend(decoding)
            return plan, free - _new_blocks(decoding, members, block_size)
    return _decode_under_shortage(running, decoding, plan, free, block_size, members)


def _new_blocks(decoding, group, bs: int) -> int:
    """How many of ``decoding`` start a new block with their next token."""
    if group is None:
        return sum([1 for r in decoding if r.kv_tokens + 1 > r.blocks * bs])
    cls = (bs - 1 - group.clock) % bs
    return sum([1 for r in decoding
                if ((r._kv - 1) % bs == cls if r.group is group
                    else r.kv_tokens + 1 > r.blocks * bs)])


def _decode_under_shortage(running, decoding, plan: Plan, free: int, bs: int, group):
    """:func:`take_decodes` one request at a time, from where blocks may run short: each of
    ``decoding`` takes its next token's block if free, else preempts the last running request
    not yet preempted (itself if none is left); a preempted request that had taken its token
    gives the token's block back."""
    gone: set = set()
    cls = (bs - 1 - group.clock) % bs if group is not None else -1
    decode, tail = plan.decode, len(running)   # (running[tail:] are all preempted)
    for req in decoding:
        if gone and id(req) in gone:
            continue
        if group is not None and req.group is group:
            need = 1 if (req._kv - 1) % bs == cls else 0
        else:
            need = blocks_for(req, req.kv_tokens + 1, bs)
        while need > free:
            # the last running request neither preempted nor ``req``
            t = tail - 1
            while t >= 0 and (running[t] is req or id(running[t]) in gone):
                t -= 1
            if t < 0:
                break
            # (only preempted requests and ``req`` lie above t; once a search passes ``req``
            # every request after it is preempted, so no later search needs them)
            tail = t
            victim = running[t]
            gone.add(id(victim))
            plan.preempt.append(victim)
            free += victim.blocks - victim.shared_blocks
            if victim in decode:
                decode.remove(victim)
                free += blocks_for(victim, victim.kv_tokens + 1, bs)
        if need > free:
            gone.add(id(req))
            plan.preempt.append(req)
            free += req.blocks - req.shared_blocks
            continue
        free -= need
        decode.append(req)
    return plan, free


@BATCHERS.register("vllm")
class VLLMBatching:
    """vLLM-like continuous batching (see module docstring)."""

    prefix_caching = True
    #: :meth:`steady_decode` is True exactly when nothing waits, every running request is in
    #: the decode group and the group's next step has its blocks, and :meth:`steady_with`
    #: answers the same with requests waiting: a replica may then start the decode iteration
    #: that admits hand-offs or follows a preemption and the run after it as one run, sized
    #: by this rule (``Instance`` reads it; a policy without it keeps the iteration apart).
    steady_is_group_blocks = True

    def __init__(self, watermark_blocks: int = 0):
        if watermark_blocks < 0:
            raise ValueError(f"watermark_blocks must be >= 0, got {watermark_blocks}")
        self.watermark_blocks = watermark_blocks
        self.inst = None

    def bind(self, instance) -> "VLLMBatching":
        self.inst = instance
        return self

    def steady_decode(self, now: float) -> bool:
        """True when :meth:`schedule` would decode every running request and do nothing
        else: nothing waits, every running request decodes (in the instance's decode
        group), and each can have the block its next token may need."""
        inst = self.inst
        g = inst.group
        return (not inst.waiting and g.n == len(inst.running)
                and g.step_blocks() <= inst.kv.free_blocks)

    def steady_with(self, free: int, need: int) -> bool:
        """Whether :meth:`schedule` would decode the whole decode group and do nothing else
        with ``free`` KV blocks free, the group's next step needing ``need`` of them — every
        running request a member of the group, the waiting queue as it is now. A replica asks
        it of the state after a step it has not applied yet (the blocks free then), to fold
        that step into the run after it.

        With requests waiting, the queue's head decides: admission is FCFS and stops at the
        first request it cannot take, so nothing is admitted exactly when the head is not.
        That is asked of :meth:`_admit` itself, with the blocks and token budget
        :meth:`schedule` would give it: without chunked prefill, all the free blocks for a
        prompt at the head (prompts are admitted before decodes are planned), what the
        decodes leave for a hand-off (admitted beside them); with chunked prefill, what the
        decodes leave, and the token budget less one token per decode. (:meth:`steady_decode`
        does not ask this: where requests wait, the head is usually admitted, and the
        question would double the planning that follows.)"""
        if need > free:
            return False
        inst = self.inst
        waiting = inst.waiting
        if not waiting:
            return True
        if not inst.running:
            return False               # (nothing decodes: schedule admits or stalls)
        cfg, head = inst.config, waiting[0]
        budget = cfg.max_batched_tokens
        if cfg.chunked_prefill:
            free, budget = free - need, budget - len(inst.running)
        elif head.kv_tokens >= head.prefill_target:
            free -= need               # (a hand-off at the head: admitted after the decodes)
        probe, _ = self._admit(Plan(), free, budget, cfg.chunked_prefill)
        return not probe.admit

    def schedule(self, now: float) -> Plan:
        inst, cfg = self.inst, self.inst.config
        plan, free = Plan(), inst.kv.free_blocks
        if not cfg.chunked_prefill:
            head = inst.waiting[0] if inst.waiting else None
            # prompts first; a head whose KV is complete (a hand-off) would be admitted as a
            # decode, after which no prompt joins: that pass cannot plan a prefill
            prompt = head is not None and head._kv < head.prefill_target     # (_admit's note)
            if prompt:
                plan, _ = self._admit(plan, free, cfg.max_batched_tokens, chunked=False)
                if plan.prefill:
                    return plan
            plan, free = self._decodes(Plan(), free)
            # hand-offs join the decodes; a prompt at the head that did not fit above admits
            # nothing here either (behind decodes it waits; alone it meets the same blocks)
            if head is not None and not prompt and not plan.preempt:
                plan, free = self._admit(plan, free, cfg.max_batched_tokens, chunked=False)
            return plan
        plan, free = self._decodes(plan, free)
        budget = cfg.max_batched_tokens - len(plan.decode)
        preempted = set(id(r) for r in plan.preempt)
        # (decode group members are past their prompts: with every running request one, no
        # prompt is partly done)
        for req in inst.running if inst.group.n < len(inst.running) else ():
            if budget <= 0:
                break
            if req.group is None and req.prefilling and id(req) not in preempted:
                chunk = min(req.prefill_target - req.kv_tokens, budget)
                need = blocks_for(req, req.kv_tokens + chunk, cfg.block_size)
                if need > free:
                    break
                free -= need
                budget -= chunk
                plan.prefill.append((req, chunk))
        if not plan.preempt:
            plan, free = self._admit(plan, free, budget, chunked=True)
        return plan

    def _decodes(self, plan: Plan, free: int):
        return take_decodes(self.inst.running, plan, free, self.inst.config.block_size)

    def _admit(self, plan: Plan, free: int, budget: int, chunked: bool):
        """Admit waiting requests FCFS while slots, token budget and blocks allow."""
        inst, cfg = self.inst, self.inst.config
        bs = cfg.block_size
        slots = cfg.max_num_seqs - len(inst.running) + len(plan.preempt)
        # A waiting request is in no decode group, so its kv_tokens and blocks are its own
        # _kv and _blocks: read here (and for the queue's head in schedule) without the
        # properties, blocks_for's formula written out. Three property reads and a call a
        # request were 2.9% of a one-replica run (bench_instructions worker, one tree,
        # thousand instructions a request: azure-x1 165.17 -> 160.33)
        for req in inst.waiting:
            if slots <= 0 or budget <= 0:
                break
            kv = req._kv
            remaining = req.prefill_target - kv
            if remaining == 0:                       # KV arrived complete: decode now
                need = -(-(kv + 1) // bs) - req._blocks
                if need < 0:
                    need = 0
                if need > free - self.watermark_blocks:
                    break
                free -= need
                budget -= 1
                slots -= 1
                plan.admit.append(req)
                plan.decode.append(req)
                continue
            if plan.decode and not chunked:
                break                                # v0: no prompt in a decode iteration
            hit, touched = (inst.prefix_hit(req) if req.prefix_keys is not None else (0, 0))
            remaining -= hit
            chunk = min(remaining, budget) if chunked else remaining
            if chunk > budget and (chunked or plan.prefill):
                break   # (a recompute longer than the budget runs alone, unchunked)
            need = -(-(kv + hit + chunk) // bs) - req._blocks
            if need < 0:
                need = 0
            if hit:     # cached blocks are mapped, not allocated; evictable ones leave the pool
                need += touched - hit // bs
                plan.cached[id(req)] = hit
            if need > free - self.watermark_blocks:
                plan.cached.pop(id(req), None)
                break
            free -= need
            budget -= chunk
            slots -= 1
            plan.admit.append(req)
            plan.prefill.append((req, chunk))
        return plan, free
