"""One model replica: batches, times and applies iterations, driven by SimPy events.

The loop: ask the batching policy for a plan, apply its preemptions and admissions, ask the
cost model for the iteration time, schedule the iteration's end, apply the results there (KV
blocks, tokens, first-token and finish times) and plan again. Events are iterations, never
tokens: when the plan is pure decode, the same plan repeats until a sequence finishes, a
request arrives or KV blocks run short, so the instance advances all those steps as one
*decode run* — with per-step times from the cost model, so the result equals stepping one by
one. An arrival during a run cuts it: the step in flight finishes and the instance plans again.
Inside a run only token counts change, and :attr:`Instance.outstanding_tokens` counts the
steps that have ended, so routers see exactly the state that stepping would show;
:meth:`Instance.sync` applies them for policies that read more (the M/M/c controller, offload
policies).

A request handed off to another instance (prefill/decode pools) leaves the batch at its first
token but keeps its KV blocks here until the cluster has shipped them
(:meth:`Instance.release_kv`). An instance with nothing it can run while such blocks are held
waits for them — a prompt that needs them is not refused — and a release during a decode run
with requests waiting ends the run after the step in flight, as an arrival does.

(Running on through completions, the batch shrinking at known steps, was tried: arrivals
interrupt most runs long before their last completion, so timing all those later steps up
front cost more than the events it saved — 2x slower on the Azure conversation trace.)

What makes it fast (issue 12; events per request fell from ~6 to ~4, work per event to O(1)
in the batch size):

* The replica is a state machine on SimPy timeouts' callbacks, not a generator process: an
  iteration's end is one timeout whose callback applies it and plans the next; an arrival
  during a run schedules the end of the step in flight itself (no wake-up event); a run cut
  short leaves its end timeout in the queue, ignored when it fires.
* Decoding requests form a :class:`~.decode_group.DecodeGroup`: a run of ``j`` steps is
  ``clock += j``, its KV blocks and first completion come from the group's aggregates.
* A batching policy may answer ``steady_decode(now)`` (every running request decodes, nothing
  else happens), which skips planning when nothing changed.
* The timer binds the batch-size parts of a decode run's step times once per batch size, and
  single iterations are memoised by shape (the cost model is a pure function; :mod:`.steps`).
* A decode replica of a disaggregated cluster admits hand-offs (their KV complete) in a decode
  iteration after which a decode run usually starts; where no request still waiting would be
  admitted after it, the two are one run (:meth:`~.decode_run.DecodeRuns._start_folded`)
  whose steps end at the same floats and whose timeline keeps the iteration's own row: one
  event fewer per hand-off (6.76 -> 5.98 events per request in ``bench_simulator``'s disagg
  row). The decode step that preempts a request under KV pressure is folded into the run
  after it the same way (the victim waits at the head of the queue, and the blocks after
  that step seldom admit it: out-x16, 5.33 -> 5.17 events per request).

Prefix caching (:mod:`.prefix_cache`): when ``config.prefix_caching`` is on, the batching
policy supports it and a request carries block-hash keys, the instance builds its cache on the
first lookup; admissions take the hits the plan recorded, prefill progress registers computed
units, and every KV release goes through :meth:`Instance._free_kv`. Without hashed requests
none of this runs.

The cluster may hold an instance (``gate``, an event: no iteration starts till it fires, e.g.
during a synchronous KV copy), and an instance whose KV blocks are all held by requests on
their way to another instance waits for :meth:`release_kv` instead of rejecting work.

Same-time events: a run's natural end is handled by its timeout's callback directly (it used to
wake the loop through a second event at the same instant), so an event at exactly the same
float time as a run's end may now be handled after it instead of before. Bundled experiments
give identical results (benchmarks/digest_experiments.py).
"""

from __future__ import annotations

import math
from collections import deque
from heapq import heappush

import numpy as np
import simpy

from simcluster.cost.memory import MemoryPlan
from simcluster.policies.batching import Plan
from simcluster.serving.clock import NORMAL, after, tick_queue
from simcluster.serving.config import InstanceConfig, context_limit
from simcluster.serving.decode_group import DecodeGroup
from simcluster.serving.decode_run import DecodeRun, DecodeRuns
from simcluster.serving.kv import KVCache
from simcluster.serving.prefix_cache import PrefixCache
from simcluster.serving.request import Request
from simcluster.serving.rowlog import CHUNK_ROWS, RowLog
from simcluster.serving.steps import iteration_time


