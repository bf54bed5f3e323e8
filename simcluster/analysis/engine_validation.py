"""``simcluster validate-e2e``: simulate a measured replay and compare latencies.

A replay CSV (written by ``simcluster.harness.engine_profile replay``, or by hand) has one
row per request: ``arrival_s, prompt_tokens, output_tokens`` and the measured ``ttft_s``,
``tpot_s``, ``e2e_s`` (seconds from the request's arrival). The same requests — same arrival
times and lengths — are simulated on one replica of the engine's device with the engine's
batching rules and engine model; p50/p90/p99 of TTFT, TPOT and end-to-end latency and the
throughput are compared.

Throughput is output tokens per second from the first arrival to the last completion.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simcluster.cluster import InstanceSpec
from simcluster.cost import Layout
from simcluster.engines import EngineSpec, load_engine
from simcluster.engines.model import EngineCostModel
from simcluster.engines.profile import read_metadata
from simcluster.errors import InputError
from simcluster.hardware import load_device
from simcluster.models import load_model
from simcluster.serving import InstanceConfig
from simcluster.simulation import Simulation
from simcluster.workload import Trace

METRICS = ("ttft", "tpot", "e2e")
QUANTILES = (50, 90, 99)


def read_replay(path) -> tuple[pd.DataFrame, dict]:
    """A measured replay: requests with their measured latencies, and the file's metadata."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        raise InputError("no such replay file", file=str(path)) from None
    df = pd.read_csv(io.StringIO(text), comment="#")
    need = ["arrival_s", "prompt_tokens", "output_tokens", "ttft_s", "tpot_s", "e2e_s"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"missing columns {missing}; a replay needs {need}", file=str(path))
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    return df, read_metadata(path)


def _stats(ttft, tpot, e2e, arrival, finish, out_tokens) -> dict:
    s = {}
    for name, v in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        v = np.asarray(v, float)
        v = v[np.isfinite(v)]
        for q in QUANTILES:
            s[f"{name}_p{q}"] = float(np.percentile(v, q)) if len(v) else math.nan
    done = np.isfinite(np.asarray(finish, float))
    span = np.nanmax(np.asarray(finish, float)) - np.min(arrival)
    s["throughput_tok_s"] = float(np.sum(np.asarray(out_tokens)[done]) / span)
    s["finished"] = int(done.sum())
    return s


@dataclass
class Comparison:
    """Simulated vs measured summary statistics of one replay."""

    name: str
    measured: dict
    simulated: dict
    meta: dict
    requests: pd.DataFrame          # per request: measured and simulated latencies

    def error(self, key: str) -> float:
        m, s = self.measured[key], self.simulated[key]
        return (s - m) / m if m else math.nan

    def table(self) -> pd.DataFrame:
        rows = []
        for key in [f"{n}_p{q}" for n in METRICS for q in QUANTILES] + ["throughput_tok_s"]:
            rows.append({"metric": key, "measured": self.measured[key],
                         "simulated": self.simulated[key], "error": self.error(key)})
        return pd.DataFrame(rows)

    def format(self) -> str:
        lines = [f"{self.name}: {len(self.requests)} requests "
                 f"({self.meta.get('rate_per_s', '?')} req/s), "
                 f"{self.measured['finished']} finished measured, "
                 f"{self.simulated['finished']} simulated",
                 f"{'metric':<26}{'measured':>12}{'simulated':>12}{'error':>9}"]
        for r in self.table().itertuples():
            unit, k = ("tok/s", 1.0) if r.metric.startswith("throughput") else (
                ("ms", 1e3) if r.metric.startswith("tpot") else ("s", 1.0))
            lines.append(f"{r.metric + ' [' + unit + ']':<26}{r.measured * k:>12.4g}"
                         f"{r.simulated * k:>12.4g}{100 * r.error:>+8.1f}%")
        return "\n".join(lines)


def simulate_replay(df: pd.DataFrame, spec: EngineSpec, name: str = "replay"):
    """Simulate the replay's requests on one replica of the engine."""
    arrival = df.arrival_s.to_numpy(float)
    trace = Trace(arrival - arrival.min(), df.prompt_tokens.to_numpy(np.int64),
                  df.output_tokens.to_numpy(np.int64), name=name)
    layout = Layout.uniform(load_device(spec.device))
    inst = InstanceSpec(layout, InstanceConfig(**spec.scheduler), batching=spec.batching,
                        batching_params=spec.batching_params, name=spec.name)
    sim = Simulation(trace, load_model(spec.model), [inst],
                     cost_model=EngineCostModel.of(spec), name=name)
    return sim.run()


def validate_replay(path, engine) -> Comparison:
    """Simulate the replay at ``path`` with ``engine`` (a name or spec) and compare."""
    spec = load_engine(engine) if isinstance(engine, str) else engine
    df, meta = read_replay(path)
    name = meta.get("kind", str(path)).replace("trace replay ", "")
    res = simulate_replay(df, spec, name)
    r = res.requests
    measured = _stats(df.ttft_s, df.tpot_s, df.e2e_s, df.arrival_s,
                      df.arrival_s + df.e2e_s, df.output_tokens)
    simulated = _stats(r.ttft_s, r.tpot_s, r.e2e_s, r.arrival_s, r.finish_s, r.output_tokens)
    per = pd.DataFrame({"arrival_s": df.arrival_s, "prompt_tokens": df.prompt_tokens,
                        "output_tokens": df.output_tokens, "ttft_s": df.ttft_s,
                        "sim_ttft_s": r.ttft_s.to_numpy(), "tpot_s": df.tpot_s,
                        "sim_tpot_s": r.tpot_s.to_numpy(), "e2e_s": df.e2e_s,
                        "sim_e2e_s": r.e2e_s.to_numpy()})
    return Comparison(name, measured, simulated, meta, per)
