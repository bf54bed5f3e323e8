"""Commands that simulate and inspect: ``run``, ``trace-info``, ``list``."""

from __future__ import annotations

import sys
import time


def _progress_bar(stream=sys.stderr, after_s: float = 2.0):
    """A progress callback that draws on a terminal once a run has taken ``after_s`` seconds
    (nothing when the stream is not a terminal, e.g. in CI logs)."""
    t0 = time.perf_counter()
    interactive = stream.isatty()

    def draw(done: int, total: int):
        elapsed = time.perf_counter() - t0
        if elapsed < after_s or not interactive:
            return
        frac = done / total if total else 1.0
        bar = "#" * int(30 * frac)
        stream.write(f"\r[{bar:<30}] {done}/{total} requests arrived  {elapsed:5.1f}s")
        if done >= total:
            stream.write("\n")
        stream.flush()
    return draw


def cmd_run(args) -> int:
    from simcluster.experiment import load_experiment
    from simcluster.simulation.results import format_summary
    exp = load_experiment(args.experiment)
    print(f"experiment {exp.name}: {len(exp.trace)} requests, model {exp.model.name}, "
          f"{sum(s.count for s in exp.instances)} instance(s) "
          f"[{'; '.join(f'{s.count}x {s.layout.describe()}' for s in exp.instances)}], "
          f"router {exp.router}", flush=True)
    t0 = time.perf_counter()
    results = exp.run(progress=None if args.quiet else _progress_bar())
    wall = time.perf_counter() - t0
    print(format_summary(results.summary()))
    print(f"simulated in {wall:.2f} s wall ({len(exp.trace) / wall:,.0f} requests/s)")
    if args.out:
        print(f"wrote {results.save(args.out)}")
    return 0


def cmd_trace_info(args) -> int:
    from simcluster.workload import describe, format_description, load_trace
    trace = load_trace(args.file, format=args.format, sort=args.sort)
    print(format_description(describe(trace)))
    return 0


def cmd_list(args) -> int:
    from simcluster import hardware, models
    from simcluster.policies import (BATCHERS, CONTROLLERS, NUMA_PLACEMENTS, OFFLOADS,
                                     PARTITIONS, ROUTERS)
    from simcluster.workload import bundled_traces
    table = {"devices": hardware.list_devices, "links": hardware.list_links,
             "nodes": hardware.list_nodes, "models": models.list_models,
             "routers": lambda: sorted(ROUTERS), "batching": lambda: sorted(BATCHERS),
             "controllers": lambda: sorted(CONTROLLERS),
             "partitions": lambda: sorted(PARTITIONS), "offloads": lambda: sorted(OFFLOADS),
             "numa": lambda: sorted(NUMA_PLACEMENTS),
             "traces": lambda: sorted(bundled_traces()), "engines": _engines}
    for name in table[args.what]():
        print(name)
    return 0


def _engines():
    from simcluster.engines import list_engines
    return list_engines()


def add_commands(sub) -> None:
    r = sub.add_parser("run", help="simulate an experiment TOML (default: the bundled one)")
    r.add_argument("experiment", nargs="?", default=None)
    r.add_argument("--out", help="write requests/timeline/instances CSVs and summary.json here")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)
    t = sub.add_parser("trace-info", help="summarise a trace file or bundled trace")
    t.add_argument("file")
    t.add_argument("--format", default=None)
    t.add_argument("--sort", action="store_true", help="sort out-of-order arrivals")
    t.set_defaults(func=cmd_trace_info)
    ls = sub.add_parser("list", help="list registered specs and policies")
    ls.add_argument("what", choices=["devices", "links", "nodes", "models", "routers",
                                     "batching", "controllers", "partitions", "offloads", "numa",
                                     "traces", "engines"],
                    help="what to list")
    ls.set_defaults(func=cmd_list)
