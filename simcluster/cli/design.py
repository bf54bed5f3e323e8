"""The hardware design search: ``search SPACE.toml`` (LLMShare's multi-objective search)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from simcluster.cli.checks import non_negative_int, out_dir, positive_int, unused_with

#: The design-search methods (``search.design.methods.METHODS``, which a test holds this to;
#: importing it for -h would cost every command 0.5 s).
METHOD_NAMES = ("llmshare", "llmshare-matern", "llmshare-random-init", "bo-matern",
                "boom-explorer", "svr", "dac16", "random", "lhs")


def _table(frame, objectives) -> str:
    """A compact text table: design rows, then figures in readable units."""
    if frame.empty:
        return "(none)"
    f = frame.copy()
    for c in f.columns:
        if c.endswith("_usd") or c == "capex_usd":
            f[c] = f[c].map(lambda v: f"{v:,.0f}")
        elif c.endswith(" / baseline"):
            f[c] = f[c].map(lambda v: f"{v:.2f}")
        elif c.split("_")[0] in ("ttft", "tpot", "e2e"):
            f[c] = f[c].map(lambda v: f"{v * 1e3:.0f} ms" if v == v else "-")
        elif f[c].dtype.kind == "f":
            f[c] = f[c].map(lambda v: f"{v:.4g}")
    return f.drop(columns=[c for c in ("design_hash",) if c in f.columns]).to_string(index=False)


def cmd_search(args) -> int:
    from simcluster.experiment.search_spec import load_search
    from simcluster.search.design.session import run_design_search
    out_dir(args.out)                          # checked before the search, not after it
    spec = load_search(args.space)
    overrides = {k: v for k, v in (("method", args.method), ("seed", args.seed),
                                   ("workers", args.workers), ("ray", args.ray))
                 if v is not None}
    if overrides:
        import dataclasses
        spec = dataclasses.replace(spec, **overrides)
        from simcluster.experiment.search_spec import check_spec
        check_spec(spec)
    out = out_dir(args.out) if args.out else Path("out") / f"search-{spec.name}"
    source = (f"answered from {spec.table}" if spec.table is not None else
              f"simulated on {len(spec.evaluator.trace)} requests, "
              f"{'Ray' if spec.ray else f'{spec.workers} process(es)'}")
    print(f"search {spec.name}: method {spec.method}, seed {spec.seed}, objectives "
          f"{' and '.join(spec.objectives)}; {spec.space.size:.3g} designs in the space; "
          f"{spec.n_init} initial + {spec.n_iter} x {spec.batch_size}; {source}", flush=True)
    t0 = time.perf_counter()

    def progress(it, hv):
        if not args.quiet:
            print(f"  iteration {it:3d}: hypervolume {hv:.6g}  "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    outcome = run_design_search(spec, out, progress=progress)
    s = outcome.summary()
    print(f"\n{s['evaluated']} designs evaluated ({s['feasible']} feasible, {s['simulated']} "
          f"simulated now) among {s['candidates']} candidates in {s['wall_s']:.1f} s")
    if s["stale_cached"]:
        print(f"({s['stale_cached']} cached evaluations in {out / 'evaluations.parquet'} were "
              "of another trace, model, setting or simulator version: not used, kept)")
    print(f"reference point {s['ref_point'][0]:.6g}, {s['ref_point'][1]:.6g}; hypervolume "
          f"{s['hypervolume']:.6g}"
          + (f" ({s['hypervolume'] / s['true_hypervolume']:.1%} of the true front's; "
             f"ADRS {s['adrs']:.4f})" if "adrs" in s else ""))
    hv = outcome.result.hypervolume
    print("hypervolume per iteration: " + " ".join(f"{v:.4g}" for v in hv["hypervolume"]))
    print(f"\nPareto front ({len(outcome.front)} designs; rows: servers, devices/server, links, "
          "memory GB, global buffer MB, cores, local buffer KB, lanes, array, vector width)")
    print(_table(outcome.front, spec.objectives))
    if outcome.baseline is not None:
        print(f"\nbeside the {outcome.baseline['name']} on the same trace")
        print(_table(outcome.comparison, spec.objectives))
    paths = outcome.write(out)
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    if s["feasible"] == 0:                     # a configuration with no answer: exit 2
        print("simcluster: error: no evaluated design could serve the trace (see the reasons "
              f"in {out / 'designs.parquet'})", file=sys.stderr)
        return 2
    return 0


def add_commands(sub) -> None:
    s = sub.add_parser("search", help="search hardware designs for the Pareto front of "
                       "(serving time, cost) with the simulator in the loop")
    s.add_argument("space", help="a design-search TOML, or a bundled one's name: tiny (seconds), "
                   "llmshare_search (LLMShare's whole space), llmshare_table (simcluster list "
                   "searches)")
    s.add_argument("--out", help="output folder (default: out/search-NAME)")
    s.add_argument("--method", help="override [search] method: " + ", ".join(METHOD_NAMES))
    s.add_argument("--seed", type=non_negative_int, help="override the seed")
    s.add_argument("--workers", type=positive_int, help="override [search] workers")
    s.add_argument("--ray", help="evaluate on Ray: 'local' or a cluster's address")
    s.add_argument("--quiet", action="store_true", help="no per-iteration progress")
    unused_with(s, "--workers", ("--ray",), "Ray decides the workers")
    s.set_defaults(func=cmd_search)
