"""Rebalancers: which servers move between the prefill and decode pools, and when.

LLMShare's system model has "a dynamic scheduler [that] reallocates servers between pools based
on request load" (its slides; the rule is not published). A rebalancer is bound to a phase-pool
cluster (``bind(cluster)``, :mod:`simcluster.cluster.phase_pools`) and asked every
``interval_s`` for ``decide(now) -> [(server, "prefill" | "decode"), ...]``; the cluster drains
each server it is told to move (no new work; it finishes what it holds), reloads it for its new
role (the cluster's stated switch cost) and puts it in the other pool. It reads the cluster's
``pool_servers(role)``, ``pending_prompt_tokens(server)``, ``reserved_kv_tokens(server)``,
``kv_capacity_tokens(server)`` and ``switching`` (servers mid-move).

``threshold`` — move one server at a time, at most once per ``cooldown_s``, keeping at least
``min_servers`` per pool: to the prefill pool when prompts back up — pending prompt tokens per
prefill server above ``prefill_high`` batches of ``max_batched_tokens`` — while the decode pool
has room (KV reserved below ``decode_low`` of its capacity); to the decode pool when its KV
reservations pass ``decode_high`` of capacity while prompts do not back up (below
``prefill_low`` batches per server). The server moved is the one that drains soonest: the
decode server with the least KV reserved, the prefill server with the fewest pending tokens.

``static`` — never moves a server (the pools as configured).
"""

from __future__ import annotations

import math

from simcluster.policies.registry import REBALANCERS


@REBALANCERS.register("threshold")
class ThresholdRebalancer:
    """Move one server toward the pool under pressure (see module docstring)."""

    def __init__(self, interval_s: float = 5.0, prefill_high: float = 2.0,
                 prefill_low: float = 0.5, decode_high: float = 0.9, decode_low: float = 0.5,
                 cooldown_s: float = 20.0, min_servers: int = 1):
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be a number > 0, got {interval_s!r}")
        if not cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s!r}")
        if not 0 <= decode_low <= decode_high or not 0 <= prefill_low <= prefill_high:
            raise ValueError("need 0 <= decode_low <= decode_high and 0 <= prefill_low <= "
                             "prefill_high")
        if min_servers < 1:
            raise ValueError(f"min_servers must be >= 1, got {min_servers}")
        self.interval_s, self.cooldown_s, self.min_servers = float(interval_s), \
            float(cooldown_s), int(min_servers)
        self.prefill_high, self.prefill_low = float(prefill_high), float(prefill_low)
        self.decode_high, self.decode_low = float(decode_high), float(decode_low)
        self.last_move = -math.inf
        self.cluster = None

    def bind(self, cluster):
        self.cluster = cluster
        return self

    def loads(self) -> tuple[float, float]:
        """(prompt batches pending per prefill server, KV reserved / capacity of decode)."""
        c = self.cluster
        pre, dec = c.pool_servers("prefill"), c.pool_servers("decode")
        p = (sum(c.pending_prompt_tokens(s) for s in pre)
             / max(1, sum(s.config.max_batched_tokens for s in pre)))
        cap = sum(c.kv_capacity_tokens(s) for s in dec)
        d = sum(c.reserved_kv_tokens(s) for s in dec) / cap if cap else math.inf
        return p, d

    def decide(self, now: float):
        c = self.cluster
        if c.switching or now - self.last_move < self.cooldown_s:
            return []
        pre, dec = c.pool_servers("prefill"), c.pool_servers("decode")
        p, d = self.loads()
        move = []
        if p >= self.prefill_high and d <= self.decode_low and len(dec) > self.min_servers:
            move = [(min(dec, key=lambda s: (c.reserved_kv_tokens(s), s.id)), "prefill")]
        elif d >= self.decode_high and p <= self.prefill_low and len(pre) > self.min_servers:
            move = [(min(pre, key=lambda s: (c.pending_prompt_tokens(s), s.id)), "decode")]
        if move:
            self.last_move = now
        return move


@REBALANCERS.register("static")
class StaticPools:
    """Never move a server."""

    interval_s = math.inf

    def bind(self, cluster):
        return self

    def decide(self, now: float):
        return []
