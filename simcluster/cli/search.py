"""Commands that answer questions over many runs: ``compare``, ``sweep``, ``capacity``,
``cheapest``."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from simcluster.cli.checks import (fraction, out_dir, positive_float, positive_int,
                                   unused_with, unused_without)
from simcluster.cli.common import (EXPERIMENT_HELP, add_cache, add_plots, add_runner, add_set,
                                   write_figures)


def _progress(args) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _check_outputs(args) -> None:
    """``--out`` and ``--plots`` can be written: checked before the runs, not after them."""
    out_dir(args.out)
    out_dir(getattr(args, "plots", None), "--plots")


def _vary(items: list[str]) -> dict:
    from simcluster.errors import InputError
    from simcluster.experiment.overrides import split_values
    out = {}
    for text in items:
        key, eq, values = text.partition("=")
        if not eq or not key.strip() or not values.strip():
            raise InputError(f"expected KEY.PATH=V1,V2,..., got {text!r}", field="--vary")
        if key.strip() in out:      # (the second list replaced the first)
            raise InputError(f"{key.strip()} is varied twice; give its values once "
                             f"({key.strip()}=V1,V2,...)", field="--vary")
        out[key.strip()] = split_values(values)
    return out


def cmd_compare(args) -> int:
    _check_outputs(args)
    from simcluster.experiment.study import compare
    files = args.experiments or [None]
    cmp_ = compare(files if len(files) > 1 else files[0], vary=_vary(args.vary),
                   set=args.sets, jobs=args.jobs, ray=args.ray, progress=_progress(args))
    from simcluster.analysis.compare import format_compare
    print(format_compare(cmp_.table, errors=False))     # (the messages go to stderr)
    failed = cmp_.frame[cmp_.frame.error != ""]
    for row in failed.itertuples():
        print(f"simcluster: {row.label} failed: {row.error}", file=sys.stderr)
    if args.out:
        print(f"wrote {cmp_.save(args.out)}/compare.csv (and .parquet)")
    if args.out or args.plots:
        write_figures(cmp_.figures(), args.plots or args.out)
    return 2 if len(failed) else 0       # a variant that cannot run: bad input


def cmd_sweep(args) -> int:
    _check_outputs(args)
    from simcluster.experiment.study import sweep_file
    from simcluster.search.sweep import points_per_s
    t0 = time.perf_counter()
    res = sweep_file(args.sweep, set=args.sets, jobs=args.jobs, ray=args.ray, out=args.out,
                     progress=_progress(args), fresh=args.fresh)
    wall = time.perf_counter() - t0
    df = res.frame
    cached = sum(o.cached for o in res.outcomes)
    print(f"{len(df)} points: {len(df) - len(res.failed) - cached} run, {cached} read from "
          f"disk, {len(res.failed)} failed; {wall:.1f} s wall "
          f"({points_per_s(res.outcomes, wall):.2f} points/s)")
    from simcluster.analysis.compare import error_kind
    shown = df[_summary_columns(df)]
    if "error" in shown:                 # (the kind here; each message on stderr below)
        shown = shown.assign(error=shown["error"].fillna("").astype(str).map(error_kind))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for points, error in _alike(res.failed):
        which = (f"point {points[0]} failed" if len(points) == 1 else
                 f"points {_numbers(points)} failed alike ({len(points)} points); "
                 f"point {points[0]}")
        print(f"simcluster: {which}: {error}", file=sys.stderr)
    if args.out:
        print(f"wrote {args.out}/results.csv and results.parquet "
              f"(points cached in {args.out}/points/)")
    if args.plots:
        write_figures(_sweep_figures(df, res), args.plots)
    return 2 if len(res.failed) == len(df) else 0   # (a grid may hold infeasible points)


#: An error's blame of the override that set its field, less the value: points that fail
#: alike but for the value (a misspelt grid key fails every point) are one line.
_BLAME = re.compile(r"\(set by override ([^=()]+)=.*\)$")


def _alike(failed) -> list[tuple[list[int], str]]:
    """Failed points grouped by their error (an override's value aside), in point order:
    (the points, the first one's message)."""
    groups: dict[str, tuple[list[int], str]] = {}
    for row in failed.itertuples():
        key = _BLAME.sub(r"(set by override \1)", str(row.error))
        groups.setdefault(key, ([], str(row.error)))[0].append(int(row.point))
    return list(groups.values())


def _numbers(points: list[int]) -> str:
    """0-3, 7, 9-10: runs of consecutive numbers as ranges."""
    runs, start = [], points[0]
    for a, b in zip(points, points[1:] + [None]):
        if b != a + 1:
            runs.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ", ".join(runs)


def _varied(df) -> list[str]:
    stop = df.columns.get_loc("point")
    return list(df.columns[:stop])


def _summary_columns(df) -> list[str]:
    keys = ["offered_rate_per_s", "request_throughput_per_s", "ttft_p90_s", "tpot_p90_s",
            "slo_attainment", "cost_per_m_tokens_usd", "error"]
    return _varied(df) + [k for k in keys if k in df]


def _sweep_figures(df, res) -> dict:
    from simcluster.analysis import plots
    varied = _varied(df)
    ok = df[df.error == ""]
    x = "trace.rate_per_s" if "trace.rate_per_s" in varied else (varied[0] if varied else None)
    if x is None or not len(ok):
        return {}
    num = ok[x].map(lambda v: isinstance(v, (int, float)))
    hue = next((k for k in varied if k != x), None)
    figs = {}
    if num.all():
        figs["latency_percentiles"] = plots.latency_percentiles(ok, x, hue=hue)
        figs["tpot_percentiles"] = plots.latency_percentiles(ok, x, metric="tpot", hue=hue)
        if "slo_attainment" in ok:
            figs["slo_attainment"] = plots.slo_attainment(ok, x, hue=hue)
        figs["throughput_latency"] = plots.throughput_latency(ok, hue=hue, x=x)
    short = {k: k.rsplit(".", 1)[-1] for k in varied}
    if len(set(short.values())) < len(short):      # instances.0.count, instances.1.count
        short = {k: k for k in varied}
    lab = ok.assign(label=[", ".join(f"{short[k]}={row[k]}" for k in varied)
                           for _, row in ok.iterrows()])
    figs["cost_per_m_tokens"] = plots.cost_per_m_tokens(lab)
    return figs


def cmd_capacity(args) -> int:
    _check_outputs(args)
    from simcluster.analysis.plots import capacity_curve
    from simcluster.experiment.study import capacity
    res = capacity(args.experiment, ttft_slo_s=args.ttft_slo, tpot_slo_s=args.tpot_slo,
                   attainment=args.attainment, set=args.sets, rel_tol=args.rel_tol,
                   abs_tol=args.tol, jobs=args.jobs, ray=args.ray, out=args.out,
                   progress=_progress(args), fresh=args.fresh)
    cols = ["rate_per_s", "meets", "slo_attainment", "ttft_p90_s", "tpot_p90_s",
            "goodput_per_s", "error"]
    print(res.points[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(res)
    _write_csv(res.points, args.out, "capacity_points.csv")
    if args.plots:
        write_figures({"capacity": capacity_curve(res)}, args.plots)
    return 0 if res.rate_per_s > 0 else 2   # no rate meets the SLOs (see simcluster.cli)


def _write_csv(frame, out: str | None, name: str) -> None:
    """``frame`` as ``OUT/name`` when ``--out`` is given, saying so."""
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        frame.to_csv(f"{out}/{name}", index=False)
        print(f"wrote {out}/{name}")


def _csv(kind):
    def parse(text):
        import argparse
        try:
            values = [kind(x.strip()) for x in text.split(",") if x.strip()]
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got "
                                             f"{text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return values
    return parse


def cmd_cheapest(args) -> int:
    _check_outputs(args)
    from simcluster.analysis.plots import cheapest_candidates
    from simcluster.errors import InputError
    from simcluster.experiment.study import cheapest
    if not args.candidates and not args.devices:
        raise InputError("give the devices to choose among, e.g. --devices H100-SXM,A100-80GB "
                         "(with --tp, --max-count; 'simcluster list devices' prints them with "
                         "their prices), or --candidates FILE.toml", field="--devices")
    res = cheapest(args.experiment, rate_per_s=args.rate, devices=args.devices or (),
                   tp=args.tp, max_count=args.max_count, attainment=args.attainment,
                   ttft_slo_s=args.ttft_slo, tpot_slo_s=args.tpot_slo, set=args.sets,
                   candidates=args.candidates, mixed=not args.no_mixed, jobs=args.jobs,
                   ray=args.ray, out=args.out, progress=_progress(args), fresh=args.fresh)
    print(res.candidates.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(res)
    _write_csv(res.candidates, args.out, "candidates.csv")
    if args.plots:
        write_figures({"cheapest": cheapest_candidates(res)}, args.plots)
    return 0 if res.best is not None else 2   # no candidate meets them (see simcluster.cli)


def _sweep_example() -> str:
    """``sweep -h``'s example: the sweep file in :mod:`simcluster.experiment.study`'s
    docstring, read from its source (importing the module to read its ``__doc__`` would cost
    every command 0.4 s)."""
    text = (Path(__file__).resolve().parents[1] / "experiment" / "study.py").read_text()
    block = text[text.index("::\n\n") + 4:].split("\n\n")[0]
    lines = "\n".join(line[2:] for line in block.splitlines())     # 4 spaces -> 2
    return (f"a sweep file:\n\n{lines}\n\nKeys are dotted paths into the experiment's TOML, "
            "as --set takes them.")


SWEEP_EXAMPLE = _sweep_example()


def _slo_options(p):
    p.add_argument("--ttft-slo", type=positive_float, metavar="S", help="TTFT SLO in seconds "
                   "(default: the experiment's [slo] ttft_s)")
    p.add_argument("--tpot-slo", type=positive_float, metavar="S", help="TPOT SLO in seconds "
                   "(default: the experiment's [slo] tpot_s)")
    p.add_argument("--attainment", type=fraction, default=0.9,
                   help="share of requests that must meet every SLO (default 0.9)")


def _runner_rules(p) -> None:
    unused_with(p, "--jobs", ("--ray",), "Ray decides the workers")
    if any("--fresh" in a.option_strings for a in p._actions):
        unused_without(p, "--fresh", "--out", "it reruns the points cached in --out")


def add_commands(sub) -> None:
    c = sub.add_parser("compare", help="run variants of an experiment; one side-by-side table")
    c.add_argument("experiments", nargs="*", help="experiment TOMLs' paths or bundled "
                   "experiments' names (simcluster list experiments); default: the bundled "
                   "default")
    c.add_argument("--vary", action="append", default=[], metavar="KEY.PATH=V1,V2,...",
                   help="values of a key to compare (repeatable: every combination)")
    add_set(c)
    c.add_argument("--out", metavar="DIR", help="write compare.csv, compare.parquet and the "
                                                "figures (PNG) here")
    c.add_argument("--plots", metavar="DIR", help="write the figures here instead of --out")
    add_runner(c, jobs_default=1)
    _runner_rules(c)
    c.set_defaults(func=cmd_compare)

    s = sub.add_parser("sweep", help="run a grid or list of points (a sweep TOML); one "
                                     "row per point",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=SWEEP_EXAMPLE)
    s.add_argument("sweep", help="sweep TOML: experiment, [set], [grid], [[points]] (an "
                                 "example below)")
    add_set(s)
    s.add_argument("--out", metavar="DIR", help="write results.csv/.parquet; points cached "
                                                "here are skipped when run again")
    add_cache(s)
    add_plots(s)
    add_runner(s)
    _runner_rules(s)
    s.set_defaults(func=cmd_sweep)

    k = sub.add_parser("capacity", help="highest request rate meeting the SLOs (bisection)")
    k.add_argument("experiment", nargs="?", default=None, help=EXPERIMENT_HELP)
    _slo_options(k)
    k.add_argument("--rel-tol", type=positive_float, default=0.02,
                   help="stop when the bracket is this fraction of the rate (default 0.02)")
    k.add_argument("--tol", type=positive_float,
                   help="stop when the bracket is this many req/s wide")
    add_set(k)
    k.add_argument("--out", metavar="DIR", help="write capacity_points.csv; cache points")
    add_cache(k)
    add_plots(k)
    add_runner(k, jobs_default=1)
    _runner_rules(k)
    unused_with(k, "--rel-tol", ("--tol",), "--tol sets the bracket's width in req/s")
    k.set_defaults(func=cmd_capacity)

    h = sub.add_parser("cheapest", help="cheapest replicas serving a rate within the SLOs")
    h.add_argument("experiment", nargs="?", default=None, help=EXPERIMENT_HELP)
    h.add_argument("--rate", type=positive_float, required=True,
                   help="request rate to serve (req/s)")
    h.add_argument("--devices", type=_csv(str), help="devices to consider, e.g. "
                                                     "H100-SXM,A100-80GB,L40S")
    h.add_argument("--tp", type=_csv(positive_int), default=[1], help="TP degrees, e.g. 1,2,4,8")
    h.add_argument("--max-count", type=positive_int, default=8, help="most replicas (default 8)")
    h.add_argument("--candidates", metavar="FILE.toml",
                   help="a list of [[candidates]] (name, instances) instead of a search")
    h.add_argument("--no-mixed", action="store_true",
                   help="homogeneous replicas only (no mixes of two device types)")
    _slo_options(h)
    add_set(h)
    h.add_argument("--out", metavar="DIR", help="write candidates.csv; cache points")
    add_cache(h)
    add_plots(h)
    add_runner(h, jobs_default=1)
    _runner_rules(h)
    for flag in ("--devices", "--tp", "--max-count", "--no-mixed"):
        unused_with(h, flag, ("--candidates",), "it shapes the search, and --candidates "
                                                "lists the configurations instead")
    h.set_defaults(func=cmd_cheapest)
