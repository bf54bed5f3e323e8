"""A simulation: a trace's requests arriving at a cluster, run to completion.

    sim = Simulation(trace, model, [InstanceSpec(Layout.uniform(h100), count=4)],
                     router="least_outstanding_tokens")
    results = sim.run()
    results.summary()

Each simulation owns its SimPy environment, its request ids and its instances: two simulations
in one process never interfere.

A trace with block hashes (``Trace.has_block_hashes``) gives every request the chained keys of
its prompt blocks, which the instances' prefix caches look up (``InstanceConfig.prefix_caching``;
the trace's block size must be a whole number of KV blocks).

Requests exist as Python objects only while in flight; what became of each is recorded in
columns (:mod:`.records`). ``run(stream_to=folder)`` writes the request and timeline rows to
Parquet files there as the run goes, so memory does not grow with the trace, and returns
results that read those files when first asked.
"""

from __future__ import annotations

import time
from heapq import heappush
from pathlib import Path
from typing import Callable, Mapping, Sequence

from simcluster.lazy import lazy_module
from simcluster.cluster import Cluster, InstanceSpec
from simcluster.cost import CostModel
from simcluster.errors import InputError
from simcluster.serving.prefix_cache import chain_keys
from simcluster.simulation.energy import power_columns
from simcluster.simulation.records import (REQUEST_FIELDS, TIMELINE_FIELDS, ParquetSink,
                                           RequestLog, StreamedResults)
from simcluster.simulation.results import (ACTIVITY_COLUMNS, Results,
                                           request_frame_from_columns, with_trace_columns,
                                           timeline_frame_from_logs, transfer_frame)
from simcluster.simulation.work import WorkCoefficients, layout_peaks, row_work
from simcluster.engines.envelope import envelope_check
from simcluster.serving.clock import NORMAL, after, drain, environment, tick_queue
from simcluster.serving.request import Request

pd = lazy_module("pandas")     # (imported when a frame is first built)


def cost_provenance(cost_model: CostModel, devices) -> dict:
    """The cost model in data: calibration name, engine model name (None: kernel time only),
    and per device how its rates were obtained (own tables, borrowed curves, datasheet); with
    ``specs``, the device specs a ``$SIMCLUSTER_HWSPECS`` folder gave (a bundled name among
    them read from there instead), by name."""
    from simcluster.hardware.registry import own_spec_files
    cal = cost_model.calibration
    engine = getattr(cost_model, "name", None) or None
    devices = list(devices)
    out = {"calibration": getattr(cal, "name", type(cal).__name__), "engine": engine,
           "devices": {d.name: cal.provenance(d) for d in devices}}
    specs = own_spec_files("devices", [d.name for d in devices])
    if specs:
        out["specs"] = {name: str(path) for name, path in specs.items()}
    return out


ARRIVAL_WINDOW = 1 << 14   # trace rows turned into Python numbers at a time
#: Events processed between two looks at the wall clock when a run reports progress (1,024
#: events take a few milliseconds). A look per event, as before, made a run that reports
#: progress — ``simcluster run`` at a terminal — 7% slower: azure-x1's warm run 0.453 s
#: without, 0.486 s with (CPU, medians of 15, alternated); 0.443 / 0.445 s now.
PROGRESS_EVENTS = 1024


def as_trace(trace):
    """A Trace, a DataFrame of its columns (``Trace.from_frame``) or a trace file's path or
    bundled trace's name (``load_trace``), as a Trace; TypeError for anything else."""
    import os
    import sys

    from simcluster.workload import Trace, load_trace
    frames = sys.modules.get("pandas")      # (not imported: then it cannot be a DataFrame)
    if isinstance(trace, (str, os.PathLike)):
        return load_trace(trace)
    if frames is not None and isinstance(trace, frames.DataFrame):
        return Trace.from_frame(trace)
    if not isinstance(trace, Trace):
        raise TypeError(f"trace: expected a Trace, a DataFrame of its columns, or a trace "
                        f"file's path or bundled name; got {type(trace).__name__}")
    return trace


def as_model(model):
    """A ModelSpec, or a preset's name or config.json's path (``load_model``), as a
    ModelSpec; TypeError for anything else."""
    import os

    from simcluster.models import ModelSpec, load_model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    if not isinstance(model, ModelSpec):
        raise TypeError(f"model: expected a ModelSpec or a preset's name (model_preset, "
                        f"load_model); got {type(model).__name__}")
    return model


