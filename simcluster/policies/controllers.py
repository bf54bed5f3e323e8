"""Pool controllers: how many instances of a pool are active, re-decided over time.

A controller is bound to a cluster (``bind(cluster)``) and runs as its own SimPy process. It
activates and parks instances of one pool (a disaggregated cluster's decode pool) through
``instance.active``: routers send new work to active instances only, and a
parked instance finishes the requests it holds. A disaggregated cluster tells the controller of
every request reaching the decode pool (``handed_off(request, now)``).

``mmc`` — hLLM's Heterogeneous Resource Match Controller. Every ``interval_s`` it measures an
arrival rate lambda over the last ``window_s`` (a sliding window) and a service rate mu of one
instance (a CPU socket), and activates the smallest c with c > lambda/mu whose Erlang-C mean
wait E[W] = P_W / (c mu - lambda) is at most ``max_wait_s``
(:func:`simcluster.policies.queueing.min_servers`; all instances if none suffices, at least
``min_active``). Two readings of the slides' symbols, ``units``:

* ``units = "requests"`` (default): lambda = requests that finished prefill and reached the
  pool per second; mu = requests one socket completes per second while it decodes a full
  continuous batch; E[W] = a request's wait for a free slot. The customer is a request and a
  server a socket's capacity.
* ``units = "batches"`` — the slides' own words: lambda = "mean inter-arrival times of
  *batches* completing the prefill process by the GPU" (the requests one prefill iteration
  hands off are one batch; its rate is counted), 1/mu = "latency of the decoding process": the
  time one socket takes to decode one such batch (the window's mean batch of the window's mean
  request, profiled on the socket's own iteration timer, NUMA placement included), and the
  threshold is a *batch's* wait for a free socket. Each socket serves one batch at a time:
  the dispatcher ``numa_minibatch`` with ``mini_batch = None, hold = true`` is that system.
  The two readings differ by the batch: E[W] per batch is about b x E[W] per request at the
  same utilisation, so a threshold means different things (docs/hllm.md compares them).

mu comes from

* ``mu_source = "model"`` (default): the cost model of the pool's instances. Requests: one
  instance decoding a full batch (``batch``, default ``max_num_seqs`` capped by what its KV
  cache holds) of the window's mean request (prompt and remaining output tokens;
  ``mean_prompt_tokens`` / ``mean_output_tokens`` until the first requests arrive) completes
  ``batch / (output x step)`` requests per second — the capacity of a socket, so c sizes the
  pool for throughput. Batches: 1 / (sum of the step times of decoding the mean batch).
* ``mu_source = "online"``: profiled from the simulation — requests the pool completed in the
  window divided by its busy instance-seconds there (the model's figure until the window has
  a completion); in batch units divided by the mean batch. With ``max_num_seqs = 1`` this is
  the service rate exactly; with continuous batching it is the rate at the batch the load
  produced, which under light load is below capacity, so the controller then errs toward more
  sockets.

Frames: :attr:`MMcController.decisions` (one row per evaluation), :attr:`.activity` (one row
per activation or parking), :meth:`.active_over_time` and :meth:`.usage` (active and busy
seconds and idle fraction per instance).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from simcluster.errors import InputError
from simcluster.lazy import lazy_module
from simcluster.policies.registry import CONTROLLERS
from simcluster.policies.queueing import erlang_c, mean_wait, min_servers

pd = lazy_module("pandas")     # (imported when a frame is first built)

DECISION_COLUMNS = ["time_s", "lambda_per_s", "mu_per_s", "mu_source", "offered_load",
                    "active", "rho", "p_wait", "expected_wait_s", "units", "mean_batch"]
UNITS = ("requests", "batches")


def _load(inst) -> int:
    return len(inst.running) + len(inst.waiting)


@CONTROLLERS.register("mmc")
class MMcController:
    """M/M/c sizing of the active instances of a pool (see module docstring)."""

    def __init__(self, max_wait_s: float = 1.0, window_s: float = 60.0,
                 interval_s: float | None = None, mu_source: str = "model", min_active: int = 1,
                 initial_active: int | None = None, batch: int | None = None,
                 mean_prompt_tokens: float = 1024.0, mean_output_tokens: float = 256.0,
                 units: str = "requests"):
        if mu_source not in ("model", "online"):
            raise ValueError(f"mu_source must be 'model' or 'online', got {mu_source!r}")
        if units not in UNITS:
            raise ValueError(f"units must be one of {UNITS}, got {units!r}")
        self.units = units
        if window_s <= 0 or (interval_s is not None and interval_s <= 0) or max_wait_s < 0:
            raise ValueError("window_s and interval_s must be > 0 and max_wait_s >= 0")
        if min_active < 1:
            raise ValueError(f"min_active must be >= 1, got {min_active}")
        for name, value in (("initial_active", initial_active), ("batch", batch)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not (mean_prompt_tokens > 0 and mean_output_tokens > 0):
            raise ValueError("mean_prompt_tokens and mean_output_tokens must be > 0")
        self.max_wait_s, self.window_s = float(max_wait_s), float(window_s)
        self.interval_s = float(interval_s or window_s)
        self.mu_source, self.min_active = mu_source, int(min_active)
        self.initial_active, self.batch = initial_active, batch
        self.defaults = (float(mean_prompt_tokens), float(mean_output_tokens))
        self._decisions: list[tuple] = []
        self._activity: list[tuple] = []
        self._arrivals: deque = deque()   # (time, prompt kv tokens, remaining output, batch)
        self._wake = None

    # -- binding and notifications --------------------------------------------------------
    def bind(self, cluster) -> "MMcController":
        if not hasattr(cluster, "decode_pool"):
            raise TypeError("the mmc controller sizes a decode pool: it needs a "
                            "DisaggregatedCluster (lambda counts hand-offs to the pool)")
        self.cluster, self.env = cluster, cluster.env
        self.pool = list(cluster.decode_pool)
        self.start_s = self.env.now
        n = len(self.pool) if self.initial_active is None else self.initial_active
        if max(n, self.min_active) > len(self.pool):
            raise InputError(f"initial_active / min_active ({n}, {self.min_active}) exceed the "
                             f"{len(self.pool)} instances of the decode pool",
                             field="controller_params.initial_active")
        n = max(self.min_active, n)
        for k, inst in enumerate(self.pool):
            inst.active = k < n
            self._activity.append((self.start_s, inst.id, inst.active))
        self._done: deque = deque()                                      # finish times
        if self.mu_source == "online":       # completions of the pool, as they happen
            ids = {inst.id for inst in self.pool}
            cluster.finish_listeners.append(
                lambda req: self._done.append(req.finish_s) if req.instance in ids else None)
        self._rows = {inst.id: 0 for inst in self.pool}     # first timeline row in the window
        self.env.process(self._run())
        return self

    def handed_off(self, req, now: float):
        # the prefill iteration that handed it off: its instance and the time it ended
        batch = (req.instance, req.first_token_s)
        self._arrivals.append((now, req.kv_tokens, req.remaining_output, batch))
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    # -- the loop -------------------------------------------------------------------------
    def _run(self):
        while True:
            yield self.env.timeout(self.interval_s)
            lam = self.evaluate()
            if lam == 0 and not any(_load(i) for i in self.pool):
                self._wake = self.env.event()       # nothing to size: sleep till work comes
                yield self._wake
                self._wake = None

    def evaluate(self) -> float:
        """Measure lambda and mu, choose c, apply it; returns lambda."""
        now = self.env.now
        for inst in self.pool:           # decode runs in flight: what has ended by now
            inst.sync(now)
        lo = now - self.window_s
        while self._arrivals and self._arrivals[0][0] <= lo:
            self._arrivals.popleft()
        span = min(self.window_s, now - self.start_s) or self.window_s
        b = self.mean_batch()
        lam = len(self._arrivals) / span / (b if self.units == "batches" else 1.0)
        mu, source = self._mu(lo, now)
        c = min_servers(lam, mu, self.max_wait_s, c_max=len(self.pool),
                        c_min=min(self.min_active, len(self.pool)))
        self._apply(c, now)
        self._decisions.append((now, lam, mu, source, lam / mu, c, lam / (c * mu),
                                erlang_c(lam, mu, c), mean_wait(lam, mu, c), self.units, b))
        return lam

    def mean_batch(self) -> float:
        """Requests per prefill batch among the window's hand-offs (1 before the first)."""
        if not self._arrivals:
            return 1.0
        return len(self._arrivals) / len({a[3] for a in self._arrivals})

    # -- mu ---------------------------------------------------------------------------------
    def _mu(self, lo: float, now: float) -> tuple[float, str]:
        if self.mu_source == "online":
            mu = self._mu_online(lo, now)
            if mu > 0:
                return (mu / self.mean_batch() if self.units == "batches" else mu), "online"
        return (self.model_batch_mu() if self.units == "batches" else self.model_mu()), "model"

    def _request_mix(self) -> tuple[float, float]:
        if not self._arrivals:
            return self.defaults
        a = np.array([(p, o) for _, p, o, _ in self._arrivals], dtype=float)
        return float(a[:, 0].mean()), max(1.0, float(a[:, 1].mean()))

    def model_mu(self) -> float:
        """Requests per second one pool instance completes decoding a full batch of the
        window's mean request, from its iteration timer (mean over the pool's instances)."""
        prompt, out = self._request_mix()
        rates = []
        for inst in self.pool:
            per_req = max(1.0, prompt + out)
            fits = inst.kv.total_blocks * inst.kv.block_size // per_req
            b = int(max(1, min(self.batch or inst.config.max_num_seqs, fits)))
            ctx = prompt + out / 2.0
            empty = np.zeros(0, dtype=np.int64)
            step = inst.timer.time(empty, empty, b, int(round(b * ctx)), b)
            rates.append(b / (out * step))
        return float(np.mean(rates))

    def model_batch_mu(self) -> float:
        """Batches per second one pool instance decodes one at a time: 1 / the decode latency
        of the window's mean batch of its mean request (the slides' 1/mu), from its timer
        (mean of the rates over the pool's instances)."""
        prompt, out = self._request_mix()
        b = max(1, int(round(self.mean_batch())))
        steps = max(1, int(round(out)))
        return float(np.mean([1.0 / float(np.sum(inst.timer.decode_steps(
            b, int(round(b * (prompt + 1))), steps))) for inst in self.pool]))

    def _mu_online(self, lo: float, now: float) -> float:
        while self._done and self._done[0] <= lo:
            self._done.popleft()
        busy = sum(self._busy_since(inst, lo, now) for inst in self.pool)
        return len(self._done) / busy if busy > 0 and self._done else 0.0

    def _busy_since(self, inst, lo: float, now: float) -> float:
        """Busy seconds of ``inst`` in [lo, now], re-read from its timeline each time: a decode
        run's row is rewritten in place as a sync applies more of its steps, so a row read
        once may have grown since (its rows are in time order; only the last can grow)."""
        rows, k = inst.timeline, self._rows[inst.id]
        while k < len(rows) - 1 and rows[k][2] <= lo:
            k += 1
        self._rows[inst.id] = k
        return sum(max(0.0, min(r[2], now) - max(r[1], lo)) for r in rows[k:])

    # -- activation -------------------------------------------------------------------------
    def _apply(self, c: int, now: float):
        active = [i for i in self.pool if i.active]
        if c > len(active):     # wake the parked ones still draining first, then by id
            parked = sorted((i for i in self.pool if not i.active),
                            key=lambda i: (-_load(i), i.id))
            for inst in parked[:c - len(active)]:
                inst.active = True
                self._activity.append((now, inst.id, True))
                self.cluster.capacity_changed(inst)
        elif c < len(active):   # park the least loaded
            for inst in sorted(active, key=lambda i: (_load(i), -i.id))[:len(active) - c]:
                inst.active = False
                self._activity.append((now, inst.id, False))

    # -- frames -----------------------------------------------------------------------------
    @property
    def decisions(self) -> pd.DataFrame:
        return pd.DataFrame(self._decisions, columns=DECISION_COLUMNS)

    @property
    def activity(self) -> pd.DataFrame:
        """One row per change: time_s, instance, active (the initial state at bind time)."""
        return pd.DataFrame(self._activity, columns=["time_s", "instance", "active"])

    def active_over_time(self) -> pd.DataFrame:
        """Active instance count after each change: time_s, active."""
        return active_over_time(self.activity)

    def usage(self, end_s: float | None = None) -> pd.DataFrame:
        """Per instance of the pool: active_s, busy_s and idle_fraction (of active time)
        from the controller's start to ``end_s`` (default: now)."""
        parts = [inst.timeline.columns() for inst in self.pool]
        timeline = pd.DataFrame({k: np.concatenate([p[k] for p in parts])
                                 for k in ("instance", "start_s", "end_s")})
        return usage_frame(timeline, self.activity, self.start_s,
                           self.env.now if end_s is None else end_s)

    def idle_fraction(self, end_s: float | None = None) -> float:
        """Idle share of the pool's active instance-seconds (the CPU idle fraction)."""
        return idle_fraction(self.usage(end_s))


