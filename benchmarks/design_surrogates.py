"""How well each surrogate of the design search predicts designs it has not seen.

    python benchmarks/design_surrogates.py [--table benchmarks/data/llmshare_designs.csv]
        [--train 10 20 30] [--seeds 10] [--surrogates gp-dtk gp-matern gp-mlp svr adaboost]

Per seed and training size n: n designs drawn at random from the table (feasible or not), each
surrogate fitted to the log objectives of the feasible ones among them (as the search does by
default; ``--infeasible penalty``: to all of them, infeasible ones at the worst observed log
objective plus 10% of the range, :func:`simcluster.search.design.loop._log_targets`), and its predictions scored on every feasible design not drawn: RMSE of the log
objective (0.1 = 10% off), Spearman's rank correlation (what an acquisition needs: the order
of designs), and, for the GPs, the share of held-out values inside the 90% predictive interval
(0.9 if the predicted uncertainty is honest; EHVI leans on it). Printed per surrogate and n:
the mean over seeds (and the standard deviation of the RMSE); ``--write`` puts the table in
docs/llmshare.md (block ``design-surrogates``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from simcluster.search.design import llmshare_space  # noqa: E402
from simcluster.search.design.evaluate import read_table  # noqa: E402
from simcluster.search.design.loop import _log_targets  # noqa: E402
from simcluster.search.design.surrogates import make_surrogate  # noqa: E402

OBJ = ["serving_time_s", "capex_usd"]


def score(name, space, x, y, ok, n, seed, infeasible="classify"):
    rng = np.random.default_rng(seed)
    train = rng.choice(len(x), size=n, replace=False)
    if not ok[train].any():
        return None
    test = np.setdiff1d(np.flatnonzero(ok), train)
    model = make_surrogate(name, space, seed)
    t0 = time.perf_counter()
    if infeasible == "penalty":
        model.fit(x[train], _log_targets(y[train], ok[train]))
    elif ok[train].sum() >= 2:
        model.fit(x[train[ok[train]]], np.log(y[train[ok[train]]]))
    else:
        return None
    fit_s = time.perf_counter() - t0
    mean, std = model.predict(x[test])
    truth = np.log(y[test])
    out = {"surrogate": name, "n": n, "seed": seed, "fit_s": fit_s}
    for j, o in enumerate(OBJ):
        err = mean[:, j] - truth[:, j]
        out[f"rmse_{o}"] = float(np.sqrt(np.mean(err ** 2)))
        out[f"rho_{o}"] = float(spearmanr(mean[:, j], truth[:, j]).statistic)
        if getattr(model, "probabilistic", False):
            out[f"cover90_{o}"] = float(np.mean(np.abs(err) <= 1.645 * std[:, j]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "data" /
                    "llmshare_designs.csv")
    ap.add_argument("--train", type=int, nargs="+", default=[10, 20, 30])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--surrogates", nargs="+",
                    default=["gp-dtk", "gp-matern", "gp-mlp", "svr", "adaboost"])
    ap.add_argument("--write", action="store_true",
                    help="replace the design-surrogates block of docs/llmshare.md")
    ap.add_argument("--infeasible", choices=["classify", "penalty"], default="classify",
                    help="fit to the feasible designs only (classify: as the search does by "
                    "default) or to all, infeasible ones at a penalty value")
    a = ap.parse_args(argv)
    table = read_table(a.table)
    space = llmshare_space()
    x = space.encode(space.validate(table, source=str(a.table)))
    y = table[OBJ].to_numpy(float)
    ok = np.isfinite(y).all(axis=1)
    print(f"{a.table}: {len(table)} designs, {int(ok.sum())} feasible; "
          f"{a.seeds} seeds per training size")
    rows = [r for name in a.surrogates for n in a.train for s in range(a.seeds)
            if (r := score(name, space, x, y, ok, n, s, a.infeasible))
            is not None]
    runs = pd.DataFrame(rows)
    agg = runs.groupby(["surrogate", "n"], sort=False).agg(
        **{f"rmse_{o}": (f"rmse_{o}", "mean") for o in OBJ},
        **{f"rmse_sd_{o}": (f"rmse_{o}", "std") for o in OBJ},
        **{f"rho_{o}": (f"rho_{o}", "mean") for o in OBJ},
        **{f"cover90_{o}": (f"cover90_{o}", "mean") for o in OBJ
           if f"cover90_{o}" in runs.columns},
        fit_s=("fit_s", "median"))
    print(agg.to_string(float_format=lambda v: f"{v:.3f}"))
    if a.write:
        from design_search import write_block
        write_block("design-surrogates", markdown(agg, len(table), int(ok.sum()), a.seeds))
    return 0


def markdown(agg: pd.DataFrame, n: int, feasible: int, seeds: int) -> str:
    head = ["surrogate", "designs drawn", "RMSE log time", "RMSE log price",
            "Spearman time", "Spearman price", "90% interval holds: time", "price",
            "s per fit"]
    lines = [f"{n} designs ({feasible} feasible), {seeds} seeds per row; mean over seeds",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (name, k), r in agg.iterrows():
        cover = [f"{r[f'cover90_{o}']:.2f}" if f"cover90_{o}" in r and r[f"cover90_{o}"] == r[
            f"cover90_{o}"] else "-" for o in OBJ]
        lines.append(f"| {name} | {k} | {r[f'rmse_{OBJ[0]}']:.3f} | {r[f'rmse_{OBJ[1]}']:.3f} | "
                     f"{r[f'rho_{OBJ[0]}']:.2f} | {r[f'rho_{OBJ[1]}']:.2f} | {cover[0]} | "
                     f"{cover[1]} | {r.fit_s:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
