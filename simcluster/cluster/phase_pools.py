"""Phase pools: prompt, token and mixed pools of servers, KV hand-off over shared links, and
servers that move between pools (Splitwise's cluster, LLMShare's system model).

Each instance is one *server* (its layout spans the server's devices) with a home pool,
``"prefill"`` (Splitwise's prompt pool) or ``"decode"`` (token pool), and a current *role*:
its pool, ``"mixed"`` (borrowed into Splitwise's mixed pool: it takes prompts and decodes
alike, and goes home when it falls idle) or ``"switching"`` (moving to the other pool).

* **Routing.** On arrival a pool router (``POOL_ROUTERS``, :mod:`simcluster.policies.
  pool_routing`) names the request's prompt server and token server. The prompt server
  prefills it; the token server's KV is reserved for it (``reserved_kv_tokens``) until it
  finishes. When they are the same server, the request decodes where it was prefilled.
* **KV hand-off.** When the prompt server samples the first token, the request's KV
  (``prefill_target x kv_bytes_per_token`` bytes) crosses the network from the prompt server's
  NICs to the token server's (one ``network_link`` per device, as DGX-H100 has one 400 Gb/s
  port per GPU: a server's egress and ingress are ``devices x link bandwidth``), through a
  :class:`~simcluster.cluster.transfers.LinkNetwork`: transfers that share a server's port
  share its bandwidth. If the router's ``overlap`` is set, the transfer starts with the
  prefill iteration and is paced by it (layer by layer: it cannot run ahead of the KV being
  computed, and the last layer's share leaves after the iteration ends). The prompt server
  holds the KV blocks until the transfer ends; then the token server admits the request
  straight into decoding. Each request's ``handoff_start_s``, ``handoff_end_s`` and
  ``handoff_bytes`` are set, and :attr:`transfers` lists every transfer.
* **Rebalancing.** A rebalancer (``REBALANCERS``, :mod:`simcluster.policies.rebalance`) is
  asked every ``interval_s`` which servers should change pool. A moving server is *drained*
  (it gets no new work and finishes what it holds, including KV still on its way to it), then
  pays the switch cost ``reload_s`` — its engine restarts in the new role and reloads the
  weights from host memory: by default each device's weight bytes over its host link — and
  joins the other pool. Servers are conserved: every server is always in exactly one role.
  :attr:`moves` lists borrowings, returns, drains and arrivals.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Mapping, Sequence

import simpy

from simcluster.lazy import lazy_module
from simcluster.cluster.replicas import Cluster, InstanceSpec
from simcluster.cluster.transfers import LinkNetwork
from simcluster.hardware import LinkSpec, load_link
from simcluster.policies import POOL_ROUTERS, REBALANCERS
from simcluster.serving import Request

pd = lazy_module("pandas")     # (imported when a frame is first built)

ROLES = ("prefill", "decode", "mixed", "switching")
MOVE_COLUMNS = ["time_s", "server", "from_role", "to_role", "event"]


class PhasePoolCluster(Cluster):
    """Prompt, token and mixed pools with KV hand-off and rebalancing (see module docstring)."""

    pooled = True

    def __init__(self, env: simpy.Environment, model, specs: Sequence[InstanceSpec],
                 router: str = "round_robin", router_params: Mapping | None = None,
                 cost_model=None, *, network_link: LinkSpec, routing: str = "splitwise",
                 routing_params: Mapping | None = None, rebalancer: str | None = None,
                 rebalancer_params: Mapping | None = None, reload_s: float | None = None):
        pools = {s.pool for s in specs}
        if pools != {"prefill", "decode"}:
            raise ValueError(f"phase pools need instances with pool = 'prefill' and with pool "
                             f"= 'decode' (and no other), got {sorted(pools)}")
        if router != "round_robin" or router_params:
            raise ValueError("phase pools route with a pool router ('routing'), not 'router'")
        if reload_s is not None and not (math.isfinite(reload_s) and reload_s >= 0):
            raise ValueError(f"reload_s must be a number >= 0, got {reload_s!r}")
        super().__init__(env, model, specs, cost_model=cost_model)
        homes = [s.pool for s in specs for _ in range(s.count)]
        self.home = {inst.id: pool for inst, pool in zip(self.instances, homes)}
        self.role = dict(self.home)       # (changed only by _move: _roles is kept by it)
        self._roles: dict = {}
        self.router = POOL_ROUTERS.create(routing, **dict(routing_params or {})).bind(self)
        self.router_of = {}
        self.network_link = network_link
        self.network = LinkNetwork(env)
        self.reload_s = reload_s
        self.transfers: list[tuple] = []      # (request, src, start_s, end_s, bytes, dst)
        self.moves: list[tuple] = []          # MOVE_COLUMNS
        self.switching: list = []
        self._dest: dict[int, object] = {}
        self._arrived: set[int] = set()
        self._reserved: dict[int, int] = defaultdict(int)
        self._inbound: dict[int, int] = defaultdict(int)
        self._flows: dict[int, object] = {}
        self._drain_to: dict[int, str] = {}
        self._wake: simpy.Event | None = None
        self.rebalancer = None
        if rebalancer:
            self.rebalancer = REBALANCERS.create(rebalancer, **dict(rebalancer_params or {}))
            self.rebalancer.bind(self)
            if math.isfinite(getattr(self.rebalancer, "interval_s", math.inf)):
                env.process(self._rebalance())

    # -- the view policies read -------------------------------------------------------------
    def servers(self, role: str, req: Request) -> list:
        """Servers now in ``role`` that could serve ``req``."""
        members, heads = self._in_role(role)
        if len(heads) == 1:             # (servers of one admission profile admit alike)
            return list(members) if heads[0].admits(req) else []
        able = {h.profile for h in heads if h.admits(req)}
        return [s for s in members if s.profile in able]

    def pool_servers(self, role: str) -> list:
        return list(self._in_role(role)[0])

    def _in_role(self, role: str):
        """(servers now in ``role``, in id order; one of them per admission profile), kept
        until a server changes role (:meth:`_move`)."""
        hit = self._roles.get(role)
        if hit is None:
            members = [s for s in self.instances if self.role[s.id] == role]
            heads = list({s.profile: s for s in reversed(members)}.values())
            hit = self._roles[role] = (members, heads)
        return hit

    def pending_prompt_tokens(self, server) -> int:
        """Prompt tokens queued or mid-prefill on ``server``."""
        return (sum([r.prefill_target - r.kv_tokens for r in server.waiting])
                + sum([r.prefill_target - r.kv_tokens for r in server.running
                       if r.group is None and r.prefilling]))   # (members: decoding)

    def reserved_kv_tokens(self, server) -> int:
        return self._reserved[server.id]

    def kv_capacity_tokens(self, server) -> int:
        return server.kv.total_blocks * server.kv.block_size

    def borrow(self, server):
        """Move ``server`` into the mixed pool (it goes home when it falls idle)."""
        if self.role[server.id] in ("prefill", "decode"):
            self._move(server, "mixed", "borrow")

    # -- requests in ------------------------------------------------------------------------
    def submit(self, req: Request):
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()
        p, t = self.router.assign(req, self.env.now)
        if p is None or t is None:
            reasons = [s.can_serve(req) for s in self.instances]
            req.reason = min((r for r in reasons if r), key=len, default=
                             "no server of any pool can take it (all switching)")
            self.rejected(req)
            return
        self._dest[req.id] = t
        self._reserved[t.id] += req.max_kv_tokens
        if t is not p:
            self._inbound[t.id] += 1
        p.submit(req)

    def wants_handoff(self, req: Request) -> bool:
        dest = self._dest.get(req.id)
        return dest is not None and dest.id != req.instance

    def prefill_running(self, server, prefill, start: float, end: float):
        """A prefill iteration starts: with overlap, ship the KV of the prompts it completes
        layer by layer, paced by the iteration (the last layer's share leaves after it)."""
        if not getattr(self.router, "overlap", False) or end <= start:
            return
        for req, chunk in prefill:
            if (req.kv_tokens + chunk == req.prefill_target and req.generated == 0
                    and req.output_tokens > 1 and self.wants_handoff(req)):
                nbytes = req.prefill_target * self.model.kv_bytes_per_token
                early = nbytes * (1 - 1 / self.model.num_layers)
                self._flows[req.id] = self._ship(req, server, nbytes, cap=early / (end - start))

    def prefilled(self, req: Request):
        source = self.instances[req.instance]
        flow = self._flow_of(req, source)
        # (a callback of the flow's end, where a process waiting on it would resume: two
        # events fewer a hand-off — its start and its end — in the same order)
        flow.done.callbacks.append(lambda _ev: self._arrive(req, source, flow))

    def _flow_of(self, req: Request, source):
        """The flow carrying ``req``'s KV off ``source``: the one started early (its cap
        lifted now), else a new one of the whole KV."""
        flow = self._flows.pop(req.id, None)
        if flow is not None:
            self.network.set_cap(flow)
            return flow
        return self._ship(req, source, req.prefill_target * self.model.kv_bytes_per_token)

    def _ship(self, req: Request, source, nbytes: float, cap: float = math.inf):
        dest = self._dest[req.id]
        ports = (self._port(source, "out"), self._port(dest, "in"))
        req.handoff_start_s = self.env.now
        return self.network.transfer(nbytes, ports, latency_s=self.network_link.latency_s,
                                     cap=cap, request=req.id)

    def _port(self, server, direction: str):
        bw = len(server.layout.devices) * self.network_link.bw_bytes_per_s
        return self.network.port((server.id, direction), bw)

    def _arrive(self, req: Request, source, flow):
        dest = self._dest[req.id]
        req.handoff_end_s, req.handoff_bytes = self.env.now, flow.nbytes
        self.transfers.append((req.id, source.id, req.handoff_start_s, req.handoff_end_s,
                               flow.nbytes, dest.id))
        source.release_kv(req)                 # the prompt server held the KV until now
        req.tag = "handed_off"
        self._arrived.add(req.id)
        self._inbound[dest.id] -= 1
        dest.submit(req)
        self._settle(source)

    # -- requests out -----------------------------------------------------------------------
    def finished(self, req: Request):
        super().finished(req)
        self._release(req)

    def rejected(self, req: Request):
        super().rejected(req)
        self._release(req)

    def _release(self, req: Request):
        dest = self._dest.pop(req.id, None)
        if dest is not None:
            self._reserved[dest.id] -= req.max_kv_tokens
            if dest.id != req.instance and req.id not in self._arrived:
                self._inbound[dest.id] -= 1          # it never made it there
            self._settle(dest)
        self._arrived.discard(req.id)
        if req.instance >= 0:
            self._settle(self.instances[req.instance])

    # -- servers changing role --------------------------------------------------------------
    def _idle(self, server) -> bool:
        return (not server.running and not server.waiting and not self._inbound[server.id]
                and server.kv.used_blocks == 0)

    def _settle(self, server):
        role = self.role[server.id]
        if role == "mixed" and self._idle(server):
            self._move(server, self.home[server.id], "return")
        elif role == "switching" and server.id in self._drain_to and self._idle(server):
            self.env.process(self._reload(server, self._drain_to.pop(server.id)))

    def _move(self, server, to: str, event: str):
        self.moves.append((self.env.now, server.id, self.role[server.id], to, event))
        self.role[server.id] = to
        self._roles.clear()

    def move(self, server, to: str):
        """Start moving ``server`` to pool ``to``: drain, reload, join (see module doc)."""
        if to not in ("prefill", "decode"):
            raise ValueError(f"servers move to 'prefill' or 'decode', not {to!r}")
        if self.role[server.id] in (to, "switching", "mixed") or self.home[server.id] == to:
            return
        self._move(server, "switching", "drain")
        self.switching.append(server)
        self._drain_to[server.id] = to
        self._settle(server)

    def switch_s(self, server) -> float:
        """Seconds a drained server needs to start in its new role (see module doc)."""
        if self.reload_s is not None:
            return self.reload_s
        dev = server.layout.devices[0]
        link = load_link(dev.host_link or "PCIe5")
        return max(r.weight_bytes for r in server.memory.ranks) / link.bw_bytes_per_s

    def _reload(self, server, to: str):
        yield self.env.timeout(self.switch_s(server))
        self.home[server.id] = to
        self.switching.remove(server)
        self._move(server, to, "ready")

    def _rebalance(self):
        policy = self.rebalancer
        while True:
            yield self.env.timeout(policy.interval_s)
            for server, to in policy.decide(self.env.now):
                self.move(server, to)
            if not any(s.running or s.waiting for s in self.instances) and not self.switching:
                self._wake = self.env.event()        # nothing to balance: sleep till work
                yield self._wake
                self._wake = None

    def moves_frame(self) -> pd.DataFrame:
        """One row per borrowing, return, drain start and arrival in a new pool."""
        return pd.DataFrame(self.moves, columns=MOVE_COLUMNS)

    def role_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ROLES, 0)
        for r in self.role.values():
            counts[r] += 1
        return counts
