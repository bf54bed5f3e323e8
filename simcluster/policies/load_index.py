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

:class:`LoadTable` (the router's default) reads every replica's exact load at once instead:
one sorted numpy array of every replica's next decode-step ends, searched in one call (in
pools of hundreds, a matrix of them compared at once).
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from functools import partial

import numpy as np

SEGMENT = 8          # decode steps a bound covers
_INF = float("inf")
_UNREAD = object()


def speeds_differ(pool) -> bool:
    """Whether the replicas of ``pool`` have more than one speed. Where they do not (a pool of
    one device kind: every speed is 1.0, the fastest's ``rate / rate``), loads compare as
    integers, undivided: dividing integers below 2**52 by one positive speed keeps their
    order and ties. (Read at a router's first choice: the cluster sets speeds last.)"""
    return len({inst.speed for inst in pool}) > 1


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
    """Exact ``outstanding_tokens / speed`` of every replica of a pool, in numpy arrays.

    Replica k has the end offsets of the next few steps of its decode run in flight (its
    *window*; relative to the run's start, as the replica compares them), the load at the
    window's start, the run's batch size and start; the load now is that load less the batch
    size times the window's steps ended by ``now - start``. How the ended steps of every
    replica are counted at once depends on the pool's size:

    - below :data:`MATRIX_FROM` replicas, replica k owns a block of :data:`WINDOW` + 2 slots
      of one complex array, ``keys``: its window's step ends as ``k + 1j * end``, between
      ``k - 1j * inf`` and ``k + 1j * inf``. numpy orders complex numbers by real part, then
      imaginary part, so the array is sorted, and one ``searchsorted`` of ``k + 1j * (now -
      start_k)`` for every k gives, in block k, its first slot plus the steps ended;
    - from :data:`MATRIX_FROM` replicas on, the windows (:data:`MATRIX_WINDOW` steps) are the
      columns of a matrix, compared with every ``now - start_k`` and summed per column (the
      search's cost per replica grows with the log of the pool's slots, the comparison's
      with the window: on 1,024 replicas the comparison of 16-step windows is the cheaper).

    Kept as ``base_k = load_k + batch_k * slot_k`` (integers, exact; ``slot_k`` the search's
    answer with no step ended, 0 for the matrix), the load is ``base - batch * count``: a
    query is five numpy calls with the search (the relative times, the count, the product,
    the difference, ``argmin``), six with the matrix (a comparison and a sum count), one more
    where speeds differ (a division before ``argmin``).

    A replica's event rewrites its window at once (``load_watchers``): a request submitted
    mid-run changes ``base`` only; no run in flight makes the batch size 0 (the step ends left
    from an earlier run then count nothing); a new run takes a new window, from the run's step
    ends, without a search when the run starts now. A window is renewed (from the steps not
    ended by then) at the first query after its conservative expiry, with those due within an
    eighth of a window's span. The answer is ``min`` over ``(load, id)``, bit for bit: the
    same float comparisons of step ends, the same float division (none when every replica has
    the same speed — it preserves the order of integer loads below 2**52, so the lowest id
    among equal loads is the same), the lowest id among equal loads (``argmin`` takes the
    first; replicas are in id order).
    """

    #: Steps of a run a window holds: a longer window is renewed less often (a renewal costs
    #: a few numpy calls per window renewed) and makes the search a little longer (its cost
    #: grows with the log of the slots). On 64 H100 replicas of Llama-2-7B at 5 req/s each:
    #: 1.3 renewals per 100 queries at 64, 5.4 at 32, 12.9 at 16.
    WINDOW = 64
    #: Pools from this size on count ended steps with the matrix (class docstring), of windows
    #: this long (the comparison's cost grows with the window). Event loop CPU per request,
    #: Llama-2-7B on H100 replicas at 5 req/s each, search against matrix (medians of 3,
    #: alternated): 128 replicas 46 / 49 us, 256 70 / 65, 512 85 / 75, 1,024 125 / 96.
    MATRIX_FROM = 256
    MATRIX_WINDOW = 16

    def __init__(self, pool):
        self.pool = sorted(pool, key=lambda i: i.id)
        n = len(self.pool)
        if n >= self.MATRIX_FROM:
            w = self.window = self.MATRIX_WINDOW
            self.matrix = np.full((w, n), _INF)      # column k: replica k's window
            windows = [self.matrix[:, k] for k in range(n)]
            self.slot = [0] * n
            self.rel = np.zeros(n)                   # now - start_k
        else:
            w = self.window = self.WINDOW
            s, self.matrix = w + 2, None
            self.keys = np.empty(n * s, dtype=complex)
            self.keys.real = np.repeat(np.arange(n, dtype=float), s)
            ends = self.keys.imag                    # (a view: written through)
            ends[:] = _INF
            ends[::s] = -_INF
            windows = [ends[k * s + 1:k * s + 1 + w] for k in range(n)]    # k's window
            self.slot = [k * s + 1 for k in range(n)]
            self.query = np.arange(n, dtype=float) + 0j   # k + 1j * (now - start_k)
            self.rel = self.query.imag
        self.base = np.zeros(n, dtype=np.int64)      # load + batch * slot (class docstring)
        self.batch = np.zeros(n, dtype=np.int64)     # 0: no decode run in flight
        self.start = np.zeros(n)
        self.expiry = np.full(n, _INF)               # when replica k's window may run out
        self.next_expiry = _INF                      # at most the least of them
        self.span = 0.0                              # duration of the last full window
        self.runs: list = [None] * n                 # the run whose window replica k has
        self.first = [0] * n                         # that run's steps before the window
        self.filled = [0] * n                        # finite step ends in k's window
        self.speed = _UNREAD          # (read at the first query: the cluster sets speeds last)
        # the query's clock, as a 0-d array: numpy subtracts an array from one in about half
        # the time it takes with a Python float, which it converts first (the same float64
        # subtraction). With the product and difference written in place and the argmin
        # not made an int: 269.66 -> 268.79 thousand instructions a request, inst-64 --quick
        # (bench_instructions' count, old and new query in one tree)
        self.clock = np.zeros(())
        # marks write through memoryviews of the arrays: an item or a slice written by a
        # memoryview skips numpy's indexing, most of a mark's cost (the arrays never move)
        self._ends = [memoryview(e) for e in windows]
        self._infs = memoryview(np.full(w, _INF))
        self._base, self._batch = memoryview(self.base), memoryview(self.batch)
        self._start, self._expiry = memoryview(self.start), memoryview(self.expiry)
        for k, inst in enumerate(self.pool):
            inst.load_watchers.append(partial(self.mark, k))
            self.mark(k, inst)

    def mark(self, k: int, inst):
        """``inst``'s load changed: rewrite its window (``k``: its row, bound in the
        watcher, which saves looking it up at each of its events).

        Reads the replica's load state inline, as its own scan does
        (:meth:`~simcluster.serving.decode_run.DecodeRuns.least_loaded`): the decode run in
        flight (``_live``: None, or a run with its step ends ``cum`` and ``applied`` steps
        applied) and the outstanding tokens once those are (``_outstanding``), so ``base``,
        the load as if none of the run's steps had ended, is ``_outstanding + n *
        applied``; the clock is the environment's ``_now``. A method returning them and the
        clock's property cost about 640 instructions a call: 252.72 -> 249.06 thousand a
        request on 64 replicas read inline (``bench_instructions`` worker, one tree)."""
        run = inst._live
        base = inst._outstanding if run is None else inst._outstanding + run.n * run.applied
        if run is None:
            if self.runs[k] is not None:
                self.runs[k] = None
                self._batch[k] = 0
                self._expiry[k] = _INF
            self._base[k] = base
        elif run is self.runs[k]:      # (a submit mid-run: the same window, a new load)
            self._base[k] = base + run.n * (self.slot[k] - self.first[k])
        else:
            self._window(k, run, base, inst.env._now)

    def _window(self, k: int, run, base: int, now: float):
        """Replica k's window from ``run``'s steps not ended by ``now``."""
        rel = now - run.start
        view = run.view
        if view is None:
            view = run.view = memoryview(run.cum)
        # (a run starting now has no step ended yet: its step times are positive — but for
        # the admitting step of a run that begins with one, ``skip``, whose end offset is 0.0)
        d = bisect_right(view, rel) if rel > 0.0 or run.skip else 0     # (run.done_by)
        w = self.window
        m = run.k - d
        if m > w:
            m = w
        ends, filled = self._ends[k], self.filled[k]
        ends[:m] = view[d:d + m]
        if m < filled:
            ends[m:filled] = self._infs[:filled - m]
        self.filled[k] = m
        self._base[k] = base + run.n * (self.slot[k] - d)
        self._batch[k] = run.n
        self._start[k] = run.start
        self.runs[k], self.first[k] = run, d
        if m == w and d + m < run.k:
            # the window runs out when fl(now - start) >= its last end: not before this
            # (a margin far above the rounding of the two additions, below a microsecond)
            last = view[d + m - 1]
            self.span = last - view[d]
            end = run.start + last
            e = end - 1e-12 * (1.0 + abs(end))
            self._expiry[k] = e
            if e < self.next_expiry:
                self.next_expiry = e
        else:
            self._expiry[k] = _INF     # (the run ends inside the window: its end is an event)

    def _renew(self, now: float):
        # with the windows within an eighth of a window's span of running out: renewing one
        # early is exact, and a renewal's fixed numpy calls are then shared by a few windows
        for k in np.flatnonzero(self.expiry <= now + self.span / 8).tolist():
            self.runs[k] = None            # (renewed early at worst: the window is exact)
            self.mark(k, self.pool[k])
        self.next_expiry = float(self.expiry.min())

    def least(self, now: float):
        """The replica with the fewest outstanding tokens over speed now (lowest id on ties)."""
        speed = self.speed
        if speed is _UNREAD:
            speed = self.speed = (np.array([inst.speed for inst in self.pool])
                                  if speeds_differ(self.pool) else None)
        if now >= self.next_expiry:
            self._renew(now)
        clock = self.clock
        clock[()] = now
        np.subtract(clock, self.start, self.rel)
        if self.matrix is None:
            count = self.keys.searchsorted(self.query, "right")
        else:
            count = (self.matrix <= self.rel).sum(axis=0)
        load = np.subtract(self.base, np.multiply(self.batch, count, count), count)
        if speed is not None:
            load = load / speed
        return self.pool[load.argmin()]
