"""The design-search benchmark's table: a fixed, seeded subset of LLMShare's design space,
every design simulated once on the source's trace (its true Pareto front, exhaustively).

    python benchmarks/design_table.py [--n 1055] [--seed 2025] [--workers 2]
        [--cache out/design_table_cache.parquet] [--out benchmarks/data/llmshare_designs]

``--n`` designs drawn uniformly (seeded) from the whole space of
:func:`simcluster.search.design.llmshare_space` (both pools' ten parameters, 8.7e14 designs),
each simulated by :class:`simcluster.search.design.serving.ServingEvaluator` on
``experiments/llmshare_h100.toml``'s trace, model, SLOs and scheduler (GPT-3 175B, the first
2,454 Azure conversation requests in 120 s, Splitwise routing, threshold rebalancer). Results
go to ``--cache`` as they come (a killed run resumes where it stopped); at the end the table is
written to ``OUT.csv`` (parameters, every figure, the reason a design is infeasible) with its
metadata in ``OUT.json`` (this command, the code's commit, trace and model, timings).
``benchmarks/design_search.py --table OUT.csv`` runs the methods against it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simcluster.experiment import load_experiment  # noqa: E402
from simcluster.search.design import CachedEvaluator, llmshare_space, pareto_front  # noqa: E402
from simcluster.search.design.serving import ServingEvaluator  # noqa: E402

EXPERIMENT = ROOT / "experiments" / "llmshare_h100.toml"
OBJ = ["serving_time_s", "capex_usd"]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1055)
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=ROOT / "out" / "design_table_cache.parquet")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data" /
                    "llmshare_designs")
    a = ap.parse_args(argv)
    exp = load_experiment(EXPERIMENT)
    space = llmshare_space()
    designs = space.sample(a.n, np.random.default_rng(a.seed))
    ev = ServingEvaluator(exp.trace, exp.model, exp.ttft_slo_s, exp.tpot_slo_s)
    t0 = time.monotonic()

    def progress(done, total):
        if done % 10 == 0 or done == total:
            el = time.monotonic() - t0
            print(f"{done}/{total} new designs, {el:.0f} s, "
                  f"eta {el / done * (total - done):.0f} s", flush=True)
    with CachedEvaluator(ev, OBJ, workers=a.workers, cache_path=a.cache,
                         progress=progress, context=ev.fingerprint()) as cached:
        print(f"{len(designs)} designs, {len(cached.cache)} cached", flush=True)
        out = cached(designs)
    table = designs.join(out)
    ok = table[OBJ].notna().all(axis=1)
    front = pareto_front(table.loc[ok, OBJ].to_numpy(dtype=float))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(a.out.with_suffix(".csv"), index=False, float_format="%.10g")
    meta = {
        "command": "python benchmarks/design_table.py " + " ".join(
            f"--{k} {v}" for k, v in (("n", a.n), ("seed", a.seed))),
        "commit": _commit(), "evaluator": ev.fingerprint(), "designs": a.n, "seed": a.seed,
        "space": "simcluster.search.design.llmshare_space() (slides' Table 1, both pools)",
        "sampling": "DesignSpace.sample(n, numpy.random.default_rng(seed)): uniform, distinct",
        "experiment": str(EXPERIMENT.relative_to(ROOT)), "trace": exp.trace.name,
        "requests": len(exp.trace), "model": exp.model.name,
        "slo": {"ttft_s": exp.ttft_slo_s, "tpot_s": exp.tpot_slo_s},
        "feasible": int(ok.sum()), "true_front": len(front), "objectives": OBJ,
        "eval_s_total": float(table["eval_s"].sum()),
        "eval_s_median_feasible": float(table.loc[ok, "eval_s"].median()),
        "workers": a.workers,
    }
    a.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
