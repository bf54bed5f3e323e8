"""Transfers that share links: a fluid model of flows through ports, max-min fair.

A :class:`LinkNetwork` holds *ports* (a server's egress or ingress on a link: a bandwidth per
direction) and *flows* (a transfer of some bytes through one or more ports, e.g. the sender's
egress and the receiver's ingress). At every moment each port's bandwidth is shared by the
flows through it, max-min fairly (progressive filling: the most contended port sets the rate of
its flows, which then leave the others more): two equal transfers that start together on one
link both take twice as long as one alone. A flow may have a *cap* (it cannot send faster than
its bytes are produced, as when KV is shipped layer by layer while a prompt is computed). The
network re-divides bandwidth only when a flow starts, ends or changes its cap — events, never
bytes — and a flow's ``done`` event fires ``latency_s`` after its last byte leaves (the alpha of
the alpha-beta model): alone on an idle link a transfer takes ``bytes / bw + latency``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import simpy

from simcluster.serving.clock import after, succeed_last

_EPS_BYTES = 1e-6


@dataclass(eq=False)
class Port:
    """One direction of one link endpoint: ``bw_bytes_per_s`` shared by its flows."""

    name: str
    bw_bytes_per_s: float
    flows: dict = field(default_factory=dict)   # (an ordered set: flows as keys)


@dataclass(eq=False)
class Flow:
    """One transfer in flight (see :class:`LinkNetwork`)."""

    nbytes: float
    ports: tuple
    latency_s: float
    start_s: float
    done: simpy.Event
    cap: float = math.inf
    remaining: float = 0.0
    rate: float = 0.0
    end_s: float = math.nan
    meta: dict = field(default_factory=dict)


class LinkNetwork:
    """Ports and the flows through them, in one SimPy environment (see module docstring)."""

    def __init__(self, env: simpy.Environment):
        self.env = env
        self.ports: dict = {}
        # flows in the order they started (dict keys: an ordered set; the order of the flows
        # sets the order of the float subtractions below and of same-time finishes, so it
        # must not be that of a set of objects hashed by address, which changes from run to
        # run in one process)
        self.flows: dict[Flow, None] = {}
        self._last = env.now
        self._generation = 0

    def port(self, key, bw_bytes_per_s: float) -> Port:
        """The port named ``key`` (created with ``bw_bytes_per_s`` on first use)."""
        p = self.ports.get(key)
        if p is None:
            if not bw_bytes_per_s > 0:
                raise ValueError(f"port {key!r} needs a bandwidth > 0, got {bw_bytes_per_s!r}")
            p = self.ports[key] = Port(str(key), float(bw_bytes_per_s))
        return p

    def transfer(self, nbytes: float, ports, latency_s: float = 0.0, cap: float = math.inf,
                 **meta) -> Flow:
        """Start moving ``nbytes`` through ``ports``; wait on the returned flow's ``done``."""
        if nbytes < 0 or latency_s < 0:
            raise ValueError(f"a transfer needs bytes >= 0 and latency >= 0, got {nbytes}, "
                             f"{latency_s}")
        self._advance()
        # (a flow crosses each of its ports once: a port named twice is one port)
        flow = Flow(float(nbytes), tuple(dict.fromkeys(ports)), float(latency_s), self.env.now,
                    self.env.event(), cap=float(cap), remaining=float(nbytes), meta=meta)
        if flow.remaining <= _EPS_BYTES:
            self._finish(flow)
            return flow
        self.flows[flow] = None
        for p in flow.ports:
            p.flows[flow] = None
        self._reallocate()
        return flow

    def set_cap(self, flow: Flow, cap: float = math.inf):
        """Change the rate cap of a flow in flight (a finished flow is left alone)."""
        if flow not in self.flows:
            return
        self._advance()
        flow.cap = float(cap)
        self._reallocate()

    # -- the fluid model ---------------------------------------------------------------------
    def _advance(self):
        """Move every flow's bytes forward to now at the current rates."""
        now = self.env.now
        dt = now - self._last
        if dt > 0:
            for f in self.flows:
                f.remaining = max(0.0, f.remaining - f.rate * dt)
        self._last = now

    def _reallocate(self):
        """Max-min fair rates with caps (progressive filling), then wake at the next finish."""
        ports = [p for f in self.flows for p in f.ports]
        if len(ports) == len(set(ports)):
            # no port carries two flows (one flow alone, or flows between distinct servers):
            # progressive filling then fixes each flow at its cap or at its slowest port's
            # bandwidth, which no other flow has drawn from — those floats, without the rounds
            for f in self.flows:
                f.rate = min(f.cap, min([p.bw_bytes_per_s for p in f.ports]))
        else:
            self._fill(ports)
        self._generation += 1
        gen = self._generation
        waits = [f.remaining / f.rate for f in self.flows if f.rate > 0]
        if waits:
            after(self.env, max(0.0, min(waits)), self._tick, gen)

    def _fill(self, ports):
        """Progressive filling: the most contended port sets its flows' rate (capped flows
        below it take their caps first), which then leave its other ports less; repeat."""
        unfixed = dict.fromkeys(self.flows)
        left = {p: p.bw_bytes_per_s for p in ports}
        for f in unfixed:
            f.rate = 0.0
        while unfixed:
            counts = {}
            for f in unfixed:
                for p in f.ports:
                    counts[p] = counts.get(p, 0) + 1
            share = port = None          # (the first port of the least share, as min gives)
            for p, n in counts.items():
                x = left[p] / n
                if port is None or x < share:
                    share, port = x, p
            capped = [f for f in unfixed if f.cap <= share]
            fixed = capped or [f for f in unfixed if port in f.ports]
            for f in fixed:
                f.rate = f.cap if capped else share
                for p in f.ports:
                    left[p] = max(0.0, left[p] - f.rate)
                del unfixed[f]

    def _tick(self, generation):
        if generation != self._generation:
            return                      # superseded by a later start, finish or cap change
        self._advance()
        done = [f for f in self.flows if f.remaining <= _EPS_BYTES
                or (f.rate > 0 and f.remaining / f.rate < 1e-12)]
        for f in done:
            del self.flows[f]
            for p in f.ports:
                p.flows.pop(f, None)
            f.remaining = 0.0
            self._finish(f)
        self._reallocate()

    def _finish(self, flow: Flow):
        if flow.latency_s > 0:
            after(self.env, flow.latency_s, self._fire, flow)
        else:
            flow.end_s = self.env.now
            flow.done.succeed(flow)

    def _fire(self, flow):
        flow.end_s = self.env.now
        succeed_last(self.env, flow.done, flow)