def _arguments(trace, model, instances, cost_model):
    """A Simulation's trace, model, instances and cost model as the types it runs on (what
    each may be: its docstring); TypeError naming the argument for anything else."""
    trace, model = as_trace(trace), as_model(model)
    if isinstance(instances, InstanceSpec):
        instances = [instances]
    elif isinstance(instances, (str, bytes, Mapping)) or not hasattr(instances, "__iter__"):
        raise TypeError(f"instances: expected InstanceSpecs (one, or a list of them); got "
                        f"{type(instances).__name__}")
    instances = list(instances)
    for i, spec in enumerate(instances):
        if not isinstance(spec, InstanceSpec):
            raise TypeError(f"instances[{i}]: expected an InstanceSpec; got "
                            f"{type(spec).__name__}")
    if not instances:
        raise ValueError("instances: a cluster needs at least one InstanceSpec")
    if isinstance(cost_model, str):
        cost_model = CostModel(cost_model)
    elif cost_model is not None and not callable(getattr(cost_model, "timer", None)):
        raise TypeError(f"cost_model: expected a CostModel (CostModel(calibration)), an engine "
                        f"model (load_engine) or a calibration's name; got "
                        f"{type(cost_model).__name__}")
    return trace, model, instances, cost_model


def slo_seconds(value, name: str) -> float | None:
    """An SLO argument in seconds: None (none), or a finite number > 0 (a negative or zero SLO
    fails every request, which is a mistake, not a question); InputError on ``name``."""
    import math
    import numbers
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not (math.isfinite(value) and value > 0):
        raise InputError(f"expected None or a number of seconds > 0, got {value!r}",
                         field=name)
    return float(value)


