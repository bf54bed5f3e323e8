"""Regenerate docs/figures/*.png (the README shows some of them) and print what each shows.

    python benchmarks/make_figures.py [--out docs/figures] [--jobs N]

Every figure comes from the bundled experiments through the public face (``import simcluster
as sc``), on the Azure LLM inference 2023 conversation trace:

* ``routers_latency_cdf.png`` — three routers on two H100s, first 3,000 requests at 24 req/s;
* ``sweep_tpot.png``, ``sweep_attainment.png``, ``sweep_throughput_latency.png`` — offered
  rate x replicas (1, 2, 4 H100s), first 3,000 requests rate-scaled;
* ``capacity.png`` — the capacity search on one H100 (SLOs TTFT 1 s, TPOT 50 ms, 90%);
* ``cheapest.png`` — the cheapest H100 / A100 / L40S replicas for 20 req/s;
* ``hllm_timeline.png``, ``hllm_active_sockets.png`` — hLLM (one A100 prefilling, Xeon
  sockets decoding under the M/M/c controller) on the trace's first five minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import simcluster as sc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    figs, t0 = {}, time.perf_counter()
    slice_ = {"trace.first_n": 3000}

    cmp_ = sc.compare("default.toml", vary={"router.policy": [
        "round_robin", "join_shortest_queue", "least_outstanding_tokens"]},
        set={**slice_, "trace.rate_per_s": 24, "instances.0.count": 2}, jobs=args.jobs,
        progress=False)
    print(cmp_)
    figs["routers_latency_cdf"] = sc.plots.latency_cdf(cmp_.results)

    sw = sc.sweep("default.toml", grid={"trace.rate_per_s": [4, 8, 12, 16, 20, 24, 32, 40, 48],
                                        "instances.0.count": [1, 2, 4]},
                  set=slice_, jobs=args.jobs, progress=False).frame
    print(sw[["trace.rate_per_s", "instances.0.count", "request_throughput_per_s",
              "tpot_p90_s", "slo_attainment"]].to_string(index=False))
    figs["sweep_tpot"] = sc.plots.latency_percentiles(sw, metric="tpot", hue="instances.0.count")
    figs["sweep_attainment"] = sc.plots.slo_attainment(sw, target=0.9, hue="instances.0.count")
    figs["sweep_throughput_latency"] = sc.plots.throughput_latency(sw, latency="tpot_p90_s",
                                                                   hue="instances.0.count")

    cap = sc.capacity("default.toml", set={**slice_, "instances.0.count": 1}, jobs=args.jobs,
                      progress=False)
    print(cap)
    figs["capacity"] = sc.plots.capacity_curve(cap)

    ch = sc.cheapest("default.toml", rate_per_s=20, devices=["H100-SXM", "A100-80GB", "L40S"],
                     tp=[1, 2], max_count=6, set=slice_, jobs=args.jobs, progress=False)
    print(ch)
    figs["cheapest"] = sc.plots.cheapest_candidates(ch)

    res = sc.load_experiment("hllm_azure_conv.toml", {"trace.window_s": [0, 300]}).run()
    figs["hllm_timeline"] = sc.plots.instance_timeline(res, bins=200, max_instances=7)
    figs["hllm_active_sockets"] = sc.plots.active_instances(res)

    paths = sc.plots.save(figs, args.out)
    print(f"wrote {len(paths)} figures to {args.out} in {time.perf_counter() - t0:.0f} s: "
          f"{', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
