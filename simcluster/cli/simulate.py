"""Commands that simulate and inspect: ``run``, ``trace-info``, ``list``."""

from __future__ import annotations

import sys
import time


def header(exp, sim, overrides=None) -> str:
    """What is about to run: trace and offered rate, model, instances, router, cost model (and
    the overrides the experiment was run with)."""
    from simcluster.experiment.overrides import as_mapping
    from simcluster.simulation.results import format_provenance
    t = exp.trace
    sets = as_mapping(overrides)
    with_sets = (" with " + ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                                      for k, v in sets.items())) if sets else ""
    lines = [f"experiment {exp.name}{with_sets}: {len(t)} requests of {t.name or 'a trace'}, "
             f"offered {t.rate_per_s:.4g} req/s over {t.span_s:.6g} s; model {exp.model.name}; "
             f"{sum(s.count for s in exp.instances)} instance(s) "
             f"[{'; '.join(f'{s.count}x {s.layout.describe()}' for s in exp.instances)}], "
             f"router {exp.router}",
             format_provenance(sim.provenance())]
    oom: dict[str, list[str]] = {}
    for inst in sim.cluster.instances:
        for line in inst.memory.oom:
            oom.setdefault(line, []).append(inst.name)
    for line, names in oom.items():
        who = names[0] if len(names) == 1 else f"{len(names)} instances ({names[0]}, ...)"
        lines.append(f"  {who}: the model does not fit: {line}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    from simcluster.cli.checks import out_dir, out_file
    from simcluster.experiment import load_experiment
    from simcluster.simulation.results import format_summary, format_utilisation
    out = out_dir(args.out)               # checked before the run, not after it
    plots = out_dir(args.plots, "--plots")
    timeline = out_file(args.timeline_out, "--timeline-out")
    exp = load_experiment(args.experiment, overrides=args.sets)
    sim = exp.simulation()
    print(header(exp, sim, args.sets), flush=True)
    t0 = time.perf_counter()
    results = sim.run(progress=not args.quiet and sys.stderr.isatty())
    wall = time.perf_counter() - t0
    failure = results.failure()
    if failure:             # (a configuration that cannot serve: bad input, exit 2)
        print(f"simcluster: error: this configuration served nothing: {failure}",
              file=sys.stderr)
        if out is not None:
            print(f"wrote {results.save(out)}")
        return 2
    print(format_summary(results.summary()))
    kinds = results.rejections()
    if len(kinds):             # (each request's own reason is in requests.csv: --out)
        print(f"rejected requests by reason ({int(kinds.requests.sum())}; each request's "
              "reason in requests.csv with --out):")
        for row in kinds.itertuples():
            print(f"  {row.requests:>8} x {row.kind} (e.g. {row.example})")
    print("utilisation per instance (achieved over the devices' peaks, over the span):")
    print(format_utilisation(results.utilisation()))
    print(f"simulated in {wall:.2f} s wall ({len(exp.trace) / wall:,.0f} requests/s)")
    if out is not None:
        print(f"wrote {results.save(out)}")
    if plots is not None:
        from simcluster.analysis.plots import run_figures
        from simcluster.cli.common import write_figures
        write_figures(run_figures(results), plots)
    if timeline is not None:
        from simcluster.analysis.perfetto import write_chrome_trace
        info = write_chrome_trace(results, timeline, window_s=args.timeline_window,
                                  max_events=args.timeline_max_events)
        print(f"wrote {timeline}: {info['timeline_rows']} of "
              f"{info['timeline_rows_total']} timeline rows, {info['kv_handoffs']} KV "
              f"hand-offs, window {info['window_s'][0]:.6g}-{info['window_s'][1]:.6g} s "
              f"({info['note']}); open it at https://ui.perfetto.dev")
    return 0


def _window(text: str):
    import argparse
    import math
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START,END in seconds, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise argparse.ArgumentTypeError(f"expected finite START,END in seconds, got {text!r}")
    if hi <= lo:
        raise argparse.ArgumentTypeError(f"expected END > START, got {text!r}")
    return lo, hi


def cmd_trace_info(args) -> int:
    from simcluster.workload import describe, format_description, load_trace
    trace = load_trace(args.file, format=args.format, sort=args.sort)
    print(format_description(describe(trace)))
    return 0


def cmd_list(args) -> int:
    from simcluster.policies import (BATCHERS, CONTROLLERS, NUMA_PLACEMENTS, OFFLOADS,
                                     PARTITIONS, ROUTERS)
    policies = {"routers": ROUTERS, "batching": BATCHERS, "controllers": CONTROLLERS,
                "partitions": PARTITIONS, "offloads": OFFLOADS, "numa": NUMA_PLACEMENTS}
    registry = policies.get(args.what)
    if registry is not None:   # a policy: its name, its params (defaults) and what it does
        width = max(map(len, registry), default=0)
        for name in sorted(registry):
            print(f"{name:<{width}}  {registry.describe(name)}")
        return 0
    specs = {"devices": _device_rows, "links": _link_rows, "models": _model_rows,
             "nodes": _node_rows, "traces": _trace_rows, "engines": _engine_rows,
             "experiments": _experiment_rows, "searches": _search_rows}
    # a spec: its name, then the figures a choice turns on
    rows = [[str(c) for c in row] for row in specs[args.what]()]
    cols = list(zip(*rows))
    widths = [max(map(len, c)) for c in cols]
    right = [all(_number(v) or v == "-" for v in c[1:]) for c in cols]   # figures
    for row in rows:
        print("  ".join(c.rjust(w) if r else c.ljust(w)
                        for c, w, r in zip(row, widths, right)).rstrip())
    return 0


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _g(x, scale=1.0) -> str:
    return "-" if x is None else f"{x / scale:.4g}"


def _own(rows: list, folder: str) -> list:
    """With ``$SIMCLUSTER_HWSPECS`` set, a last column saying which specs it gave (a bundled
    name among them read from there)."""
    from simcluster.hardware.registry import own_spec_files
    own = own_spec_files(folder, [r[0] for r in rows[1:]])
    if not own:
        return rows
    return [rows[0] + ("spec",)] + [r + ("SIMCLUSTER_HWSPECS" if r[0] in own else "bundled",)
                                    for r in rows[1:]]


def _device_rows() -> list:
    from simcluster.hardware import list_devices, load_device
    rows = [("name", "kind", "memory_GiB", "mem_TB/s", "bf16_TFLOP/s", "usd_per_h", "tdp_W")]
    for name in list_devices():
        d = load_device(name)
        peak = d.peak_flops.get("bf16") or max(d.peak_flops.values(), default=None)
        rows.append((d.name, d.kind, _g(d.mem_bytes, 2**30), _g(d.mem_bw_bytes_per_s, 1e12),
                     _g(peak, 1e12), _g(d.price_usd_per_hour), _g(d.tdp_w)))
    return _own(rows, "devices")


def _link_rows() -> list:
    from simcluster.hardware import list_links, load_link
    rows = [("name", "kind", "GB/s", "latency_us")]
    for name in list_links():
        k = load_link(name)
        rows.append((k.name, k.kind, _g(k.bw_bytes_per_s, 1e9), _g(k.latency_s, 1e-6)))
    return _own(rows, "links")


def _model_rows() -> list:
    from simcluster.models import list_models, model_preset
    rows = [("name", "params_B", "active_B", "layers", "heads", "kv_heads", "context",
             "KV_KiB_per_token", "moe")]
    for name in list_models():
        m = model_preset(name)
        moe = ("-" if m.moe is None
               else f"{m.moe.num_experts} experts, top-{m.moe.experts_per_token}")
        rows.append((m.name, _g(m.params, 1e9), _g(m.active_params, 1e9), m.num_layers,
                     m.num_heads, m.num_kv_heads, m.max_position,
                     _g(m.kv_bytes_per_token, 1024), moe))
    return rows


def _counted(pairs) -> str:
    return ", ".join(f"{n}x {name}" for name, n in pairs) or "-"


def _node_rows() -> list:
    from simcluster.hardware import list_nodes, load_node
    rows = [("name", "devices", "sockets", "intra_link", "network_link", "host_link",
             "socket_link")]
    for name in list_nodes():
        n = load_node(name)
        rows.append((n.name, _counted(n.devices), _counted(n.sockets), n.intra_link or "-",
                     n.inter_node_link or "-", n.host_link or "-", n.socket_link or "-"))
    return rows


def _trace_rows() -> list:
    from simcluster.workload import bundled_traces, describe, load_trace
    rows = [("name", "requests", "span_s", "req_per_s", "prompt_mean", "prompt_p99",
             "output_mean", "output_p99", "prefix_hashes")]
    for name in sorted(bundled_traces()):
        d = describe(load_trace(name))
        tokens = [f"{d[f'{k}_tokens_{q}']:.0f}" for k in ("prompt", "output")
                  for q in ("mean", "p99")]
        rows.append((name, d["requests"], _g(d["span_s"]), _g(d["rate_per_s"]), *tokens,
                     "yes" if "hash_ids" in d["extras"] else "no"))
    return rows


def _experiment_rows() -> list:
    from collections import Counter

    from simcluster.experiment import bundled_experiments, load_experiment
    # (replicas last: a pool of parametric accelerators spells each design, 110 characters)
    rows = [("name", "model", "trace", "requests", "router", "replicas")]
    for name in bundled_experiments():
        e = load_experiment(name)
        pools = []
        for spec in e.instances:
            ds = spec.layout.devices      # a replica: one device, or a parallel group
            one = ds[0].name if len(ds) == 1 else "[" + " + ".join(
                f"{n}x {name}" for name, n in Counter(d.name for d in ds).items()) + "]"
            pools.append(f"{spec.pool + ' ' if spec.pool else ''}{spec.count}x {one}")
        rows.append((name, e.model.name, e.trace.name, len(e.trace), e.router,
                     "; ".join(pools)))
    return rows


def _search_rows() -> list:
    from simcluster.errors import InputError
    from simcluster.experiment.search_spec import bundled_searches, load_search
    rows = [("name", "method", "objectives", "designs", "evaluated", "answered_by")]
    for name in bundled_searches():
        try:
            s = load_search(name)
        except InputError as err:           # (a table only a source checkout holds)
            rows.append((name, "-", "-", "-", "-", f"unavailable: {err.reason}"))
            continue
        source = ("a table of evaluated designs" if s.table is not None
                  else f"simulating {len(s.evaluator.trace)} requests")
        rows.append((name, s.method, " x ".join(s.objectives), f"{s.space.size:.3g}",
                     f"{s.n_init} + {s.n_iter} x {s.batch_size}", source))
    return rows


def _engine_rows() -> list:
    from simcluster.engines import list_engines, load_engine
    rows = [("name", "device", "model", "batching", "fit_rel_err_median", "fit_rel_err_p90")]
    for name in list_engines():
        e = load_engine(name)
        fit = e.fit or {}
        rows.append((e.name, e.device, e.model, e.batching or "-",
                     _g(fit.get("rel_err_median")), _g(fit.get("rel_err_p90"))))
    return rows


def add_commands(sub) -> None:
    from simcluster.cli.checks import positive_int, unused_without
    from simcluster.cli.common import EXPERIMENT_HELP, add_plots, add_set
    r = sub.add_parser("run", help="simulate an experiment TOML (default: the bundled one)")
    r.add_argument("experiment", nargs="?", default=None, help=EXPERIMENT_HELP)
    add_set(r)
    r.add_argument("--out", help="write requests/timeline/instances CSVs and summary.json here")
    add_plots(r)
    r.add_argument("--timeline-out", metavar="FILE.json",
                   help="write a Chrome/Perfetto trace of the run (tracks per instance)")
    r.add_argument("--timeline-window", metavar="START,END", type=_window,
                   help="only this window of the run in the trace (seconds after the first "
                        "arrival; default: all of it, up to --timeline-max-events)")
    r.add_argument("--timeline-max-events", type=positive_int, default=200_000,
                   help="cut the trace's window after this many events (default 200000)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    for flag in ("--timeline-window", "--timeline-max-events"):
        unused_without(r, flag, "--timeline-out", "it shapes the trace --timeline-out writes")
    r.set_defaults(func=cmd_run)
    t = sub.add_parser("trace-info", help="summarise a trace file or bundled trace")
    t.add_argument("file", help="a trace file (CSV, JSONL, Parquet; Azure, Mooncake or Vidur "
                                "columns) or a bundled trace's name (simcluster list traces)")
    from simcluster.workload.loaders import FORMATS
    t.add_argument("--format", default=None, choices=sorted(FORMATS),
                   help="the file's format (default: from its suffix and header)")
    t.add_argument("--sort", action="store_true", help="sort out-of-order arrivals")
    t.set_defaults(func=cmd_trace_info)
    ls = sub.add_parser("list", help="list registered specs and policies")
    ls.add_argument("what", choices=["devices", "links", "nodes", "models", "routers",
                                     "batching", "controllers", "partitions", "offloads", "numa",
                                     "traces", "engines", "experiments", "searches"],
                    help="what to list")
    ls.set_defaults(func=cmd_list)
