"""Design-search benchmark in the spirit of LLMShare's table: every method and ablation, many
seeds, evaluations answered from a table of designs simulated beforehand.

    python benchmarks/design_search.py [--table benchmarks/data/llmshare_designs.csv]
        [--seeds 10] [--init 10] [--iter 20] [--batch 1] [--workers 2] [--prescreen]
        [--infeasible classify|penalty] [--runs OUT.csv] [--write]
    python benchmarks/design_search.py --from-runs RUNS.csv [--write]   # tables only
    python benchmarks/design_search.py --synthetic 1000                 # the analytic stand-in

The table (``benchmarks/design_table.py``) holds the LLMShare space's 20 parameter columns,
the objectives and ``reason`` (NaN objectives: infeasible). Its true front is the front of all
its feasible designs. Per method and seed: ``--init`` initial designs and ``--iter``
iterations of ``--batch`` designs, every method through the same loop
(:func:`simcluster.search.design.run_search`). ``--prescreen`` gives the methods only the
designs the simulator does not reject at once (their servers hold the weights, their devices
are plausible): the setting where an infeasible design costs no evaluation. ``--subsample F``
gives each seed its own seeded share of the table (every method the same one at a seed), so
that methods whose start is deterministic (MCI's TED) are seen on more than one problem.

Printed per method: mean and standard deviation over seeds of ADRS (shared/REFERENCES.md's
form: mean over the true front of the distance to the nearest found design, each objective
relative to the true point's own value), of BOOM-Explorer's ADRS (Euclidean after min-max
scaling each objective over the table), of the hypervolume in units of 1e8 s x USD with the
reference point at the table's worst feasible value of each objective (the source's unit),
and of the hypervolume as a share of the true front's with the reference point at the true
front's own worst values plus 10% of its range (the front's region alone); the mean number of
true-front designs found and of feasible designs evaluated; how many seeds LLMShare's ADRS
beat the method's (paired by seed); and a two-sided Mann-Whitney p-value of the two ADRS
samples. ``--write`` replaces the ``design-search`` block of docs/llmshare.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simcluster.search.design import (METHODS, TableEvaluator, adrs, adrs_minmax,  # noqa: E402
                                      hypervolume_2d, llmshare_space, pareto_front,
                                      run_search)
from simcluster.search.design.evaluate import read_table  # noqa: E402
from simcluster.search.design.synthetic import synthetic_objectives  # noqa: E402

OBJ = ["serving_time_s", "capex_usd"]
TABLE = ROOT / "benchmarks" / "data" / "llmshare_designs.csv"
DOC = ROOT / "docs" / "llmshare.md"
#: reasons the simulator gives at once, without simulating (simulation/design.py)
SCREENED = ("not a plausible device", "prefill:", "decode:")


def synthetic_table(n: int, seed: int) -> pd.DataFrame:
    space = llmshare_space()
    designs = space.sample(n, np.random.default_rng(seed))
    return designs.join(synthetic_objectives(designs).rename(columns={"cost_usd": "capex_usd"}))


def prescreen(table: pd.DataFrame) -> pd.DataFrame:
    """The designs the simulator does not reject without simulating."""
    reason = table["reason"].fillna("").astype(str) if "reason" in table else \
        pd.Series("", index=table.index)
    return table[~reason.str.startswith(SCREENED)].reset_index(drop=True)


def _one(args):
    table, method, seed, init, iters, batch, infeasible, subsample = args
    import warnings
    warnings.simplefilter("ignore")
    if subsample:
        table = table.sample(frac=subsample, random_state=seed).reset_index(drop=True)
    true_front, refs, lo, hi = references(table)
    space = llmshare_space()
    ev = TableEvaluator(table, space.names, OBJ)
    t0 = time.perf_counter()
    r = run_search(table[space.names], ev, space, method=method, n_init=init, n_iter=iters,
                   batch_size=batch, seed=seed, objectives=OBJ, ref_point=refs["table"],
                   infeasible=infeasible)
    wall = time.perf_counter() - t0
    return {"method": method, "seed": seed, **measure(r, true_front, refs, lo, hi),
            "wall_s": wall}


def measure(r, true_front, refs, lo, hi) -> dict:
    found = r.feasible_objectives()
    hv = hypervolume_2d(found, refs["table"]) if len(found) else 0.0
    hv_front = hypervolume_2d(found, refs["front"]) if len(found) else 0.0
    hit = sum(bool(np.any(np.all(np.isclose(found, g), axis=1))) for g in true_front) \
        if len(found) else 0
    return {"adrs": adrs(true_front, found) if len(found) else np.inf,
            "adrs_minmax": adrs_minmax(true_front, found, lo, hi) if len(found) else np.inf,
            "hv_1e8": hv / 1e8, "hv_table_fraction": hv / refs["hv_table"],
            "hv_front_fraction": hv_front / refs["hv_front"], "front_found": hit,
            "feasible": len(found), "choose_s": float(r.timings["choose_s"].sum())}


def references(table: pd.DataFrame) -> tuple[np.ndarray, dict, np.ndarray, np.ndarray]:
    ok = table[OBJ].notna().all(axis=1).to_numpy()
    y = table.loc[ok, OBJ].to_numpy(dtype=float)
    front = pareto_front(y)
    lo, hi = y.min(axis=0), y.max(axis=0)
    fhi, flo = front.max(axis=0), front.min(axis=0)
    refs = {"table": hi, "front": fhi + 0.1 * (fhi - flo)}
    refs["hv_table"] = hypervolume_2d(front, refs["table"])
    refs["hv_front"] = hypervolume_2d(front, refs["front"])
    return front, refs, lo, hi


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    from scipy.stats import mannwhitneyu
    agg = runs.groupby("method", sort=False).agg(
        seeds=("seed", "count"), adrs=("adrs", "mean"), adrs_sd=("adrs", "std"),
        adrs_minmax=("adrs_minmax", "mean"), adrs_minmax_sd=("adrs_minmax", "std"),
        hv_1e8=("hv_1e8", "mean"), hv_sd=("hv_1e8", "std"),
        hv_front=("hv_front_fraction", "mean"), hv_front_sd=("hv_front_fraction", "std"),
        front_found=("front_found", "mean"), feasible=("feasible", "mean"),
        wall_s=("wall_s", "median"))
    ref = runs[runs.method == "llmshare"].set_index("seed")["adrs"]
    wins, pvals = [], []
    for m in agg.index:
        other = runs[runs.method == m].set_index("seed")["adrs"]
        both = ref.index.intersection(other.index)
        if m == "llmshare" or ref.empty or len(both) == 0:
            wins.append("")
            pvals.append(np.nan)
            continue
        wins.append(f"{int((ref[both] < other[both]).sum())}/{len(both)}")
        pvals.append(mannwhitneyu(ref[both], other[both]).pvalue)
    agg["llmshare_better"] = wins
    agg["p_adrs"] = pvals
    return agg


def markdown(agg: pd.DataFrame, header: str) -> str:
    cols = ["method", "ADRS (mean ± sd)", "ADRS min-max", "HV 1e8 s·USD", "HV share of the "
            "true front's (front region)", "true-front designs found", "feasible evaluated",
            "LLMShare's ADRS lower", "p (ADRS)", "s per run"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for m, r in agg.iterrows():
        lines.append(f"| {m} | {r.adrs:.4f} ± {r.adrs_sd:.4f} | {r.adrs_minmax:.4f} ± "
                     f"{r.adrs_minmax_sd:.4f} | {r.hv_1e8:.3f} ± {r.hv_sd:.3f} | "
                     f"{r.hv_front:.3f} ± {r.hv_front_sd:.3f} | {r.front_found:.1f} | "
                     f"{r.feasible:.1f} | {r.llmshare_better} | "
                     f"{'' if np.isnan(r.p_adrs) else f'{r.p_adrs:.2f}'} | {r.wall_s:.0f} |")
    return "\n".join(lines)


def write_block(name: str, body: str):
    from docblocks import write_block as write
    write(DOC.name, name, body, fenced=False)


def true_front_table(table: pd.DataFrame) -> str:
    """The table's true front beside the H100 cluster simulated on the same trace."""
    from simcluster.experiment import load_experiment
    from simcluster.hardware.parametric import H100_DECODE_ROW, H100_PREFILL_ROW, parse_row
    from simcluster.search.design import pareto_mask
    from simcluster.search.design.report import rows_of
    from simcluster.search.design.serving import ServingEvaluator
    exp = load_experiment(ROOT / "experiments" / "llmshare_h100.toml")
    h100 = ServingEvaluator(exp.trace, exp.model, exp.ttft_slo_s, exp.tpot_slo_s) \
        .evaluate_pools(parse_row(H100_PREFILL_ROW), parse_row(H100_DECODE_ROW))
    ok = table[table[OBJ].notna().all(axis=1)]
    front = ok[pareto_mask(ok[OBJ].to_numpy(float))].sort_values(OBJ)
    head = ["design", "prefill row", "decode row", "serving time s", "price M USD",
            "time / H100", "price / H100", "TTFT p90 ms", "TPOT p90 ms", "USD / h"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def line(name, rows, r):
        lines.append(f"| {name} | {rows['prefill_row']} | {rows['decode_row']} | "
                     f"{r['serving_time_s']:.1f} | {r['capex_usd'] / 1e6:.2f} | "
                     f"{r['serving_time_s'] / h100['serving_time_s']:.2f} | "
                     f"{r['capex_usd'] / h100['capex_usd']:.2f} | {r['ttft_p90_s'] * 1e3:.0f} | "
                     f"{r['tpot_p90_s'] * 1e3:.0f} | {r['usd_per_hour']:.0f} |")
    line("H100 cluster", {"prefill_row": H100_PREFILL_ROW, "decode_row": H100_DECODE_ROW}, h100)
    for i, (_, r) in enumerate(front.iterrows()):
        line(f"front {i + 1}", rows_of(r), r)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--table", type=Path, default=None, help=f"default {TABLE}")
    src.add_argument("--synthetic", type=int, metavar="N",
                     help="N designs of the analytic stand-in (not the simulator)")
    src.add_argument("--from-runs", type=Path, help="tabulate per-run figures written before")
    src.add_argument("--true-front", action="store_true",
                     help="print the table's true front beside the H100 cluster (simulated on "
                     "the same trace); with --write, block design-true-front")
    ap.add_argument("--table-seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--init", type=int, default=10)
    ap.add_argument("--iter", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prescreen", action="store_true")
    ap.add_argument("--subsample", type=float, default=None, metavar="F",
                    help="per seed, search a seeded share F of the table (the same for every "
                    "method at that seed), against that subset's own true front")
    ap.add_argument("--infeasible", choices=["classify", "penalty"], default="classify")
    ap.add_argument("--runs", type=Path, help="write per-run figures here (CSV)")
    ap.add_argument("--write", action="store_true", help="update docs/llmshare.md")
    ap.add_argument("--block", default=None, help="the doc block to write (default: "
                    "design-search, design-search-prescreened with --prescreen)")
    a = ap.parse_args(argv)
    if a.true_front:
        body = true_front_table(read_table(TABLE))
        print(body)
        if a.write:
            write_block("design-true-front", body)
        return 0
    if a.from_runs is not None:
        runs = pd.read_csv(a.from_runs)
        header = f"(from {a.from_runs})"
    else:
        table = (synthetic_table(a.synthetic, a.table_seed) if a.synthetic is not None
                 else read_table(a.table or TABLE))
        full = len(table)
        if a.prescreen:
            table = prescreen(table)
        true_front, refs, lo, hi = references(table)
        header = (f"{len(table)} candidate designs ({'prescreened from ' + str(full) + ', ' if a.prescreen else ''}"
                  f"{int(table[OBJ].notna().all(axis=1).sum())} feasible), true front "
                  f"{len(true_front)} designs; "
                  f"{f'per seed a {a.subsample:.0%} subset; ' if a.subsample else ''}"
                  f"{a.init} initial + {a.iter} x {a.batch}, "
                  f"{a.seeds} seeds; infeasible designs: {a.infeasible}; HV reference "
                  f"{refs['table'][0]:.1f} s, {refs['table'][1] / 1e6:.2f} M USD (true front "
                  f"{refs['hv_table'] / 1e8:.3f} x 1e8); front-region reference "
                  f"{refs['front'][0]:.1f} s, {refs['front'][1] / 1e6:.2f} M USD")
        print(header + "\n", flush=True)
        jobs = [(table, m, s, a.init, a.iter, a.batch, a.infeasible, a.subsample)
                for m in a.methods for s in range(a.seeds)]
        rows = []
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(a.workers, mp_context=ctx) as pool:
            for row in pool.map(_one, jobs):
                rows.append(row)
                print(f"  {row['method']:<22} seed {row['seed']}: ADRS {row['adrs']:.4f}, "
                      f"{row['wall_s']:.0f} s", file=sys.stderr, flush=True)
        runs = pd.DataFrame(rows)
        if a.runs is not None:
            runs.to_csv(a.runs, index=False)
            Path(str(a.runs) + ".header").write_text(header + "\n")
    if a.from_runs is not None and Path(str(a.from_runs) + ".header").exists():
        header = Path(str(a.from_runs) + ".header").read_text().strip()
    agg = aggregate(runs)
    print(agg.to_string(float_format=lambda v: f"{v:.4f}"))
    if a.write:
        block = a.block or ("design-search-prescreened" if a.prescreen else "design-search")
        write_block(block, markdown(agg, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
