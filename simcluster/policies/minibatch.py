"""hLLM's mini-batch dispatcher: a prefilled batch's KV goes to CPU sockets in mini-batches.

The slides: "The GPU prefill a batch of request; divide a batch into several mini-batch; select
a mini-batch of requests and execute them using a pipeline method." ``numa_minibatch``
(``ROUTERS``) is the decode router of a disaggregated cluster that does this. It takes the
hand-offs itself (``handoff(request, source)``, called by
:class:`~simcluster.cluster.pools.DisaggregatedCluster` for every request leaving a prefill
instance): the requests that leave one prefill iteration form a *batch*; the batch is cut into
mini-batches of ``mini_batch`` requests (``None``: the whole batch is one); each mini-batch is
one KV copy over the GPU's link (copies of one GPU go one after another) into the DRAM of *one*
socket, chosen before the copy (NUMA-aware: the KV lands where it is decoded), which admits the
mini-batch when its copy ends. What overlaps:

* a socket decodes mini-batch j while mini-batch j+1 is being copied (to another socket when
  one has room: the pipeline). With ``mini_batch = None`` the first decode of a batch waits for
  the copy of all of it;
* the GPU prefills its next batch while the copies run (``overlap = true``, hLLM's
  asynchronous offload). ``overlap = false`` is the synchronous baseline: the GPU starts no
  iteration until its batch's copies have ended (``instance.gate``).

Which socket: one whose free slots (``slots``, default ``max_num_seqs``, minus the requests it
holds and the hand-offs already reserved for it) hold the whole mini-batch, the least loaded
relative to its speed, another than the previous mini-batch's if one qualifies. If none holds it
all, the mini-batch is cut over the sockets with the most room; only when no active socket has
a free slot does it go to the least loaded anyway — or, with ``hold = true``, wait in one FCFS
queue (KV still on the GPU) until a socket has room for the whole mini-batch: c sockets behind
one queue of batches, the M/M/c system hLLM's controller sizes in batch units.

Records: :attr:`MiniBatchDispatcher.batches` (one row per prefill batch: time, GPU, requests,
mini-batches).
"""

from __future__ import annotations

from collections import deque

import simpy
from simpy.core import URGENT

from simcluster.lazy import lazy_module
from simcluster.policies.registry import ROUTERS

pd = lazy_module("pandas")     # (imported when a frame is first built)