class Simulation:
    """One trace on one cluster configuration."""

    def __init__(self, trace, model, instances: Sequence[InstanceSpec], *,
                 router: str = "round_robin", router_params: Mapping | None = None,
                 cost_model: CostModel | None = None, ttft_slo_s: float | None = None,
                 tpot_slo_s: float | None = None, name: str = "",
                 cluster_factory: Callable = Cluster):
        """``trace``: a :class:`~simcluster.workload.Trace`, a DataFrame of its columns
        (``Trace.from_frame``) or a trace file's path or bundled trace's name
        (``load_trace``); ``model``: a :class:`~simcluster.models.ModelSpec` or a preset's
        name or config.json's path (``load_model``); ``instances``: InstanceSpecs (one, or a
        sequence of them); ``cost_model``: a :class:`~simcluster.cost.CostModel`, an engine
        model (``load_engine``), a calibration's name (``CostModel(name)``) or None
        (``CostModel()``: the datasheet roofline)."""
        if not callable(cluster_factory):
            raise TypeError("cluster_factory must be a callable building the cluster (Cluster, "
                            "or functools.partial(DisaggregatedCluster, kv_link=...)), got "
                            f"{cluster_factory!r}")
        trace, model, instances, cost_model = _arguments(trace, model, instances, cost_model)
        if len(trace) == 0:
            raise ValueError("the trace has no requests")
        self.trace, self.model, self.name = trace, model, name
        self.router_name = router
        self.slo = (slo_seconds(ttft_slo_s, "ttft_slo_s"),
                    slo_seconds(tpot_slo_s, "tpot_slo_s"))
        self.env = environment(float(trace.arrival_s[0]))
        self.cluster = cluster_factory(self.env, model, list(instances), router=router,
                                       router_params=router_params, cost_model=cost_model)
        self.log = self.cluster.log = RequestLog(len(trace))
        self.arrived = 0
        self._ran = False
        self._stream: Path | None = None
        self._results: Results | None = None
        self._hashes = None
        # (the settings each replica runs with: its batching policy may fix some)
        configs = [inst.config for inst in self.cluster.instances]
        if trace.has_block_hashes:
            self._check_block_size(trace.hash_block_tokens, configs)
            self._hashes = trace.extras["hash_ids"]
        self.prefix_caching = self._hashes is not None and any(
            cfg.prefix_caching for cfg in configs)

    def __repr__(self) -> str:
        """One line for a notebook's cell or a prompt."""
        insts = self.cluster.instances
        state = "ran" if self._ran else "not run yet"
        return (f"<Simulation{f' {self.name!r}' if self.name else ''}: {len(self.trace):,} "
                f"requests of {self.trace.name or 'a trace'}, model {self.model.name}, "
                f"{len(insts)} instance(s), router {self.router_name}; "
                f"{state}; .run()>")

    @staticmethod
    def _check_block_size(tokens: int, configs):
        for cfg in configs:
            bs = cfg.block_size
            if cfg.prefix_caching and tokens % bs:
                raise InputError(f"the trace's hash blocks of {tokens} tokens are not a whole "
                                 f"number of KV blocks of {bs} tokens; pick a block_size that "
                                 f"divides {tokens}, or turn prefix_caching off",
                                 field="block_size")

    def _start_arrivals(self):
        """Arrivals as a chain of timeouts, one per distinct arrival time: each callback
        submits the requests arriving now and schedules the next (no process to resume)."""
        env, submit, trace = self.env, self.cluster.submit, self.trace
        # (block keys only where a replica caches: without a cache they change nothing, and
        # chaining them is a tenth of the loop's time on the Mooncake trace)
        hashes = self._hashes if self.prefix_caching else None
        block_tokens = getattr(trace, "hash_block_tokens", 0)
        n = len(trace)
        # the trace's columns as Python numbers, a window at a time (not the whole trace)
        lo = hi = 0
        arr = prompt = out = ()

        def fetch(i):
            nonlocal lo, hi, arr, prompt, out
            lo, hi = i, min(n, i + ARRIVAL_WINDOW)
            arr = trace.arrival_s[lo:hi].tolist()
            prompt = trace.prompt_tokens[lo:hi].tolist()
            out = trace.output_tokens[lo:hi].tolist()

        # (clock.after inline where the environment takes ticks, as the replicas do: see
        # Instance._queue)
        queue = tick_queue(env)

        def arrive(_):
            i = self.arrived
            now = env._now
            while True:
                if i >= hi:
                    fetch(i)
                k = i - lo
                # the clock's time, which may differ from arr[i] by an ulp after timeout()
                req = Request(i, now, prompt[k], out[k])
                if hashes is not None:
                    req.prefix_keys = chain_keys(hashes[i])
                    req.prefix_block_tokens = block_tokens
                submit(req)
                i += 1
                if i == n:
                    break
                if i >= hi:
                    fetch(i)
                t = arr[i - lo]
                if t > now:
                    if queue is not None:
                        heappush(queue, (now + (t - now), NORMAL, next(env._eid), (arrive, None)))
                    else:
                        after(env, t - now, arrive)
                    break
            self.arrived = i

        fetch(0)
        after(env, max(0.0, arr[0] - env.now), arrive)

    def run(self, progress: Callable[[int, int], None] | bool | None = None,
            progress_every_s: float = 0.5, stream_to=None) -> Results:
        """Run until every request has finished or been rejected.

        ``progress(arrived, total)`` is called about every ``progress_every_s`` of wall time;
        ``progress=True`` draws a tqdm bar over arrivals (``tqdm.auto``: a widget in Jupyter)
        once the run has taken two seconds. ``stream_to``: a folder to write
        ``requests.parquet`` and ``timeline.parquet`` into as the run goes (pyarrow), instead
        of keeping the rows in memory.
        """
        if self._ran:
            raise RuntimeError("a Simulation runs once; build a new one to run again")
        # checked before anything runs (a string for progress failed at its first call, after
        # the run; a file for stream_to failed in mkdir), and the simulation can still run
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise TypeError(f"progress: expected True, False, None or a callable "
                            f"f(arrived, total); got {type(progress).__name__}")
        if isinstance(progress_every_s, bool) or not isinstance(progress_every_s, (int, float)) \
                or not 0 <= progress_every_s < float("inf"):
            raise ValueError(f"progress_every_s: expected a number of seconds >= 0, got "
                             f"{progress_every_s!r}")
        if stream_to is not None:
            from simcluster.paths import out_dir
            out_dir(stream_to, "stream_to")
        self._ran = True
        if stream_to is not None:
            self._open_stream(Path(stream_to))
        self._start_arrivals()
        total = len(self.trace)
        bar = None
        if progress is True:
            from simcluster.simulation.progress import arrivals_bar
            progress = bar = arrivals_bar(total, self.name)
        if not progress:
            drain(self.env)
        else:
            last = time.perf_counter()
            while self.env.peek() != float("inf"):
                drain(self.env, PROGRESS_EVENTS)
                now = time.perf_counter()
                if now - last >= progress_every_s:
                    progress(self.arrived, total)
                    last = now
            progress(self.arrived, total)
        if bar is not None:
            bar.close()
        return self.results()

    def provenance(self) -> dict:
        """:func:`cost_provenance` of this simulation's cost model over its devices."""
        devices = {d.name: d for inst in self.cluster.instances for d in inst.layout.devices}
        return cost_provenance(self.cluster.cost_model, devices.values())

    def _open_stream(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self._stream = folder
        self.log.sink = ParquetSink(folder / "requests.parquet", REQUEST_FIELDS)
        timeline = ParquetSink(folder / "timeline.parquet", TIMELINE_FIELDS)
        for inst in self.cluster.instances:
            inst.timeline.sink = timeline
        self._timeline_sink = timeline

    def _instances_frame(self) -> pd.DataFrame:
        rows = []
        for inst in self.cluster.instances:
            devs = inst.layout.devices
            flops, bw = layout_peaks(inst.layout, inst.model.dtype)
            rows.append({"instance": inst.id, "name": inst.name, "layout": inst.layout.describe(),
                         "num_devices": len(devs), "kind": devs[0].kind,
                         "price_usd_per_hour": sum(d.price_usd_per_hour for d in devs),
                         "kv_blocks_total": inst.kv.total_blocks,
                         "block_size": inst.config.block_size, "speed": inst.speed,
                         "peak_flops_per_s": flops, "peak_mem_bw_bytes_per_s": bw,
                         **power_columns(devs)})
        return pd.DataFrame(rows)

    def _check_ended(self):
        missing = len(self.trace) - self.log.ended
        if missing:
            stuck = [r for inst in self.cluster.instances
                     for r in (*inst.running, *inst.waiting)]
            raise RuntimeError(f"{missing} requests neither finished nor rejected"
                               + (f", e.g. {stuck[0]!r}" if stuck else ""))

    def results(self) -> Results:
        """The run's frames (built once: the recorded rows move into them)."""
        if self._results is not None:
            return self._results
        self._check_ended()
        devices = [inst.layout.devices[0].name for inst in self.cluster.instances]
        instances = self._instances_frame()
        transfers = transfer_frame(getattr(self.cluster, "transfers", []))
        ctl = getattr(self.cluster, "controller", None)
        activity = (ctl.activity if ctl is not None and hasattr(ctl, "activity")
                    else pd.DataFrame(columns=ACTIVITY_COLUMNS))
        kw = dict(ttft_slo_s=self.slo[0], tpot_slo_s=self.slo[1], name=self.name,
                  prefix_caching=self.prefix_caching, transfers=transfers, activity=activity,
                  provenance=self.provenance(),
                  envelope=envelope_check(self.cluster.instances, self.cost_model_name()))
        if self._stream is not None:
            self.log.close()
            for inst in self.cluster.instances:
                inst.timeline.compact()
            self._timeline_sink.close()
            coef = WorkCoefficients.of(self.model)
            self._results = StreamedResults(self._stream, self.trace, devices, instances,
                                            bytes_float=self.log.bytes_float,
                                            work=lambda tl: row_work(tl, coef), **kw)
            return self._results
        # (the recorded rows are released as they are copied into frames)
        requests = with_trace_columns(request_frame_from_columns(
            self.log.columns(release=True), self.trace.prompt_tokens,
            self.trace.output_tokens, devices), self.trace)
        timeline = timeline_frame_from_logs([inst.timeline for inst in self.cluster.instances])
        timeline["flops"], timeline["bytes"] = row_work(timeline,
                                                        WorkCoefficients.of(self.model))
        self._results = Results(requests, timeline, instances, **kw)
        return self._results

    def cost_model_name(self) -> str:
        return getattr(self.cluster.cost_model, "name", "") or "engine"
