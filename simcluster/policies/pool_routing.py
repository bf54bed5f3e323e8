"""Pool routing: which server prefills a new request, which decodes it, and which servers join
the mixed pool (phase pools, :mod:`simcluster.cluster.phase_pools`).

A pool router is bound to the cluster (``bind(cluster)``) and answers ``assign(request, now)``
with ``(prompt_server, token_server)`` — the same server twice to serve both phases there (no
KV hand-off), or ``(None, None)`` when no server can take it. It reads the cluster's view:
``servers(role, request)`` (the servers now in role ``"prefill"``, ``"decode"`` or ``"mixed"``
able to serve the request), ``pending_prompt_tokens(server)``, ``reserved_kv_tokens(server)``,
``kv_capacity_tokens(server)``, and may ``borrow(server)`` into the mixed pool (the cluster
returns it to its own pool when it falls idle). A router's ``overlap`` attribute says whether
KV is shipped layer by layer while the prompt is computed.

``splitwise`` — Splitwise's cluster-level scheduler (Patel et al., ISCA'24, section IV-C; its
simulator's ``MixedPoolScheduler``): the prompt server is the one of the prompt pool (then of
the mixed pool) with the fewest pending prompt tokens, unless its queue is long — it has work
waiting and its pending prompt tokens plus this prompt exceed ``prompt_max_pending_tokens``
(8,192 in Splitwise's configuration); the token server is the one of the token pool (then the
mixed pool) with the least KV reserved, unless this request's KV would not fit. When the prompt
pool is overloaded a token server (the one with the fewest pending prompt tokens) is borrowed
into the mixed pool; when the token pool is, a prompt server (the least KV reserved). If still
none is found, both phases run on the server with the fewest pending prompt tokens.
``mixed = false`` turns borrowing off (requests then queue in their pool).

``kv_jsq`` — Splitwise's simpler baseline (``KVJSQScheduler``): in each pool the server with the
fewest requests queued or running; no mixed pool.
"""

from __future__ import annotations

from simcluster.policies.registry import POOL_ROUTERS


class _Bound:
    cluster = None

    def bind(self, cluster):
        self.cluster = cluster
        return self


@POOL_ROUTERS.register("splitwise")
class SplitwiseRouting(_Bound):
    """Splitwise's prompt/token/mixed pool scheduler (see module docstring)."""

    def __init__(self, prompt_max_pending_tokens: int = 8192, mixed: bool = True,
                 overlap: bool = False):
        if prompt_max_pending_tokens < 1:
            raise ValueError(f"prompt_max_pending_tokens must be >= 1, got "
                             f"{prompt_max_pending_tokens}")
        self.limit, self.mixed, self.overlap = int(prompt_max_pending_tokens), bool(mixed), \
            bool(overlap)

    def _prompt(self, servers, req):
        c = self.cluster
        if not servers:
            return None
        pending, _, best = min([(c.pending_prompt_tokens(s), s.id, s) for s in servers])
        if best.waiting and pending + req.prompt_tokens > self.limit:
            return None
        return best

    def _token(self, servers, req):
        c = self.cluster
        if not servers:
            return None
        reserved, _, best = min([(c.reserved_kv_tokens(s), s.id, s) for s in servers])
        if reserved + req.max_kv_tokens >= c.kv_capacity_tokens(best):
            return None
        return best

    def assign(self, request, now):
        c = self.cluster
        prompts, mixed, tokens = (c.servers(r, request) for r in ("prefill", "mixed", "decode"))
        p = self._prompt(prompts, request) or self._prompt(mixed, request)
        t = self._token(tokens, request) or self._token(mixed, request)
        if self.mixed:
            if p is None and tokens:
                p = min(tokens, key=lambda s: (c.pending_prompt_tokens(s), s.id))
                c.borrow(p)
                tokens = [s for s in tokens if s is not p]
            if t is None and prompts:
                t = min((s for s in prompts if s is not p), default=None,
                        key=lambda s: (c.reserved_kv_tokens(s), s.id))
                if t is not None:
                    c.borrow(t)
        else:
            p = p or min(prompts + mixed, default=None,
                         key=lambda s: (c.pending_prompt_tokens(s), s.id))
            t = t or min(tokens + mixed, default=None,
                         key=lambda s: (c.reserved_kv_tokens(s), s.id))
        if p is None or t is None:        # (after any borrowing: roles may have changed)
            everyone = [s for r in ("prefill", "mixed", "decode") for s in c.servers(r, request)]
            if not everyone:
                return None, None
            p = t = min(everyone, key=lambda s: (c.pending_prompt_tokens(s), s.id))
        return p, t


@POOL_ROUTERS.register("kv_jsq")
class KVJoinShortestQueue(_Bound):
    """In each pool the server with the fewest requests queued or running; no mixed pool."""

    overlap = False

    def assign(self, request, now):
        c = self.cluster
        def load(s):
            return (len(s.waiting) + len(s.running), s.id)
        prompts = c.servers("prefill", request) + c.servers("mixed", request)
        tokens = c.servers("decode", request) + c.servers("mixed", request)
        if not prompts or not tokens:
            everyone = prompts or tokens
            if not everyone:
                return None, None
            p = min(everyone, key=load)
            return p, p
        return min(prompts, key=load), min(tokens, key=load)