#: One timeline row per iteration or decode run (see simulation.results).
TIMELINE_COLUMNS = ("instance", "start_s", "end_s", "iterations", "prefill_seqs",
                    "prefill_tokens", "prefill_done", "decode_seqs", "kv_blocks_used", "waiting",
                    "prefill_context", "prefill_pairs", "decode_context")
TIMELINE_DTYPES = (np.int32, np.float64, np.float64, np.int32, np.int32, np.int32, np.int32,
                   np.int32, np.int32, np.int32, np.int64, np.float64, np.int64)


class _NoMemo(dict):
    """The memo of a timer that counts its calls (an engine model's envelope counter): it
    keeps nothing, so every iteration is asked of the timer, as it counts them."""

    def get(self, key, default=None):
        return default

    def __setitem__(self, key, value):
        pass


def _memo_for(timer, memo):
    if getattr(timer, "envelope", None) is not None:
        return _NoMemo()
    return {} if memo is None else memo


def _folds(env, timer) -> bool:
    """Whether a replica on ``timer`` may fold the decode iteration that admits hand-offs, or
    that preempts, into the run after it (:meth:`~.decode_run.DecodeRuns._start_folded`):
    single decode steps come from the timer's step table, nothing counts iterations, the
    environment takes absolute times (a :class:`~.clock.Clock`)."""
    return (tick_queue(env) is not None and getattr(type(timer), "single_decode_from_table", False)
            and getattr(timer, "envelope", None) is None)


