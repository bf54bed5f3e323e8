"""An analytic stand-in for the simulator over the LLMShare space: for tests and examples.

NOT a model of any hardware: a smooth, cheap pair of objectives with the *shape* of the real
problem, so that the search machinery can be exercised and its tests can know the true front
by enumeration. Per pool: compute from cores x lanes x array_height^2 (a square array at
1 GHz) and vector width, derated by how well the buffers hold tiles; memory bandwidth rising
with capacity (more HBM stacks); link bandwidth from the link count. Serving time adds a
compute-bound prefill term and a bandwidth-bound decode term (weights read once per step, a
collective per layer over the links). Cost adds per-device silicon (rising with every unit),
memory per GB, links, and a per-server overhead. A pool whose memory cannot hold the model's
weights makes the design infeasible (NaN objectives and a reason), as a real evaluator does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WEIGHTS_GB = 350.0             # GPT-3 175B in 16-bit weights
PROMPT_TOKENS = 2454 * 1000    # the trace's prompt tokens (2,454 requests of ~1,000 tokens)
DECODE_STEPS = 2454 * 200 / 64  # decode steps: 200 output tokens each, 64 sequences a batch


def _pool_terms(t: pd.DataFrame, pool: str) -> dict[str, np.ndarray]:
    c = (lambda f: t[f"{pool}_{f}"].to_numpy(dtype=float))
    devices = c("servers") * c("devices_per_server")
    eff = (c("global_buffer_mb") / (c("global_buffer_mb") + 40.0)
           * c("local_buffer_kb") / (c("local_buffer_kb") + 128.0))
    matrix = c("cores") * c("lanes") * c("array_height") ** 2 * 2e9 * eff
    vector = c("cores") * c("vector_width") * 2e9
    flops = devices * (matrix + 0.5 * vector)
    bw = devices * 40e9 * c("memory_gb")
    links = devices * c("links_per_device") * 25e9
    silicon = (c("cores") * (c("lanes") * c("array_height") ** 2 * 0.004 + c("vector_width") * 0.1)
               + c("global_buffer_mb") * 2.0 + c("cores") * c("local_buffer_kb") * 0.004)
    per_device = 500.0 + silicon + 7.0 * c("memory_gb") + 30.0 * c("links_per_device")
    return {"devices": devices, "flops": flops, "bw": bw, "links": links,
            "memory_gb": devices * c("memory_gb"),
            "cost": devices * per_device + c("servers") * 20_000.0}


def synthetic_objectives(designs: pd.DataFrame) -> pd.DataFrame:
    """(serving_time_s, cost_usd, reason) of each design of the LLMShare space, analytically."""
    p, d = _pool_terms(designs, "prefill"), _pool_terms(designs, "decode")
    params = WEIGHTS_GB * 1e9 / 2
    prefill = PROMPT_TOKENS * 2 * params / p["flops"] + PROMPT_TOKENS * 96 * 24576 / p["links"]
    decode = DECODE_STEPS * (WEIGHTS_GB * 1e9 / d["bw"] + 64 * 2 * params / d["flops"]
                             + 96 * 64 * 24576 * 2 / d["links"])
    time_s = prefill + decode
    cost = p["cost"] + d["cost"]
    short = (p["memory_gb"] < WEIGHTS_GB) | (d["memory_gb"] < WEIGHTS_GB)
    reason = np.where(short, "a pool's memory cannot hold the model's weights", "")
    return pd.DataFrame({"serving_time_s": np.where(short, np.nan, time_s),
                         "cost_usd": np.where(short, np.nan, cost), "reason": reason},
                        index=designs.index)


def synthetic_evaluate_one(design: dict) -> dict:
    """:func:`synthetic_objectives` of one design (a picklable per-design evaluator)."""
    row = synthetic_objectives(pd.DataFrame([design])).iloc[0]
    return {"serving_time_s": float(row["serving_time_s"]), "cost_usd": float(row["cost_usd"]),
            "reason": row["reason"]}
