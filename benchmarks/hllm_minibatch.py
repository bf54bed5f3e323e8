"""What hLLM's mini-batch pipeline buys: the dispatcher's mini-batch size and copy overlap.

Runs experiments/hllm_azure_conv_static.toml (one A100 prefilling, twelve Xeon 6148 sockets
decoding, all active; NUMA-aware) with the ``numa_minibatch`` dispatcher's settings varied:

* ``mini_batch`` 1 / 4 / 16 / whole (``None``): the hand-offs of one prefill iteration are cut
  into mini-batches, each one KV copy over PCIe 3.0 into one socket, which starts decoding it
  when its copy ends — so a socket decodes mini-batch j while j+1 is copied;
* ``overlap`` true / false: the GPU prefills its next batch while the copies run (hLLM's
  asynchronous offload), or waits for them (a synchronous copy).

Printed per setting: sustained throughput, TTFT and TPOT percentiles, the hand-off wait (KV on
its socket minus the first token: what the pipeline shortens), and the GPU's busy fraction.

    python benchmarks/hllm_minibatch.py                        # full trace, 5.5 req/s
    python benchmarks/hllm_minibatch.py --window 0 1200 --burst 64     # arrivals in bursts
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd

from simcluster import workload as wl
from simcluster.analysis.hllm import serving_row
from simcluster.experiment import experiments_dir, load_experiment

SETTINGS = [(1, True), (4, True), (16, True), (None, True), (4, False), (None, False)]


def bursts(trace: wl.Trace, size: int) -> wl.Trace:
    """The same requests arriving in groups of ``size``: each group at its first arrival (the
    mean rate kept; a batch client, or a GPU whose prefill queue builds up)."""
    t = trace.arrival_s.copy()
    t = t[(np.arange(len(t)) // size) * size]
    return wl.Trace(t, trace.prompt_tokens, trace.output_tokens, name=f"{trace.name}-bursts")


def run(mini_batch, overlap, window=None, rate=None, burst=None) -> dict:
    exp = load_experiment(experiments_dir() / "hllm_azure_conv_static.toml")
    trace = exp.trace
    if window:
        trace = wl.time_window(trace, *window)
    if rate:
        trace = wl.rescale_rate(trace, rate)
    if burst:
        trace = bursts(trace, burst)
    dis = {**exp.disaggregation, "decode_router_params": {"mini_batch": mini_batch,
                                                          "overlap": overlap}}
    exp = dataclasses.replace(exp, trace=trace, disaggregation=dis)
    t0 = time.perf_counter()
    sim = exp.simulation()
    res = sim.run()
    row = serving_row(sim, res, label=f"{mini_batch or 'whole'}/{'async' if overlap else 'sync'}")
    req = res.requests
    ends = {rid: e for rid, _, _, e, _ in sim.cluster.transfers}
    wait = (req.request_id.map(ends) - req.first_token_s).dropna()
    gpu = res.timeline[res.timeline.instance == 0]
    batches = sim.cluster.decode_router.batches
    row.update(handoff_wait_mean_s=float(wait.mean()), handoff_wait_p90_s=float(
        np.percentile(wait, 90)), gpu_busy=float((gpu.end_s - gpu.start_s).sum()
                                                / res.summary()["span_s"]),
        prefill_batch=float(batches.requests.mean()), wall_s=time.perf_counter() - t0)
    return row


COLUMNS = {"config": "mini-batch/copy", "sustained_req_per_s": "sust req/s",
           "ttft_p50_s": "TTFT p50", "ttft_p90_s": "TTFT p90", "tpot_p50_s": "TPOT p50",
           "tpot_p90_s": "TPOT p90", "slo_attainment": "SLO att",
           "handoff_wait_mean_s": "hand-off wait", "handoff_wait_p90_s": "wait p90",
           "gpu_busy": "GPU busy", "prefill_batch": "prefill batch", "wall_s": "wall s"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", nargs=2, type=float, default=None, metavar=("START", "END"))
    ap.add_argument("--rate", type=float, default=None)
    ap.add_argument("--burst", type=int, default=None,
                    help="requests arrive in groups of this many (mean rate kept)")
    args = ap.parse_args(argv)
    rows = [run(mb, ov, args.window, args.rate, args.burst) for mb, ov in SETTINGS]
    exp = load_experiment(experiments_dir() / "hllm_azure_conv_static.toml")
    print(f"hllm_azure_conv_static (12 Xeon 6148 sockets, NUMA-aware, PCIe 3.0 copies), "
          f"trace {'window ' + str(args.window) if args.window else 'whole'}"
          f"{', rescaled to %.1f req/s' % args.rate if args.rate else ''}"
          f"{', in bursts of %d' % args.burst if args.burst else ''}; "
          f"model {exp.model.name}")
    table = pd.DataFrame(rows)[list(COLUMNS)].rename(columns=COLUMNS)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    from docblocks import run_main
    run_main(main, "hllm.md", "hllm_minibatch")     # --doc [BLOCK] also writes docs/hllm.md