class Instance(DecodeRuns):
    """One replica of the model on the devices of its layout."""

    # Its state as slots. With 42 attributes an instance outgrew the 30 that CPython 3.11
    # keeps inline for an object's attributes, and every ``self.x`` of the event loop went
    # through a dictionary: 178.08 -> 172.18 thousand instructions a request with the slots
    # (azure-x1 --quick, bench_instructions' worker). ``__dict__`` stays, for what a user or a
    # test sets beside them (a patched method, say); the tests check that the instance's own
    # state is all in slots.
    __slots__ = ("env", "id", "name", "model", "layout", "memory", "config", "_timer", "_memo",
                 "_fold", "batcher", "_steady", "_steady_rule", "sink", "kv", "seq_blocks",
                 "max_model_len", "running", "waiting", "group", "_outstanding", "_handoffs",
                 "speed", "_active", "load_watchers", "timeline", "_tl", "_pack", "_tl_cap",
                 "_device_name", "_oom", "profile", "_busy", "_live", "_flight", "_admitted",
                 "_stalls", "gate", "cache", "_caching", "_prefill_hook", "_handoff", "_queue",
                 "_on_iteration_done", "_on_run_end", "_on_run_cut",
                 "__weakref__", "__dict__")

    def __init__(self, env: simpy.Environment, iid: int, name: str, model, layout, timer,
                 memory: MemoryPlan, config: InstanceConfig, batcher, sink,
                 memo: dict | None = None):
        self.env, self.id, self.name = env, iid, name
        self.model, self.layout, self.memory = model, layout, memory
        self.config = config
        # iteration times by shape: shared by the replicas of one timer (see steps.py)
        self._timer, self._memo = timer, _memo_for(timer, memo)
        self._fold = _folds(self.env, timer)
        # The environment's queue where it takes ticks (a Clock), else None: the iteration's
        # end, a run's end and a cut push theirs there themselves, what clock.after does
        # without its call, about 700 instructions an event (bench_instructions worker,
        # thousand instructions a request, one tree: azure-x1 157.77 -> 155.37; 154.79 with
        # the arrivals' own pushes, simulation.py)
        self._queue = tick_queue(env)
        # the callbacks of its ticks, bound once: a bound method made at each push cost about
        # 400 instructions (bench_instructions worker, one tree: azure-x1 154.79 -> 153.11)
        self._on_iteration_done, self._on_run_end, self._on_run_cut = (
            self._iteration_done, self._run_end, self._run_cut)
        self.batcher = batcher.bind(self)
        self._steady = getattr(self.batcher, "steady_decode", None)
        self._steady_rule = getattr(self.batcher, "steady_is_group_blocks", False)
        self.sink = sink                 # .finished(req), .rejected(req), .prefilled(req)
        self.kv = KVCache(memory.kv_capacity_tokens // config.block_size, config.block_size)
        # one sequence lives in one attention data-parallel group (the whole pool when dp = 1)
        self.seq_blocks = min(self.kv.total_blocks,
                              getattr(memory, "seq_capacity_tokens",
                                      memory.kv_capacity_tokens) // config.block_size)
        self.max_model_len = context_limit(model, config)
        self.running: list[Request] = []
        self.waiting: deque[Request] = deque()
        self.group = DecodeGroup(config.block_size)
        self._outstanding = 0          # as of the last applied step (see outstanding_tokens)
        self._handoffs = 0             # handed-off requests whose KV blocks are still held
        self.speed = 1.0
        self._active = True
        self.load_watchers: list = []    # callables(instance) told when the load may change
        self.timeline = RowLog(TIMELINE_COLUMNS, TIMELINE_DTYPES, chunk_rows=CHUNK_ROWS)
        # (the hot path packs rows into the log's buffer itself, and compacts at its cap)
        tl = self.timeline
        self._tl, self._pack, self._tl_cap = tl.rows, tl.pack, tl.cap
        self._device_name = layout.devices[0].name
        # what can_serve checks, fixed for the replica's life (see admits)
        self._oom = bool(memory.oom)
        self.profile = (id(memory), config, self.seq_blocks, self.max_model_len)
        self._busy = False               # an iteration, a run or a wake-up is scheduled
        self._live: DecodeRun | None = None
        self._flight = None              # the single iteration in flight
        self._admitted = 0
        self._stalls = 0
        self.gate: simpy.Event | None = None   # set by the cluster: no iteration starts till it fires
        self.cache: PrefixCache | None = None     # built on the first hashed request
        self._caching = config.prefix_caching and getattr(self.batcher, "prefix_caching",
                                                          False)
        # a sink may watch prefill iterations as they start (KV shipped layer by layer)
        self._prefill_hook = getattr(sink, "prefill_running", None)
        self._handoff = None if getattr(sink, "hands_off_never", False) else sink.wants_handoff

    @property
    def timer(self):
        """The iteration timer (replacing it, e.g. by a NUMA placement, resets its caches)."""
        return self._timer

    @timer.setter
    def timer(self, timer):
        self._timer, self._memo = timer, _memo_for(timer, None)
        self._fold = _folds(self.env, timer)

    @property
    def active(self) -> bool:
        """A controller may park an instance (False): routers then skip it."""
        return self._active

    @active.setter
    def active(self, value: bool):
        self._active = value
        changed = getattr(self.sink, "activity_changed", None)
        if changed is not None:
            changed()

    # -- requests in -------------------------------------------------------------------------
    def admits(self, req: Request) -> bool:
        """``can_serve(req) == ""``, without building the reason (the common case). Replicas
        with the same :attr:`profile` answer the same."""
        if self._oom:
            return False
        cfg = self.config
        if -(-(req.prompt_tokens + req.output_tokens - 1) // cfg.block_size) > self.seq_blocks:
            return False
        if req.prompt_tokens + req.output_tokens > self.max_model_len:
            return False
        return (cfg.chunked_prefill or req.prompt_tokens <= cfg.max_batched_tokens
                or req.kv_tokens >= req.prefill_target)

    def can_serve(self, req: Request) -> str:
        """Empty if this replica could ever serve ``req``, else the reason it cannot."""
        if self.memory.oom:
            return "instance OOM: " + "; ".join(self.memory.oom)
        need = -(-req.max_kv_tokens // self.config.block_size)
        if need > self.seq_blocks:
            return (f"kv_capacity: needs {need} KV blocks of {self.config.block_size} tokens, "
                    f"instance {self.name} has {self.seq_blocks}"
                    + (" per data-parallel group" if self.seq_blocks < self.kv.total_blocks
                       else ""))
        if req.prompt_tokens + req.output_tokens > self.max_model_len:
            return (f"max_model_len: {req.prompt_tokens + req.output_tokens} tokens > "
                    f"{self.max_model_len}")
        if (not self.config.chunked_prefill and req.kv_tokens < req.prefill_target
                and req.prompt_tokens > self.config.max_batched_tokens):
            return (f"max_batched_tokens: prompt of {req.prompt_tokens} tokens > "
                    f"{self.config.max_batched_tokens} without chunked prefill")
        return ""

    # -- prefix cache ------------------------------------------------------------------------
    def prefix_hit(self, req: Request) -> tuple[int, int]:
        """(prompt tokens of ``req`` found cached, free blocks taking them would use): what a
        batching policy plans an admission with. (0, 0) without caching or keys."""
        if not self._caching or req.prefix_keys is None or req.kv_tokens:
            return 0, 0
        if self.cache is None:
            self.cache = PrefixCache(self.kv, req.prefix_block_tokens)
            self.kv.cache = self.cache
        if req.prefix_block_tokens != self.cache.unit:
            return 0, 0
        return self.cache.peek(req)

    def cached_prefix_tokens(self, req: Request) -> int:
        """Leading prompt tokens of ``req`` this replica holds cached (for routers)."""
        cache = self.cache
        if cache is None or req.prefix_keys is None or req.prefix_block_tokens != cache.unit:
            return 0
        return cache.match(req) * cache.unit

    def _free_kv(self, req: Request):
        """Release ``req``'s KV (not a decode group member): its own blocks, and its
        references to cached units."""
        if req.shared_blocks or req.units_held:
            self.kv.release(req._blocks - req.shared_blocks)
            self.cache.release(req)
        else:
            self.kv.release(req._blocks)
        req._blocks = 0

    def submit(self, req: Request):
        req.instance, req.device = self.id, self._device_name
        self.waiting.append(req)
        self._outstanding += req.prefill_target - req._kv + req.output_tokens - req._gen
        for watch in self.load_watchers:
            watch(self)
        if not self._busy:
            self._busy = True
            after(self.env, 0.0, self._next)
            return
        self._cut_run()

    # -- the loop ----------------------------------------------------------------------------
    def _next(self, _=None):
        """Plan and start the next iteration or decode run, or go idle; then tell the load
        watchers (every change of the outstanding tokens is followed by this or submit)."""
        while True:
            if not self.running and not self.waiting:
                self._busy = False
                break
            gate = self.gate
            if gate is not None:       # held by the cluster (e.g. a synchronous KV copy)
                if gate.callbacks is not None:
                    gate.callbacks.append(self._gate_open)
                    break
                self.gate = None       # (fired already: go on at once)
                continue
            steady = self._steady
            if steady is not None and steady(self.env._now):
                g = self.group
                k = g.first_finish()                   # (the usual case of _steady_steps_group)
                if k > self.config.max_steady_steps or g.n * (k // g.bs + 1) > self.kv.free_blocks:
                    k = self._steady_steps_group()
                if k > 1:
                    self._start_run(k, None)
                else:
                    self._start_iteration(Plan(decode=list(self.running)))
                break
            plan = self.batcher.schedule(self.env._now)
            if plan.preempt:
                self._preempt(plan.preempt)
            if plan.admit:
                self._admit(plan.admit, plan.cached)
            if not (plan.prefill or plan.decode):
                if self._handoffs:
                    # KV on its way to another instance holds blocks: wait for them
                    # (a submit or release_kv wakes the instance)
                    self._busy = False
                    break
                self._stalls += 1
                if self._stalls > 2 or not self.running:
                    self._reject_head("scheduler could not admit it with an empty instance")
                continue
            self._stalls = 0
            if (plan.admit or plan.preempt) and not plan.prefill and self._start_folded(plan):
                break                  # (admitting or preempting step and run as one run)
            if not (plan.prefill or plan.preempt or plan.admit):      # steady: pure decode
                decode, g = plan.decode, self.group
                if len(decode) == g.n and decode == g.members:
                    k = self._steady_steps_group()
                    if k > 1:
                        self._start_run(k, None)
                        break
                else:
                    k = self._steady_steps_loose(decode)
                    if k > 1:
                        self._start_run(k, decode)
                        break
            self._start_iteration(plan)
            break
        for watch in self.load_watchers:
            watch(self)

    def _gate_open(self, _ev):
        self.gate = None
        self._next()

    # -- single iterations -------------------------------------------------------------------
    def _start_iteration(self, plan: Plan):
        g, kv, bs = self.group, self.kv, self.config.block_size
        decode, prefill = plan.decode, plan.prefill
        n = g.n
        if n and len(decode) >= n and (decode == g.members if len(decode) == n
                                       else decode[:n] == g.members):
            whole, loose = True, decode[n:]
            kv.alloc(g.step_blocks())
            g.ahead = 1
        else:
            whole, loose = False, decode
            for req in decode:
                if req.group is not None:
                    g.leave(req)
        for req, chunk in prefill:
            need = -(-(req._kv + chunk) // bs) - req._blocks
            if need > 0:
                kv.alloc(need)
                req._blocks += need
        for req in loose:
            need = -(-(req._kv + 1) // bs) - req._blocks
            if need > 0:
                kv.alloc(need)
                req._blocks += need
        if len(prefill) == 1:
            req, chunk = prefill[0]
            chunks, ctx = (chunk,), (req._kv,)
            samples = 1 if req._kv + chunk == req.prefill_target else 0
        else:
            chunks = tuple([c for _, c in prefill])
            ctx = tuple([r._kv for r, _ in prefill])
            samples = sum([1 for r, c in prefill if r._kv + c == r.prefill_target])
        n_dec = len(decode)
        ctx_sum = n_dec
        if whole:
            ctx_sum += g.base_sum + n * g.clock
        if loose:
            ctx_sum += sum([r._kv for r in loose])
        key = (chunks, ctx, n_dec, ctx_sum, samples + n_dec)
        memo = self._memo
        t = memo.get(key)
        if t is None:
            t = iteration_time(memo, self._timer, key)
        env = self.env
        start = env._now
        if self._prefill_hook is not None and prefill:
            self._prefill_hook(self, prefill, start, start + t)
        self._flight = (plan, start, whole, loose, samples, chunks, ctx, ctx_sum)
        if self._queue is not None:        # (clock.after inline: see __init__)
            heappush(self._queue, (start + t, NORMAL, next(env._eid),
                                   (self._on_iteration_done, None)))
        else:
            after(env, t, self._on_iteration_done)
        if len(self._tl) >= self._tl_cap:
            self.timeline.compact()        # (no row of this instance is open here)

    def _iteration_done(self, _=None):
        plan, start, whole, loose, samples, chunks, ctx, ctx_sum = self._flight
        self._flight = None
        end = self.env._now
        g = self.group
        prefill = plan.prefill
        # attention work, for utilisation after the run: context and causal pairs of the chunks
        if len(chunks) == 1:
            c, x = chunks[0], ctx[0]
            pairs = c * (x + (c + 1) / 2)      # (np.dot of one element: the same product)
        elif chunks:
            c, x = np.array(chunks, dtype=np.int64), np.array(ctx, dtype=np.int64)
            pairs = float(np.dot(c, x + (c + 1) / 2))
        else:
            pairs = 0.0
        self._tl += self._pack(self.id, start, end, 1, len(prefill), sum(chunks), samples,
                               len(plan.decode), self.kv.total_blocks - self.kv.free_blocks,
                               len(self.waiting), sum(ctx), pairs, ctx_sum)
        joins = []
        cache = self.cache
        for req, chunk in prefill:
            req._kv += chunk
            self._outstanding -= chunk
            if cache is not None and req.prefix_keys is not None:
                cache.computed(req)         # (before a finish or hand-off releases it)
            if req._kv == req.prefill_target and self._sampled(req, end):
                joins.append(req)
        if whole:
            g.ahead = 0
            g.clock += 1
            self._outstanding -= g.n
            if g.heap[0][0] <= g.clock:
                for req in g.pop_finished():
                    self._finish(req, end)
        for req in loose:
            req._kv += 1
            if self._sampled(req, end):
                joins.append(req)
        for req in joins:
            if g.can_join(req):
                g.join(req)
        self._next()

    # -- state changes -----------------------------------------------------------------------
    def _sampled(self, req: Request, now: float) -> bool:
        """One token sampled for ``req`` (not a group member); True if it stays in the batch."""
        if req._gen == 0:
            req.first_token_s = now
        req._gen += 1
        self._outstanding -= 1
        if req._gen >= req.output_tokens:
            self._finish(req, now)
            return False
        if req._gen == 1 and self._handoff is not None and self._handoff(req):
            # it leaves the batch now; its KV blocks stay until the cluster has shipped them
            self.running.remove(req)
            self._outstanding -= req.output_tokens - req._gen
            self._handoffs += 1
            self.sink.prefilled(req)
            return False
        return True

    def _finish(self, req: Request, now: float):
        req.finish_s = now
        if req.group is not None:
            self.group.leave(req)
        self.running.remove(req)
        if req.shared_blocks or req.units_held:
            self._free_kv(req)
        else:
            self.kv.release(req._blocks)
            req._blocks = 0
        self.sink.finished(req)

    def release_kv(self, req: Request):
        """Free the KV blocks of a request handed off to another instance, once shipped. A
        request waiting for blocks (in the queue, or a prompt part-prefilled by chunks that
        a decode run goes on without) is planned again now (an instance with nothing it can
        run waits for these blocks rather than reject the request; inside a decode run it
        finishes the step in flight and plans again, as stepping one by one would)."""
        free = self.kv.free_blocks
        self._free_kv(req)
        self._handoffs -= 1
        run = self._live
        if run is not None and run.pre is not None and self.env._now < run.start:
            # (freed during a folded admitting step: its row, written later, counts them)
            start, waiting, used = run.pre
            run.pre = (start, waiting, used - (self.kv.free_blocks - free))
        if not self._busy:
            if self.waiting or self.running:    # (idle, maybe waiting for blocks: plan again)
                self._busy = True
                after(self.env, 0.0, self._next)
            # (idle with nothing to plan — half the hand-offs of a prefill pool end so — a
            # wake-up would only find nothing to do: no event; the load did not change)
        elif self.waiting or (run is not None and len(self.running) > run.n):
            # decoding while a request waits, or a running one (a prompt part-prefilled by
            # chunks) sits out the run for want of blocks: cut the run
            self._cut_run()

    def _release(self, req: Request):
        if req.group is not None:
            self.group.leave(req)
        self.running.remove(req)
        self._free_kv(req)

    def _preempt(self, victims: list[Request]):
        for req in sorted(victims, key=lambda r: r.admit_seq, reverse=True):
            if req.group is not None:
                self.group.leave(req)
            self.running.remove(req)
            self._free_kv(req)
            # the recompute re-prefills prompt and generated tokens (a decoding request has
            # no prompt work left: its KV is past its prefill target)
            self._outstanding += (req.prompt_tokens + req._gen
                                  - max(0, req.prefill_target - req._kv))
            req._blocks, req._kv = 0, 0
            req.prefill_target = req.prompt_tokens + req._gen
            req.preemptions += 1
            self.waiting.appendleft(req)

    def _admit(self, admitted: list[Request], cached: dict):
        for req in admitted:
            head = self.waiting.popleft()
            assert head is req, "batching policies admit from the head of the queue, in order"
            hit = cached.get(id(req)) if cached else 0
            if hit:                     # the plan's prefix hit: those tokens skip prefill
                self.cache.acquire(req, hit // self.cache.unit)
                self._outstanding -= hit
                if not req.preemptions:
                    req.cached_tokens = hit
            if math.isnan(req.prefill_start_s):
                req.prefill_start_s = self.env._now
            req.admit_seq = self._admitted
            self._admitted += 1
            self.running.append(req)

    def _reject_head(self, why: str):
        req = self.waiting.popleft()
        req.reason = why
        self._outstanding -= req.prefill_target - req.kv_tokens + req.remaining_output
        self.sink.rejected(req)

    def _record(self, start, end, iters, n_prefill, prefill_tokens, prefill_done, n_decode,
                prefill_context, prefill_pairs, decode_context):
        """One timeline row (columns: simcluster.simulation.results.TIMELINE_COLUMNS)."""
        self._tl += self._pack(self.id, start, end, iters, n_prefill, prefill_tokens,
                               prefill_done, n_decode, self.kv.used_blocks, len(self.waiting),
                               prefill_context, prefill_pairs, decode_context)
