"""One model replica: a SimPy process that batches, times and applies iterations.

The loop: ask the batching policy for a plan, apply its preemptions and admissions, ask the
cost model for the iteration time, ``yield env.timeout(t)``, apply the results (KV blocks,
tokens, first-token and finish times). Events are iterations, never tokens: when the plan is
pure decode, the same plan repeats until a sequence finishes, a request arrives or KV blocks
run short, so the instance advances all those steps in one *decode run* — with per-step times
from the cost model, so the result equals stepping one by one. An arrival during a run wakes
the instance, which finishes the step in flight and plans again. Inside a run only token
counts change, and :attr:`Instance.outstanding_tokens` counts the steps that have ended, so
routers see exactly the state that stepping would show; :meth:`Instance.sync` applies them for
policies that read more (the M/M/c controller, offload policies).

A request handed off to another instance (prefill/decode pools) leaves the batch at its first
token but keeps its KV blocks here until the cluster has shipped them
(:meth:`Instance.release_kv`). An instance with nothing it can run while such blocks are held
waits for them — a prompt that needs them is not refused — and a release during a decode run
with requests waiting ends the run after the step in flight, as an arrival does.

(Running on through completions, the batch shrinking at known steps, was tried: arrivals
interrupt most runs long before their last completion, so timing all those later steps up
front cost more than the events it saved — 2x slower on the Azure conversation trace.)

Prefix caching (:mod:`.prefix_cache`): when ``config.prefix_caching`` is on, the batching
policy supports it and a request carries block-hash keys, the instance builds its cache on the
first lookup; admissions take the hits the plan recorded, prefill progress registers computed
units, and every KV release goes through :meth:`Instance._free_kv`. Without hashed requests
none of this runs.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import simpy

from simcluster.cost.memory import MemoryPlan
from simcluster.policies.batching import Plan, blocks_for
from simcluster.serving.config import InstanceConfig, context_limit
from simcluster.serving.kv import KVCache
from simcluster.serving.prefix_cache import PrefixCache
from simcluster.serving.request import Request


class _DecodeRun:
    """A decode run in flight: its start, its step end offsets (``cum``), its requests, how
    many steps are applied, and the timeline row it has written."""

    __slots__ = ("start", "cum", "reqs", "ctx_sum", "applied", "row")

    def __init__(self, start, cum, reqs, ctx_sum):
        self.start, self.cum, self.reqs, self.ctx_sum = start, cum, reqs, ctx_sum
        self.applied, self.row = 0, None


class Instance:
    """One replica of the model on the devices of its layout."""

    def __init__(self, env: simpy.Environment, iid: int, name: str, model, layout, timer,
                 memory: MemoryPlan, config: InstanceConfig, batcher, sink):
        self.env, self.id, self.name = env, iid, name
        self.model, self.layout, self.timer, self.memory = model, layout, timer, memory
        self.config = config
        self.batcher = batcher.bind(self)
        self.sink = sink                 # .finished(req), .rejected(req), .prefilled(req)
        self.kv = KVCache(memory.kv_capacity_tokens // config.block_size, config.block_size)
        # one sequence lives in one attention data-parallel group (the whole pool when dp = 1)
        self.seq_blocks = min(self.kv.total_blocks,
                              getattr(memory, "seq_capacity_tokens",
                                      memory.kv_capacity_tokens) // config.block_size)
        self.max_model_len = context_limit(model, config)
        self.running: list[Request] = []
        self.waiting: deque[Request] = deque()
        self._outstanding = 0          # as of the last applied step (see outstanding_tokens)
        self._handoffs = 0             # handed-off requests whose KV blocks are still held
        self.speed = 1.0
        self.active = True               # a controller may park an instance: routers skip it
        self.gate: simpy.Event | None = None   # set by the cluster: no iteration starts till it fires
        self.timeline: list[tuple] = []
        self._wake: simpy.Event | None = None
        self._live: _DecodeRun | None = None
        self._admitted = 0
        self.cache: PrefixCache | None = None     # built on the first hashed request
        self._caching = config.prefix_caching and getattr(self.batcher, "prefix_caching",
                                                          False)
        # a sink may watch prefill iterations as they start (KV shipped layer by layer)
        self._prefill_hook = getattr(sink, "prefill_running", None)
        self.process = env.process(self._run())

    # -- requests in -------------------------------------------------------------------------
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
        """Release ``req``'s KV: its own blocks, and its references to cached units."""
        if req.shared_blocks or req.units_held:
            self.kv.release(req.blocks - req.shared_blocks)
            self.cache.release(req)
        else:
            self.kv.release(req.blocks)
        req.blocks = 0

    def submit(self, req: Request):
        req.instance, req.device = self.id, self.layout.devices[0].name
        self.waiting.append(req)
        self._outstanding += req.prefill_target - req.kv_tokens + req.remaining_output
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    # -- the loop ----------------------------------------------------------------------------
    def _run(self):
        env, stalls = self.env, 0
        while True:
            if not self.running and not self.waiting:
                self._wake = env.event()
                yield self._wake
                self._wake = None
                continue
            if self.gate is not None:    # held by the cluster (e.g. a synchronous KV copy)
                yield self.gate
                self.gate = None
                continue
            plan = self.batcher.schedule(env.now)
            self._preempt(plan.preempt)
            self._admit(plan.admit, plan.cached)
            if plan.empty:
                if self._handoffs:   # KV on its way to another instance holds blocks: wait
                    self._wake = env.event()
                    yield self._wake
                    self._wake = None
                    continue
                stalls += 1
                if stalls > 2 or not self.running:
                    self._reject_head("scheduler could not admit it with an empty instance")
                continue
            stalls = 0
            steps = self._steady_steps(plan) if plan.steady else 1
            if steps > 1:
                yield from self._decode_stretch(plan.decode, steps)
            else:
                yield from self._iteration(plan)

    def _iteration(self, plan: Plan):
        start = self.env.now
        for req, chunk in plan.prefill:
            self._alloc(req, req.kv_tokens + chunk)
        for req in plan.decode:
            self._alloc(req, req.kv_tokens + 1)
        chunks = np.fromiter((c for _, c in plan.prefill), dtype=np.int64, count=len(plan.prefill))
        ctx = np.fromiter((r.kv_tokens for r, _ in plan.prefill), dtype=np.int64,
                          count=len(plan.prefill))
        samples = sum(1 for r, c in plan.prefill if r.kv_tokens + c == r.prefill_target)
        n_dec = len(plan.decode)
        ctx_sum = sum(r.kv_tokens for r in plan.decode) + n_dec
        t = self.timer.time(chunks, ctx, n_dec, ctx_sum, samples + n_dec)
        if self._prefill_hook is not None and plan.prefill:
            self._prefill_hook(self, plan.prefill, start, start + t)
        yield self.env.timeout(t)
        end = self.env.now
        # attention work, for utilisation after the run: context and causal pairs of the chunks
        pairs = float(np.dot(chunks, ctx + (chunks + 1) / 2)) if len(chunks) else 0.0
        self._record(start, end, 1, len(plan.prefill), int(chunks.sum()), samples, n_dec,
                     int(ctx.sum()), pairs, ctx_sum)
        cache = self.cache
        for req, chunk in plan.prefill:
            req.kv_tokens += chunk
            self._outstanding -= chunk
            if cache is not None and req.prefix_keys is not None:
                cache.computed(req)         # (before a finish or hand-off releases it)
            if req.kv_tokens == req.prefill_target:
                self._sampled(req, 1, end)
        for req in plan.decode:
            req.kv_tokens += 1
            self._sampled(req, 1, end)

    def _steady_steps(self, plan: Plan) -> int:
        """How many identical pure-decode steps can run before anything changes."""
        decode = plan.decode
        k = min(min([r.output_tokens - r.generated for r in decode]),
                self.config.max_steady_steps)
        if k <= 1:
            return 1
        bs = self.config.block_size
        free = self.kv.free_blocks
        if len(decode) * (k // bs + 1) <= free:      # enough blocks whatever the alignment
            return k
        kv = np.fromiter((r.kv_tokens for r in decode), dtype=np.int64, count=len(decode))
        held = np.fromiter((r.blocks for r in decode), dtype=np.int64, count=len(decode))

        def new_blocks(j):
            return int(np.maximum(0, -(-(kv + j) // bs) - held).sum())
        if new_blocks(k) <= free:
            return k
        lo, hi = 1, k          # new_blocks(lo) <= free < new_blocks(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if new_blocks(mid) <= free else (lo, mid)
        return lo

    def _decode_stretch(self, decode: list[Request], k: int):
        env, start = self.env, self.env.now
        n = len(decode)
        ctx_sum = sum(r.kv_tokens for r in decode) + n
        run = self._live = _DecodeRun(start, np.cumsum(self.timer.decode_steps(n, ctx_sum, k)),
                                      decode, ctx_sum)
        # one event wakes us: the run's end (a timeout's callback) or an arrival (submit)
        wake = self._wake = env.event()
        env.timeout(float(run.cum[-1])).callbacks.append(
            lambda _: None if wake.triggered else wake.succeed())
        yield wake
        self._wake = None
        j = k
        if env.now < start + run.cum[-1]:      # woken by an arrival: finish the step in flight
            j = min(k, int(np.searchsorted(run.cum, env.now - start, side="right")) + 1)
            yield env.timeout(max(0.0, start + float(run.cum[j - 1]) - env.now))
        self._advance(j)
        self._live = None

    @property
    def outstanding_tokens(self) -> int:
        """Prompt and output tokens still to process here, as of now: during a decode run the
        steps that have already ended count as done (a run ends at its first completion, so
        nothing else a router reads — running and waiting requests — changes inside one)."""
        run = self._live
        if run is None:
            return self._outstanding
        done = int(np.searchsorted(run.cum, self.env.now - run.start, side="right"))
        return self._outstanding - len(run.reqs) * (done - run.applied)

    def sync(self, now: float):
        """Apply the steps of the decode run in flight that have ended by ``now`` — for a
        policy that reads per-request token counts or KV blocks mid-run (routers need not:
        :attr:`outstanding_tokens` is already current)."""
        run = self._live
        if run is not None:
            done = int(np.searchsorted(run.cum, now - run.start, side="right"))
            if done > run.applied:
                self._advance(done)

    def _advance(self, upto: int):
        """Apply steps ``applied .. upto`` of the decode run in flight (one timeline row per
        run: a sync's partial advance is extended, not repeated)."""
        run, bs = self._live, self.config.block_size
        j = upto - run.applied
        if j <= 0:             # nothing new (e.g. synced at the run's end, then woken there)
            return
        done, new_blocks = [], 0
        for req in run.reqs:
            kv = req.kv_tokens + j
            need = -(-kv // bs) - req.blocks
            if need > 0:
                new_blocks += need
                req.blocks += need
            req.kv_tokens = kv
            req.generated += j
            if req.generated >= req.output_tokens:
                done.append(req)
        self.kv.alloc(new_blocks)      # (_steady_steps chose the run so that they fit)
        self._outstanding -= len(run.reqs) * j
        if run.row is not None:
            del self.timeline[run.row]
        self._record(run.start, run.start + float(run.cum[upto - 1]), upto, 0, 0, 0,
                     len(run.reqs), 0, 0.0, run.ctx_sum)
        run.row, run.applied = len(self.timeline) - 1, upto
        end = run.start + float(run.cum[upto - 1])
        for req in done:               # (decodes have their first token: no hand-off here)
            req.finish_s = end
            self._release(req)
            self.sink.finished(req)

    # -- state changes -----------------------------------------------------------------------
    def _alloc(self, req: Request, tokens: int):
        need = blocks_for(req, tokens, self.config.block_size)
        if need:
            self.kv.alloc(need)
            req.blocks += need

    def _sampled(self, req: Request, tokens: int, now: float):
        if req.generated == 0:
            req.first_token_s = now
        req.generated += tokens
        self._outstanding -= tokens
        if req.generated >= req.output_tokens:
            req.finish_s = now
            self._release(req)
            self.sink.finished(req)
        elif req.generated == tokens and self.sink.wants_handoff(req):
            # it leaves the batch now; its KV blocks stay until the cluster has shipped them
            self.running.remove(req)
            self._outstanding -= req.remaining_output
            self._handoffs += 1
            self.sink.prefilled(req)

    def release_kv(self, req: Request):
        """Free the KV blocks of a request handed off to another instance, once shipped. A
        request waiting for blocks is planned again now (an instance with nothing it can run
        waits for these blocks rather than reject the request; inside a decode run it finishes
        the step in flight and plans again, as stepping one by one would)."""
        self._free_kv(req)
        self._handoffs -= 1
        wake = self._wake      # blocked on these blocks, or decoding while a request waits
        if wake is not None and not wake.triggered and (self._live is None or self.waiting):
            wake.succeed()

    def _release(self, req: Request):
        self.running.remove(req)
        self._free_kv(req)

    def _preempt(self, victims: list[Request]):
        for req in sorted(victims, key=lambda r: r.admit_seq, reverse=True):
            self.running.remove(req)
            self._free_kv(req)
            # the recompute re-prefills prompt and generated tokens (a decoding request has
            # no prompt work left: its KV is past its prefill target)
            self._outstanding += (req.prompt_tokens + req.generated
                                        - max(0, req.prefill_target - req.kv_tokens))
            req.blocks, req.kv_tokens = 0, 0
            req.prefill_target = req.prompt_tokens + req.generated
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
                req.prefill_start_s = self.env.now
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
        self.timeline.append((self.id, start, end, iters, n_prefill, prefill_tokens,
                              prefill_done, n_decode, self.kv.used_blocks, len(self.waiting),
                              prefill_context, prefill_pairs, decode_context))