@ROUTERS.register("numa_minibatch")
class MiniBatchDispatcher:
    """hLLM's dispatch of each prefilled batch as mini-batches over sockets (module docstring)."""

    def __init__(self, mini_batch: int | None = 4, overlap: bool = True, hold: bool = False,
                 slots: int | None = None):
        if mini_batch is not None and (isinstance(mini_batch, bool) or mini_batch < 1):
            raise ValueError(f"mini_batch must be >= 1 or None (the whole batch), got "
                             f"{mini_batch!r}")
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.mini_batch, self.slots = mini_batch, slots
        self.overlap, self.hold = bool(overlap), bool(hold)
        self.current = None
        self.held: deque = deque()          # (mini-batch, source, done event) waiting for room
        self._batches: list[tuple] = []

    def bind(self, view):
        self.view, self.env = view, view.env
        self.cluster = getattr(view, "cluster", None)
        self._reserved = {inst.id: [0, 0] for inst in view.instances}    # requests, tokens
        # one instance of each admission profile (replicas of one profile admit alike)
        self._heads = list({inst.profile: inst for inst in reversed(view.instances)}.values())
        self._pending: dict = {}
        return self

    # -- what a socket can take --------------------------------------------------------------
    def room(self, inst) -> int:
        """Free slots of ``inst`` after what it holds and what is on its way to it."""
        return ((self.slots or inst.config.max_num_seqs) - len(inst.running)
                - len(inst.waiting) - self._reserved[inst.id][0])

    def _load(self, inst) -> tuple:
        return ((inst.outstanding_tokens + self._reserved[inst.id][1]) / inst.speed, inst.id)

    def _candidates(self, reqs):
        insts, heads = self.view.instances, self._heads
        if len(heads) == 1:
            able = insts if all([heads[0].admits(r) for r in reqs]) else []
        else:
            ok = {h.profile for h in heads if all([h.admits(r) for r in reqs])}
            able = [i for i in insts if i.profile in ok]
        return [i for i in able if i.active] or list(able)

    def _whole(self, candidates, n: int):
        """A socket with room for all ``n``: the least loaded, not the previous one if possible
        (:meth:`room` and :meth:`_load`, inline)."""
        slots, reserved, current = self.slots, self._reserved, self.current
        loads, current_fits = [], False
        for i in candidates:
            held = reserved[i.id]
            if (slots or i.config.max_num_seqs) - len(i.running) - len(i.waiting) - held[0] >= n:
                if i is current:
                    current_fits = True
                else:
                    loads.append(((i.outstanding_tokens + held[1]) / i.speed, i.id, i))
        if loads:
            return min(loads)[2]          # (ids differ: the instances are never compared)
        return current if current_fits else None

    # -- the hand-off path ------------------------------------------------------------------
    # (callbacks, where it used to run as processes: the dispatch where a process started by
    # the first hand-off would take its first step, each copy through the cluster's link
    # queue; the same order of events, four fewer a mini-batch)
    def handoff(self, req, source):
        """``req`` left ``source`` after prefill; collected until its iteration's batch is
        complete (the dispatch runs once the prefill iteration has been applied)."""
        pending = self._pending.setdefault(source.id, [])
        pending.append(req)
        if len(pending) == 1:
            if not self.overlap and source.gate is None:
                source.gate = self.env.event()       # a synchronous copy holds the GPU
            # (where a process started now would take its first step: an urgent event)
            start = self.env.event()
            start.callbacks.append(self._batch)
            start._ok, start._value = True, source
            self.env.schedule(start, URGENT)

    def _batch(self, ev):
        source = ev._value
        done = self._dispatch_pending(source)
        if not self.overlap:
            simpy.AllOf(self.env, done).callbacks.append(lambda _ev: self._open(source))

    def _dispatch_pending(self, source) -> list:
        """Split ``source``'s pending batch into mini-batches, record it, and dispatch each
        (:meth:`_dispatch`): the events of their copies' ends."""
        batch = self._pending.pop(source.id)
        size = self.mini_batch or len(batch)
        groups = [batch[k:k + size] for k in range(0, len(batch), size)]
        self._batches.append((self.env.now, source.id, len(batch), len(groups)))
        return [ev for group in groups for ev in self._dispatch(group, source)]

    @staticmethod
    def _open(source):
        if source.gate is not None and not source.gate.triggered:
            source.gate.succeed()

    def _dispatch(self, group, source) -> list:
        """Send ``group`` to sockets (cut over several if no one holds it all) or hold it;
        returns an event per part that fires when that part's KV has arrived (synchronous
        copies: ``overlap`` false; otherwise nothing waits for them, and they are None)."""
        out = []
        while group:
            cands = self._candidates(group)
            if not cands:            # nothing can ever serve them: the cluster rejects them
                return out + [self._send(group, source, None)]
            inst = self._whole(cands, len(group))
            take = len(group)
            if inst is None and self.hold:
                done = None if self.overlap else self.env.event()
                self.held.append((group, source, done))
                return out + [done]
            if inst is None:
                roomy = [i for i in cands if self.room(i) > 0]
                inst = (max(roomy, key=lambda i: (self.room(i), -i.id)) if roomy
                        else min(cands, key=self._load))
                take = max(1, min(len(group), self.room(inst)))
            out.append(self._send(group[:take], source, inst))
            group = group[take:]
        return out

    def _send(self, group, source, inst, done=None):
        if inst is not None:
            self.current = inst
            self._reserved[inst.id][0] += len(group)
            self._reserved[inst.id][1] += sum([r.remaining_output for r in group])
        copied = None if self.overlap else self.env.event()
        self.cluster.send(group, source,
                          lambda reqs: self._arrived(reqs, inst, done, copied))
        return copied

    def _arrived(self, group, inst, done, copied):
        if inst is not None:
            self._reserved[inst.id][0] -= len(group)
            self._reserved[inst.id][1] -= sum([r.remaining_output for r in group])
        self.cluster.deliver(group, inst)
        if done is not None:
            done.succeed()
        if copied is not None:
            copied.succeed()

    # -- the router interface ----------------------------------------------------------------
    def route(self, request, candidates, now):
        """One request reaching the pool another way (e.g. its socket could not take it)."""
        inst = self._whole(candidates, 1)
        if inst is None and not self.hold:
            inst = min(candidates, key=self._load)
        if inst is None:
            self.held.append(([request], None, None))
        return inst

    def freed(self, instance, now):
        while self.held:
            group, source, done = self.held[0]
            inst = self._whole(self._candidates(group), len(group))
            if inst is None:
                return
            self.held.popleft()
            if source is None:                       # already here: admit it
                inst.submit(group[0])
            else:
                self._send(group, source, inst, done)

    @property
    def batches(self) -> pd.DataFrame:
        """One row per prefill batch dispatched: time_s, instance (the GPU), requests,
        mini_batches."""
        return pd.DataFrame(self._batches, columns=["time_s", "instance", "requests",
                                                    "mini_batches"])
