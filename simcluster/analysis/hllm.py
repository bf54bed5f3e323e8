"""hLLM (Chu, Liu, Yuan, Zhang; UConn): GPU prefill, decode offloaded to CPU sockets.

simcluster expresses hLLM with general parts — a :class:`~simcluster.cluster.pools.DisaggregatedCluster`
whose decode pool is CPU-socket instances, the ``mmc`` controller
(:mod:`simcluster.policies.controllers`), the ``bucketed`` batcher and ``length_buckets`` router
(:mod:`simcluster.policies.bucketed`), NUMA placements and the ``numa_minibatch`` dispatcher
(:mod:`simcluster.policies.numa`). This module holds the analyses that reproduce the source's figures:

* :func:`decode_ratio_curve` — GPU/CPU decode *throughput* ratio vs context length, each device
  at the best batch its memory holds (the source: 235x at 512 tokens, 13.5x at 24k, A100 vs one
  Xeon Gold 6148 socket);
* :func:`prefill_throughput` — prefill-only throughput (queries/s) of one GPU for a prompt set,
  random-length vs length-bucketed static batches (the source: 2.0 vs 2.57 q/s);
* :func:`serving_row` — one row of the GPU-only vs hLLM comparison (throughput, TTFT, TPOT,
  cost per million tokens, CPU sockets active and idle).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from simcluster.cluster import InstanceSpec
from simcluster.cost import CostModel, Layout
from simcluster.cost.memory import memory_plan
from simcluster.serving.config import InstanceConfig
from simcluster.policies.controllers import usage_frame, idle_fraction
from simcluster.simulation import Simulation
from simcluster.workload import Trace

SOURCE_RATIOS = {512: 235.0, 24 * 1024: 13.5}       # hLLM slides, "Challenge 1"
SOURCE_PREFILL_QPS = {"random": 2.0, "similar": 2.57}

_EMPTY = np.zeros(0, dtype=np.int64)


def best_decode_throughput(model, device, context_tokens: int, cost_model: CostModel | None = None,
                           *, max_batch: int | None = None, memory_utilization: float = 0.9,
                           max_batched_tokens: int = 8192) -> dict:
    """Decode tokens/s of one ``device`` at the batch that maximises it among those whose KV
    (``context_tokens`` per sequence) fits the memory left after weights and reserve.

    Searches powers of two and the largest batch that fits (capped by ``max_batch``); the
    step time is the cost model's decode iteration at that batch and context. Reports the
    smallest batch within 1% of the best rate (past it the curve is flat: compute-bound).
    """
    cost_model = cost_model or CostModel()
    layout = Layout.uniform(device)
    timer = cost_model.timer(model, layout)
    mem = memory_plan(model, layout, memory_utilization=memory_utilization,
                      max_batched_tokens=max_batched_tokens,
                      max_num_seqs=max_batch or 256)
    fits = int(mem.kv_capacity_tokens // (context_tokens + 1))
    top = min(fits, max_batch) if max_batch else fits
    if top < 1:
        return {"device": device.name, "context": context_tokens, "batch": 0, "step_s": math.nan,
                "tokens_per_s": 0.0, "kv_capacity_tokens": mem.kv_capacity_tokens}
    batches = sorted({top, *(2 ** k for k in range(int(math.log2(top)) + 1))})
    steps = [float(timer.time(_EMPTY, _EMPTY, b, b * (context_tokens + 1), b)) for b in batches]
    rates = [b / t for b, t in zip(batches, steps)]
    k = next(k for k, r in enumerate(rates) if r >= 0.99 * max(rates))
    rate, b, step = rates[k], batches[k], steps[k]
    return {"device": device.name, "context": context_tokens, "batch": b, "step_s": step,
            "tokens_per_s": rate, "kv_capacity_tokens": mem.kv_capacity_tokens}


def decode_ratio_curve(model, gpu, cpu, contexts: Sequence[int],
                       cost_model: CostModel | None = None, *, gpu_max_batch: int | None = None,
                       cpu_max_batch: int | None = None, cpu_model=None) -> pd.DataFrame:
    """GPU/CPU decode throughput ratio per context length (one row per context).

    ``cpu_model`` serves another variant of the model on the CPU (e.g. fp32 weights, as a
    CPU without 16-bit arithmetic often runs it); default the same model.
    """
    rows = []
    for ctx in contexts:
        g = best_decode_throughput(model, gpu, ctx, cost_model, max_batch=gpu_max_batch)
        c = best_decode_throughput(cpu_model or model, cpu, ctx, cost_model,
                                   max_batch=cpu_max_batch)
        rows.append({"context": int(ctx), "gpu_batch": g["batch"],
                     "gpu_tokens_per_s": g["tokens_per_s"], "cpu_batch": c["batch"],
                     "cpu_tokens_per_s": c["tokens_per_s"],
                     "ratio": (g["tokens_per_s"] / c["tokens_per_s"]
                               if c["tokens_per_s"] else math.inf),
                     "source_ratio": SOURCE_RATIOS.get(int(ctx), math.nan)})
    return pd.DataFrame(rows)


def prefill_throughput(prompts, model, gpu, *, batch: int = 8, bucketed: bool = False,
                       buckets: Sequence[int] = (256, 512, 1024, 2048, 4096),
                       padded: bool = True, cost_model: CostModel | None = None) -> dict:
    """Queries per second of one GPU prefilling ``prompts`` (all queued at time 0, one output
    token each), in static batches of ``batch``: in arrival order (random lengths) or grouped
    by length bucket (``bucketed``); padded to the longest prompt of a batch or not."""
    prompts = np.asarray(prompts, dtype=np.int64)
    n = len(prompts)
    trace = Trace(np.zeros(n), prompts, np.ones(n, dtype=np.int64), name="prefill")
    # a token budget that never splits a batch of ``batch`` prompts (it sizes the memory plan's
    # activation reserve, as vLLM's profiling run does)
    cfg = InstanceConfig(max_num_seqs=batch, max_batched_tokens=batch * int(prompts.max()),
                         max_model_len=int(prompts.max()) + 1)
    params = {"buckets": [int(prompts.max()) + 1], "padded": padded, "max_batch": batch}
    router, router_params = "round_robin", {}
    if bucketed:
        params["buckets"] = list(buckets)
        router, router_params = "length_buckets", {"buckets": list(buckets), "max_batch": batch}
    spec = InstanceSpec(Layout.uniform(gpu), cfg, batching="bucketed", batching_params=params)
    sim = Simulation(trace, model, [spec], router=router, router_params=router_params,
                     cost_model=cost_model)
    req = sim.run().requests
    if req.rejected.any():
        raise ValueError(f"{int(req.rejected.sum())} prompts rejected: "
                         f"{req.reason[req.rejected].iloc[0]}")
    span = float(req.finish_s.max() - req.arrival_s.min())
    tl = sim.cluster.instances[0].timeline
    return {"queries": n, "batch": batch, "bucketed": bucketed, "padded": padded,
            "span_s": span, "queries_per_s": n / span, "iterations": len(tl),
            "mean_batch": n / len(tl)}


def serving_row(sim: Simulation, results=None, *, warmup_s: float = 60.0,
                label: str = "") -> dict:
    """One row of a serving comparison from a finished simulation.

    * ``req_per_s`` / ``out_tok_per_s``: finished requests and their output tokens over the
      span, first arrival to last finish (drain included; the summary's throughput is over
      the arrival window);
      ``sustained_req_per_s``: requests finished between ``warmup_s`` after the first arrival
      and the last arrival, per second of that span — what an overloaded system keeps up.
    * ``usd_per_m_tokens``: every instance's devices for the whole span (the summary's);
      ``usd_per_m_tokens_active``: CPU sockets charged only while active (a controller's
      parked sockets are free for other work).
    * CPU sockets (instances on ``kind = "cpu"`` devices): count, mean active, ``cpu_idle_
      fraction`` (active time with no request at all), ``cpu_batch_mean`` (time-averaged
      sequences per decode iteration while busy) and its ``cpu_slot_occupancy`` of
      ``max_num_seqs``.
    """
    results = results or sim.results()
    s = results.summary()
    req = results.requests
    start = float(req.arrival_s.min())
    end = start + s["span_s"]
    last = float(req.arrival_s.max())
    steady = (req.finish_s > start + warmup_s) & (req.finish_s <= last)
    row = {"config": label or sim.name, "finished": s["finished"], "rejected": s["rejected"],
           "req_per_s": s["finished"] / s["span_s"] if s["span_s"] > 0 else math.nan,
           "sustained_req_per_s": (float(steady.sum()) / (last - start - warmup_s)
                                   if last - start > warmup_s else math.nan),
           "out_tok_per_s": (float(req.output_tokens[~req.rejected].sum()) / s["span_s"]
                             if s["span_s"] > 0 else math.nan),
           "ttft_p50_s": s["ttft_p50_s"], "ttft_p90_s": s["ttft_p90_s"],
           "tpot_p50_s": s["tpot_p50_s"], "tpot_p90_s": s["tpot_p90_s"],
           "usd_per_m_tokens": s["cost_per_m_tokens_usd"]}
    if "slo_attainment" in s:
        row["slo_attainment"] = s["slo_attainment"]
    pool = [i for i in sim.cluster.instances if i.layout.devices[0].kind == "cpu"]
    row["sockets"] = len(pool)
    if not pool:
        row.update(sockets_active_mean=0.0, cpu_idle_fraction=math.nan,
                   cpu_batch_mean=math.nan, cpu_slot_occupancy=math.nan,
                   usd_per_m_tokens_active=row["usd_per_m_tokens"])
        return row
    ids = [i.id for i in pool]
    ctl = getattr(sim.cluster, "controller", None)
    activity = (ctl.activity if ctl is not None else
                pd.DataFrame([(start, i, True) for i in ids],
                             columns=["time_s", "instance", "active"]))
    tl = results.timeline[results.timeline.instance.isin(ids)]
    use = usage_frame(tl, activity[activity.instance.isin(ids)], start, end)
    dur = tl.end_s - tl.start_s
    batch = float((tl.decode_seqs * dur).sum() / dur.sum()) if len(tl) else 0.0
    row["sockets_active_mean"] = float(use.active_s.sum() / (end - start))
    row["cpu_idle_fraction"] = idle_fraction(use)
    row["cpu_batch_mean"] = batch
    row["cpu_slot_occupancy"] = batch / pool[0].config.max_num_seqs
    cpu_price = pool[0].layout.devices[0].price_usd_per_hour
    tokens = float((req.prompt_tokens + req.output_tokens)[~req.rejected].sum())
    parked_usd = cpu_price * (len(pool) * (end - start) - use.active_s.sum()) / 3600
    row["usd_per_m_tokens_active"] = (s["cost_usd"] - parked_usd) / tokens * 1e6
    return row
