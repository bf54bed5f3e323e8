"""The least-loaded replica of a large pool without asking every replica.

A replica's outstanding tokens fall step by step during a decode run and change otherwise only
at its own events, after which it tells its watchers (``instance.load_watchers``). From the
step ends of the run in flight, a lower bound of its load follows that holds until a
*deadline*: the value after the next :data:`SEGMENT` steps, valid until the step after them
ends. :class:`LoadIndex` keeps those bounds, over speed, in a heap, and the deadlines in
another; a query first renews the bounds whose deadline has passed (a few per query, whatever
the pool's size), then reads exact loads in the order of the bounds until the next bound
exceeds the best exact load found — usually a handful of replicas. Ties go to the lower
instance id, as ``min`` over ``(load, id)`` does: the answer is the same replica.
"""

from __future__ import annotations

import heapq

SEGMENT = 8          # decode steps a bound covers
_INF = float("inf")


class LoadIndex:
    """Lower bounds of ``outstanding_tokens / speed`` of a pool's replicas (module docstring)."""

    def __init__(self, pool):
        self.pool = list(pool)
        self.by_id = {inst.id: inst for inst in self.pool}
        self.version = {inst.id: 0 for inst in self.pool}
        self.heap: list = []           # (bound / speed, id, version)
        self.deadlines: list = []      # (time the bound expires, id, version)
        for inst in self.pool:
            inst.load_watchers.append(self.update)
            self.update(inst)

    def update(self, inst):
        """``inst``'s load changed (or its bound expired): push a new bound."""
        iid = inst.id
        v = self.version[iid] = self.version[iid] + 1
        out, n, start, ends = inst.load_steps(inst.env.now, SEGMENT + 1)
        if n:
            out -= n * min(SEGMENT, len(ends))
            if len(ends) > SEGMENT:   # (a step past the bound ends then; renewing early is safe)
                heapq.heappush(self.deadlines, (start + float(ends[SEGMENT]) - 1e-9, iid, v))
        heapq.heappush(self.heap, (out / inst.speed, iid, v))
        if len(self.heap) > 3 * len(self.pool) + 16:
            self._compact()

    def _compact(self):
        version = self.version
        self.heap = [e for e in self.heap if version[e[1]] == e[2]]
        heapq.heapify(self.heap)
        self.deadlines = [e for e in self.deadlines if version[e[1]] == e[2]]
        heapq.heapify(self.deadlines)

    def least(self, now: float):
        """The replica with the fewest outstanding tokens over speed now (lowest id on ties)."""
        deadlines, version, by_id = self.deadlines, self.version, self.by_id
        while deadlines and deadlines[0][0] <= now:
            _, iid, v = heapq.heappop(deadlines)
            if version[iid] == v:
                self.update(by_id[iid])
        heap = self.heap
        best_key, best = None, None
        todo = [(heap[0], 0)]          # entries in bound order: a heap of heap positions
        size = len(heap)
        while todo:
            entry, pos = heapq.heappop(todo)
            bound, iid, v = entry
            if best_key is not None and (bound, iid) > best_key:
                break
            if version[iid] == v:
                inst = by_id[iid]
                key = (inst.outstanding_tokens / inst.speed, iid)
                if best_key is None or key < best_key:
                    best_key, best = key, inst
            child = 2 * pos + 1
            if child < size:
                heapq.heappush(todo, (heap[child], child))
                if child + 1 < size:
                    heapq.heappush(todo, (heap[child + 1], child + 1))
        return best


class LoadTable:
    """Exact ``outstanding_tokens / speed`` of every replica of a pool, in numpy rows.

    Row k holds replica k's load when it was last refreshed, its decode run's batch size and
    the end offsets of that run's next :data:`WINDOW` steps (relative to the run's start, as
    the replica compares them): the load now is the row's load less the batch size times the
    steps whose end has passed, for every replica at once. A replica's event marks its row
    for refresh (``load_watchers``); a row whose window has run out is refreshed too. The
    answer is ``min`` over ``(load, id)``, bit for bit: the same float division, the lowest
    id among equal loads.
    """

    WINDOW = 16

    def __init__(self, pool):
        import numpy as np
        self.np = np
        self.pool = sorted(pool, key=lambda i: i.id)
        n = len(self.pool)
        self.row = {inst.id: k for k, inst in enumerate(self.pool)}
        self.load = np.zeros(n, dtype=np.int64)
        self.batch = np.zeros(n, dtype=np.int64)
        self.start = np.zeros(n)
        self.ends = np.full((n, self.WINDOW), _INF)
        self.speed = None              # (read at the first query: the cluster sets speeds last)
        self.dirty = set(range(n))
        for inst in self.pool:
            inst.load_watchers.append(self.mark)

    def mark(self, inst):
        self.dirty.add(self.row[inst.id])

    def _refresh(self, k: int, now: float):
        load, n, start, window = self.pool[k].load_steps(now, self.WINDOW)
        self.load[k], self.batch[k] = load, n
        if n:
            self.start[k] = start
            self.ends[k, :len(window)] = window
            if len(window) < self.WINDOW:
                self.ends[k, len(window):] = _INF

    def least(self, now: float):
        """The replica with the fewest outstanding tokens over speed now (lowest id on ties)."""
        if self.speed is None:
            self.speed = self.np.array([inst.speed for inst in self.pool])
        if self.dirty:
            for k in self.dirty:
                self._refresh(k, now)
            self.dirty.clear()
        passed = self.ends <= (now - self.start)[:, None]
        if passed[:, -1].any():               # windows run out: refresh those rows
            for k in self.np.flatnonzero(passed[:, -1] & (self.batch > 0)).tolist():
                self._refresh(k, now)
            passed = self.ends <= (now - self.start)[:, None]
        load = self.load - self.batch * passed.sum(axis=1)
        return self.pool[int((load / self.speed).argmin())]
