"""Decode runs of an :class:`~.instance.Instance`: many identical pure-decode steps as one
event (see the instance module's docstring). A mixin of the instance, kept apart so that each
module stays short: how long a run may go on (:meth:`DecodeRuns._steady_steps_group`), starting,
ending and cutting one, the load routers read inside one (and :meth:`DecodeRuns.least_loaded`,
a router's whole scan of it), and applying its steps; and starting the decode iteration that
admits hand-offs, or follows a preemption, together with the run after it
(:meth:`DecodeRuns._start_folded`).
"""

from __future__ import annotations

from bisect import bisect_right
from heapq import heappush

import numpy as np

from simcluster.serving.clock import NORMAL, after, at
from simcluster.serving.request import Request

_INF = float("inf")


class DecodeRun:
    """A decode run in flight: its start, the end offsets of its steps from the start
    (``cum``, an array; ``view``, a memoryview of it, made when a time is first looked up in
    it: see the comment after this class), its batch size, how many steps are applied, its
    timeline row, and — if the plan was not exactly the decode group — the requests it
    advances one by one (``loose``).

    A run that begins with the decode iteration admitting hand-offs or following a
    preemption (:meth:`DecodeRuns._start_folded`) has ``skip`` 1 and that iteration's
    timeline row in ``pre`` (start, requests waiting, KV blocks in use): its ``start`` is
    the end of that first step, whose end offset is 0.0, so every step ends at the float it
    would have ended at as an iteration followed by a run."""

    __slots__ = ("start", "cum", "view", "last", "k", "n", "applied", "row", "cut", "loose",
                 "ctx_sum", "skip", "pre")

    def __init__(self, start, cum, n, loose, ctx_sum):
        self.start, self.cum, self.n, self.loose, self.ctx_sum = start, cum, n, loose, ctx_sum
        self.k = len(cum)
        self.last = float(cum[-1])
        self.view = None
        self.applied, self.row, self.cut = 0, None, False
        self.skip, self.pre = 0, None

    def done_by(self, rel: float) -> int:
        """Steps whose end offset is at most ``rel``."""
        view = self.view
        if view is None:
            view = self.view = memoryview(self.cum)
        return bisect_right(view, rel)

    def end_of(self, j: int) -> float:
        """End offset of step ``j`` (1-based)."""
        view = self.view
        return view[j - 1] if view is not None else self.cum.item(j - 1)


#: The sequential sums of an array (``np.cumsum``'s floats: the same add loop, one at a time,
#: left to right), without ``ndarray.cumsum``'s argument handling: 0.39 against 0.78 us for
#: 22 steps, 0.90 against 1.28 for 154 (``timeit``, minimum of 7 x 50,000 calls; strided
#: views of a step table block, as runs read them). Takes a plain sequence too.
_accumulate = np.add.accumulate


# How a run's step ends are looked up (``DecodeRun.view``; issue 12): ``bisect_right`` over a
# memoryview of the array, made at the first lookup. Its items are Python floats read straight
# from the buffer (the same doubles, so the same counts): 0.14 us a bisection of 150 ends
# against 0.39 in the array itself (a numpy scalar per comparison) and 0.12 us to make,
# against 0.3-0.6 us to make a list of the first 32 ends (0.07 us a bisection). The list at
# the first lookup, with the array bisected past it, was the scheme before; against it (a
# warm run counted alone, ``benchmarks/bench_instructions.py --quick``, thousand instructions
# per request, 0151629 -> this): azure-x1 179.99 -> 178.63, azure-x4 220.46 -> 209.29,
# out-x1 210.25 -> 208.07, out-x16 289.21 -> 275.44, inst-4 212.47 -> 210.18, inst-16
# 254.35 -> 252.89 — most where runs are long or read a few times each.
# Evaluated before and not kept: lists of 128 ends (1-3% slower than 32 by time with 16x
# outputs); no list (array bisections: 1.6-3.7% fewer instructions on one and four
# replicas, 5.0% more on 16, where every run is read ~8 times); the list at the second
# lookup; ``searchsorted`` past the list (1.0% more than ``bisect_right`` on azure-x4); an
# interpolated guess checked with ``item`` (up to 13% more on inst-16).


def _most_steps(k: int, new_blocks, free: int) -> int:
    """The most steps ``j <= k`` whose new KV blocks (``new_blocks(j)``; one step's fit) fit in
    ``free``: ``k`` when ``new_blocks(k)`` fits, otherwise by bisection. (Callers first try
    ``n * (k // block_size + 1)``, which bounds ``new_blocks(k)`` whatever the alignment and
    needs no call.)"""
    if new_blocks(k) <= free:
        return k
    lo, hi = 1, k          # new_blocks(lo) <= free < new_blocks(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if new_blocks(mid) <= free else (lo, mid)
    return lo


