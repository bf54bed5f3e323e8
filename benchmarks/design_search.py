"""Design-search benchmark in the spirit of LLMShare's table: every method and ablation, many
seeds, evaluations answered from a table of designs evaluated beforehand.

    python benchmarks/design_search.py --table designs.parquet      # a table simulated once
    python benchmarks/design_search.py --synthetic 1000             # the analytic stand-in

The table holds the LLMShare space's 20 parameter columns, ``serving_time_s``, ``cost_usd``
and optionally ``reason`` (NaN objectives: infeasible). Its true front is computed from the
whole table. Per method and seed: ``--init`` initial designs and ``--iter`` iterations of
``--batch`` designs. Printed per method: mean and standard deviation over seeds of ADRS
(shared/REFERENCES.md's relative form), of BOOM-Explorer's min-max Euclidean ADRS, and of
the hypervolume, with the reference point at the table's worst feasible value of each
objective (stated in the output), in units of 1e8 (s x USD) and as a fraction of the true
front's. Runs go to a process pool (``--workers``).
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

from simcluster.search.design import (METHODS, TableEvaluator, hypervolume_2d, llmshare_space,
                                      pareto_front, run_search)
from simcluster.search.design.synthetic import synthetic_objectives

OBJ = ["serving_time_s", "cost_usd"]


def synthetic_table(n: int, seed: int) -> pd.DataFrame:
    space = llmshare_space()
    designs = space.sample(n, np.random.default_rng(seed))
    return designs.join(synthetic_objectives(designs))


def _one(args):
    table, method, seed, init, iters, batch, ref = args
    space = llmshare_space()
    ev = TableEvaluator(table, space.names, OBJ)
    designs = table[space.names]
    t0 = time.perf_counter()
    r = run_search(designs, ev, space, method=method, n_init=init, n_iter=iters,
                   batch_size=batch, seed=seed, ref_point=ref)
    return method, seed, r, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--table", type=Path, help="Parquet table of evaluated designs")
    src.add_argument("--synthetic", type=int, metavar="N",
                     help="N designs of the analytic stand-in (not the simulator)")
    ap.add_argument("--table-seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--init", type=int, default=10)
    ap.add_argument("--iter", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write per-run figures here (CSV)")
    a = ap.parse_args(argv)
    table = (pd.read_parquet(a.table) if a.table is not None
             else synthetic_table(a.synthetic, a.table_seed))
    ok = table[OBJ].notna().all(axis=1).to_numpy()
    y = table.loc[ok, OBJ].to_numpy(dtype=float)
    true_front = pareto_front(y)
    ref = y.max(axis=0)
    lo, hi = y.min(axis=0), y.max(axis=0)
    hv_true = hypervolume_2d(y, ref)
    print(f"table: {len(table)} designs ({int(ok.sum())} feasible), true front "
          f"{len(true_front)} designs; reference point {ref[0]:.4g} s, {ref[1]:.4g} USD; "
          f"true hypervolume {hv_true / 1e8:.4f} x 1e8")
    print(f"budget: {a.init} initial + {a.iter} x {a.batch}; {a.seeds} seeds\n")
    jobs = [(table, m, s, a.init, a.iter, a.batch, ref)
            for m in a.methods for s in range(a.seeds)]
    rows = []
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(a.workers, mp_context=ctx) as pool:
        for method, seed, r, wall in pool.map(_one, jobs):
            hv = float(r.hypervolume.hypervolume.iloc[-1])
            rows.append({"method": method, "seed": seed, "adrs": r.adrs(true_front),
                         "adrs_minmax": r.adrs_minmax(true_front, lo, hi),
                         "hv_1e8": hv / 1e8, "hv_fraction": hv / hv_true,
                         "front_found": int(sum(np.any(np.all(np.isclose(
                             r.feasible_objectives(), g), axis=1)) for g in true_front)),
                         "wall_s": wall})
    runs = pd.DataFrame(rows)
    if a.out is not None:
        runs.to_csv(a.out, index=False)
    agg = runs.groupby("method", sort=False).agg(
        adrs=("adrs", "mean"), adrs_sd=("adrs", "std"),
        adrs_minmax=("adrs_minmax", "mean"), adrs_minmax_sd=("adrs_minmax", "std"),
        hv_1e8=("hv_1e8", "mean"), hv_sd=("hv_1e8", "std"),
        hv_fraction=("hv_fraction", "mean"), front_found=("front_found", "mean"),
        wall_s=("wall_s", "median"))
    print(agg.sort_values("adrs").to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