def active_over_time(activity: pd.DataFrame) -> pd.DataFrame:
    """Active count after each change of an ``activity`` frame (time_s, instance, active)."""
    state: dict = {}
    out = []
    for t, inst, on in activity.itertuples(index=False):
        state[inst] = bool(on)
        out.append((t, sum(state.values())))
    df = pd.DataFrame(out, columns=["time_s", "active"])
    return df.groupby("time_s", as_index=False).last()


def usage_frame(timeline: pd.DataFrame, activity: pd.DataFrame, start_s: float,
                end_s: float) -> pd.DataFrame:
    """Active, busy and idle seconds and idle fraction of active time per instance over
    [start_s, end_s]. ``activity`` lists (time_s, instance, active) changes; an instance with
    no row is active throughout. ``busy_s`` counts iterations (``timeline`` rows), also those
    of a parked instance finishing its requests; idle = active and not busy."""
    rows = []
    for inst in sorted(set(activity.instance) | set(timeline.instance)):
        ch = activity[activity.instance == inst].sort_values("time_s", kind="stable")
        times = list(ch.time_s) + [end_s]
        states = list(ch.active)
        if not states or times[0] > start_s:
            times, states = [start_s] + times, [True] + states
        spans = [(max(a, start_s), min(b, end_s)) for a, b, on
                 in zip(times, times[1:], states) if on and min(b, end_s) > max(a, start_s)]
        tl = timeline[timeline.instance == inst]
        s, e = tl.start_s.to_numpy(), tl.end_s.to_numpy()
        busy = float(np.clip(np.minimum(e, end_s) - np.maximum(s, start_s), 0, None).sum())
        active_s = sum(b - a for a, b in spans)
        busy_active = sum(float(np.clip(np.minimum(e, b) - np.maximum(s, a), 0, None).sum())
                          for a, b in spans)
        idle = max(0.0, active_s - busy_active)
        rows.append((inst, active_s, busy, idle, idle / active_s if active_s > 0 else np.nan))
    return pd.DataFrame(rows, columns=["instance", "active_s", "busy_s", "idle_s",
                                       "idle_fraction"])


def idle_fraction(usage: pd.DataFrame) -> float:
    """The pool's idle fraction: idle over active instance-seconds of a :func:`usage_frame`."""
    active = float(usage.active_s.sum())
    return float(usage.idle_s.sum()) / active if active > 0 else float("nan")