class DecodeRuns:
    """The decode-run half of :class:`~.instance.Instance` (it holds the state: ``_live``,
    ``group``, ``kv``, ``_timer``, ``_tl``, ``_pack``, ``_tl_cap``, ``_outstanding``, and
    the queue its ticks go to with their callbacks bound once: ``_queue``, ``_on_run_end``,
    ``_on_run_cut``)."""

    __slots__ = ()         # (the instance's slots hold that state: see Instance.__slots__)

    def _cut_run(self):
        """End the decode run in flight (if any) after the step in flight, then plan again:
        what stepping one by one would do when a request arrives or blocks come free."""
        run = self._live
        if run is not None and not run.cut:
            now = self.env._now
            if now < run.start + run.last:
                run.cut = True
                # run.done_by and run.end_of, inline, and no min/max call: about 2.6 thousand
                # instructions a cut fewer (bench_instructions worker, one tree, thousand a
                # request: azure-x1 167.68 -> 165.50, azure-x4 194.05 -> 191.15, inst-64
                # 255.96 -> 252.72; a cut is 0.8-1.0 a request)
                view = run.view
                if view is None:
                    view = run.view = memoryview(run.cum)
                j = bisect_right(view, now - run.start) + 1      # (the step in flight)
                if j > run.k:
                    j = run.k
                if j <= run.skip:          # (the admitting step ends at its own float)
                    at(self.env, run.start, self._on_run_cut, j)
                else:
                    wait = run.start + view[j - 1] - now
                    if not wait > 0.0:
                        wait = 0.0
                    if self._queue is not None:    # (clock.after inline: Instance._queue)
                        heappush(self._queue, (now + wait, NORMAL, next(self.env._eid),
                                               (self._on_run_cut, j)))
                    else:
                        after(self.env, wait, self._on_run_cut, j)

    def _steady_steps_group(self) -> int:
        """How many identical pure-decode steps of the whole group can run before anything
        changes: the first completion, the step cap, the KV blocks."""
        g = self.group
        k = min(g.first_finish(), self.config.max_steady_steps)
        if k <= 1:
            return 1
        free = self.kv.free_blocks
        if g.n * (k // g.bs + 1) <= free:  # (bounds the blocks of k steps, any alignment)
            return k
        # (what _most_steps' bisection over new_blocks finds, without it: 1 at least)
        return min(k, max(1, g.steps_within(free)))

    def _steady_steps_loose(self, decode: list[Request]) -> int:
        """As :meth:`_steady_steps_group` for a plan that is not exactly the decode group."""
        k = min(min([r.output_tokens - r.generated for r in decode]),
                self.config.max_steady_steps)
        if k <= 1:
            return 1
        bs = self.config.block_size
        free = self.kv.free_blocks
        if len(decode) * (k // bs + 1) <= free:    # (before building the arrays below)
            return k
        kv = np.fromiter((r.kv_tokens for r in decode), dtype=np.int64, count=len(decode))
        held = np.fromiter((r.blocks for r in decode), dtype=np.int64, count=len(decode))

        def new_blocks(j):
            return int(np.maximum(0, -(-(kv + j) // bs) - held).sum())
        return _most_steps(k, new_blocks, free)

    def _start_run(self, k: int, loose: list[Request] | None):
        g = self.group
        if loose is None:
            n = g.n
            ctx_sum = g.base_sum + n * g.clock + n
        else:
            for req in loose:
                if req.group is not None:
                    g.leave(req)
            n, ctx_sum = len(loose), sum(r._kv for r in loose) + len(loose)
        if len(self._tl) >= self._tl_cap:
            self.timeline.compact()        # (no row of this instance is open here)
        # the step end offsets: the sequential sums of the step times
        cum = _accumulate(self._timer.decode_steps(n, ctx_sum, k))
        env = self.env
        now = env._now
        run = self._live = DecodeRun(now, cum, n, loose, ctx_sum)
        if self._queue is not None:        # (clock.after inline: Instance._queue)
            heappush(self._queue, (now + run.last, NORMAL, next(env._eid),
                                   (self._on_run_end, run)))
        else:
            after(env, run.last, self._on_run_end, run)

    def _start_folded(self, plan) -> bool:
        """Start the decode iteration that admits hand-offs, or the one after a preemption
        (plan: the decode group, then the requests admitted with their KV complete; the
        victims already back in the queue), together with the decode run that stepping
        would start when it ends, as one run: one event instead of two. False, with nothing
        changed, unless every step and row comes out as that iteration and run give them:

        - the timer reads single decode steps from its step table, SimPy's queue takes
          absolute times, runs may be longer than one step (``max_steady_steps`` 1 is the
          step-by-step schedule that checks compare with);
        - the batching policy's steady rule is the group's blocks and the queue's head
          (``steady_is_group_blocks``);
        - the run that would follow is a steady one: no member finishes in the first step,
          the second step's blocks are free, and, where requests wait, the policy's
          ``steady_with`` of the blocks free after the first step admits none of them. (Not
          with a prefix cache built: the head's lookup would read the cache after the first
          step's evictions.)

        An arrival or a KV release during the first step cuts the run at that step's end,
        where the iteration would have ended, and plans again there."""
        g, admitted, decode = self.group, plan.admit, plan.decode
        n0 = g.n
        n = n0 + len(admitted)
        if (not (self._fold and self._steady_rule)
                or len(decode) != n or len(self.running) != n
                or decode[:n0] != g.members or decode[n0:] != admitted):
            return False
        waiting = len(self.waiting)
        if waiting and self.cache is not None:
            # (a cache that ``steady_with``'s lookup of the head first builds stays empty
            # through a decode step: no eviction to follow)
            return False
        cfg = self.config
        bs, cap = cfg.block_size, cfg.max_steady_steps
        if cap < 2:
            return False               # (one step per event: the schedule checks compare to)
        ff = g.first_finish()
        alloc = held = 0
        kvs = []
        for req in admitted:
            c = req._kv
            b = -(-c // bs)
            if (req.group is not None or c != req.prefill_target or c <= 0 or req._gen < 1
                    or req._blocks > b):
                return False
            left = req.output_tokens - req._gen
            if left < ff:
                ff = left
            held += b
            alloc += b - req._blocks
            kvs.append(c)
        if ff < 2:
            return False
        free = self.kv.free_blocks - alloc

        if admitted:
            def new_blocks(j):         # the group's and the admitted requests' next j steps
                return g.new_blocks(j) + sum([-(-(c + j) // bs) for c in kvs]) - held
        else:
            new_blocks = g.new_blocks  # (after a preemption: the group's alone)
        first = new_blocks(1)
        # (n * (j // bs + 1) bounds the blocks of j steps, whatever the alignment)
        if waiting or n * (2 // bs + 1) > free:
            second = new_blocks(2)
            if second > free:
                return False           # (the second step would plan again: not steady)
            if waiting and not self.batcher.steady_with(free - first, second - first):
                return False           # (a waiting request admitted after the first step)
        used = self.kv.total_blocks - free + first         # (once the first step's are in)
        self.kv.alloc(alloc)
        for req in admitted:
            req._blocks = -(-req._kv // bs)
            g.join(req)
        # the steps of the run that would start after the first: as _steady_steps_group
        # would size it then (first completion, step cap, blocks: the group's count of the
        # steps after the first, the admitted requests now members with tight blocks)
        k = min(ff - 1, cap)
        if n * ((k + 1) // bs + 1) > free:
            k = min(k, g.steps_within(free - first, 1))     # (>= 1: step 2's blocks fit)
        ctx_sum = g.base_sum + n * g.clock + n
        if len(self._tl) >= self._tl_cap:
            self.timeline.compact()        # (no row of this instance is open here)
        steps = self._timer.decode_steps(n, ctx_sum, k + 1)
        # the end offsets of the run's steps from the first step's end: 0.0, then the
        # sequential sums of steps 2..k+1 (0.0 + s exactly s: step times are positive); one
        # copy and an accumulate, half the time of a cumsum into a slice of an empty array
        cum = np.array(steps)
        cum[0] = 0.0
        cum = _accumulate(cum)
        now = self.env._now
        end1 = now + float(steps[0])
        run = self._live = DecodeRun(end1, cum, n, None, ctx_sum + n)
        run.skip, run.pre = 1, (now, waiting, used)
        at(self.env, end1 + run.last, self._on_run_end, run)
        return True

    def _run_end(self, run):
        if run.cut or run is not self._live:
            return                     # cut short by an arrival: _run_cut took over
        run.cut = True                 # (requests submitted while it ends are planned next)
        self._advance(run.k)
        self._live = None
        if run.loose is not None:
            self._rejoin(run.loose)
        self._next()

    def _run_cut(self, upto):
        run = self._live
        self._advance(upto)
        self._live = None
        if run.loose is not None:
            self._rejoin(run.loose)
        self._next()

    def _rejoin(self, loose):
        g = self.group
        for req in loose:
            if req.group is None and req.finish_s != req.finish_s and g.can_join(req):
                g.join(req)

    @staticmethod
    def least_loaded(instances, scaled=True):
        """The instance of ``instances`` with the fewest outstanding tokens relative to its
        speed, the lowest id on ties: ``min`` over ``(inst.outstanding_tokens / inst.speed,
        inst.id)``, the property read inline — the same integers and the same division,
        without a property call per replica, which was a fifth of a router's scan (callgrind:
        252.19 -> 241.23 thousand instructions a request on 16 replicas, ``bench_instructions
        --quick``). Routers (a lower layer) reach it through any instance.

        ``scaled=False`` where every replica has the same speed (a pool of one device kind;
        the rule of :class:`~simcluster.policies.load_index.LoadTable`): the integer loads
        are compared without the division, the same order and ties (dividing integers below
        2**52 by one positive speed keeps them apart and in order; in a pool of one kind the
        speed is 1.0, the fastest's ``rate / rate``).
        With the clock read once a scan, 4.8 thousand instructions a request fewer on 16
        replicas (237.31 against 242.06), 0.9 on four (206.02 against 206.94)."""
        best, load, bid = None, _INF, -1
        now = instances[0].env._now            # (one simulation: every replica's clock)
        for inst in instances:
            run = inst._live
            if run is None:
                v = inst._outstanding
            else:
                view = run.view
                if view is None:
                    view = run.view = memoryview(run.cum)
                v = inst._outstanding - run.n * (bisect_right(view, now - run.start)
                                                 - run.applied)
            if scaled:
                v /= inst.speed
            if v < load or (v == load and inst.id < bid):
                best, load, bid = inst, v, inst.id
        return best

    @property
    def outstanding_tokens(self) -> int:
        """Prompt and output tokens still to process here, as of now: during a decode run the
        steps that have already ended count as done (a run ends at its first completion, so
        nothing else a router reads — running and waiting requests — changes inside one)."""
        run = self._live
        if run is None:
            return self._outstanding
        view = run.view
        if view is None:
            view = run.view = memoryview(run.cum)
        done = bisect_right(view, self.env._now - run.start)      # (run.done_by, inline)
        return self._outstanding - run.n * (done - run.applied)

    def load_steps(self, now: float, count: int):
        """(outstanding tokens now, decode batch size, run start, end offsets of the next
        ``count`` steps of the run in flight): the load falls by the batch size at each of
        those ends. Batch size 0 and no ends when no decode run is in flight."""
        run = self._live
        if run is None:
            return self._outstanding, 0, 0.0, ()
        done = run.done_by(now - run.start)
        return (self._outstanding - run.n * (done - run.applied), run.n, run.start,
                run.cum[done:done + count])

    def sync(self, now: float):
        """Apply the steps of the decode run in flight that have ended by ``now`` — for a
        policy that reads KV blocks or the timeline mid-run (token counts of decoding
        requests are always current; routers need not: :attr:`outstanding_tokens` is)."""
        run = self._live
        if run is not None:
            done = run.done_by(now - run.start)
            if done > run.applied:
                self._advance(done)

    def _advance(self, upto: int):
        """Apply steps ``applied .. upto`` of the decode run in flight (one timeline row per
        run: a sync's partial advance is extended, not repeated)."""
        run, g = self._live, self.group
        j = upto - run.applied
        if j <= 0:
            return                     # (a sync already applied them)
        view = run.view
        end = run.start + (view[upto - 1] if view is not None
                           else run.cum.item(upto - 1))          # (run.end_of, inline)
        if run.loose is None:
            new_blocks = g.new_blocks(j)
            g.clock += j
            done = g.pop_finished() if upto == run.k else ()
        else:
            bs, new_blocks, done = self.config.block_size, 0, []
            for req in run.loose:
                kv = req._kv + j
                need = -(-kv // bs) - req._blocks
                if need > 0:
                    new_blocks += need
                    req._blocks += need
                req._kv = kv
                req._gen += j
                if req._gen >= req.output_tokens:
                    done.append(req)
        kv = self.kv
        kv.alloc(new_blocks)           # (the run was sized so that they fit)
        self._outstanding -= run.n * j
        run.applied = upto
        if run.pre is not None:
            # the admitting step's row, as its iteration wrote it at its end: the requests
            # waiting then (an arrival during it cut the run there, so it is now; otherwise
            # those at its start) and the blocks in use once its own were allocated
            start, waiting, used = run.pre
            run.pre = None
            self._tl += self._pack(self.id, start, run.start, 1, 0, 0, 0, run.n, used,
                                   len(self.waiting) if self.env._now <= run.start
                                   else waiting, 0, 0.0, run.ctx_sum - run.n)
            if upto == 1:
                return
        row = (self.id, run.start, end, upto - run.skip, 0, 0, 0, run.n,
               kv.total_blocks - kv.free_blocks, len(self.waiting), 0, 0.0, run.ctx_sum)
        if run.row is None:
            run.row = len(self._tl)        # (its offset in the packed rows)
            self._tl += self._pack(*row)
        else:
            self.timeline.pack_into(self._tl, run.row, *row)
        for req in done:               # (decodes have their first token: no hand-off here)
            self._finish(req, end)
