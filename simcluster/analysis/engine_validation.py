"""``simcluster validate-e2e``: simulate a measured replay and compare latencies.

A replay CSV (written by ``simcluster.harness.engine_profile replay``, or by hand) has one
row per request: ``arrival_s, prompt_tokens, output_tokens`` and the measured ``ttft_s``,
``tpot_s``, ``e2e_s`` (seconds from the request's arrival). The same requests — same arrival
times and lengths — are simulated on one replica of the engine's device with the engine's
batching rules and engine model; p50/p90/p99 of TTFT, TPOT and end-to-end latency and the
throughput are compared.

Throughput is output tokens per second from the first arrival to the last completion.

The engine settings the replay ran with (its ``settings`` metadata line: KV blocks, token
budget, requests per batch, safety margin, CUDA graphs and padding, model shape) are the ones
simulated; where they differ from the engine file's, :func:`validate_replay` warns (the
comparison's ``warnings``) and says which it used. ``overrides`` (``key=value``) replace either.
A replay whose driver stopped waiting before every request finished (a time limit) is
*censored*: every latency is compared as ``min(latency, censor time - arrival)``, the
simulated ones too, and TPOT over the requests that finished in the measurement.
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
from simcluster.engines.calibrate import settings_of
from simcluster.engines.envelope import report_text
from simcluster.engines.model import EngineCostModel
from simcluster.engines.profile import read_metadata
from simcluster.engines.spec import padding_of
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
    from simcluster.workload._columns import commented_csv
    rows = commented_csv(text, str(path))
    df = pd.read_csv(io.StringIO(text), comment="#")
    need = ["arrival_s", "prompt_tokens", "output_tokens", "ttft_s", "tpot_s", "e2e_s"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"missing columns {missing}; a replay needs {need}", file=str(path))
    _check_replay(df, rows)
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    return df, read_metadata(path)


def _check_replay(df: pd.DataFrame, rows) -> None:
    """Every cell the comparison reads, at its line of the file (``rows``): arrival times
    >= 0, token counts whole and >= 1, measured latencies >= 0 s or empty (a request the
    replay did not see finish: compared censored), as a trace's cells are checked."""
    from simcluster.workload._columns import numbers
    numbers(df.arrival_s, rows, "arrival_s", integer=False, minimum=0,
            expected="a time >= 0 s")
    for c in ("prompt_tokens", "output_tokens"):
        numbers(df[c], rows, c, integer=True, minimum=1, expected="a whole number of tokens >= 1")
    for c in ("ttft_s", "tpot_s", "e2e_s"):
        given = df[c].notna().to_numpy()
        numbers(df[c][given], rows.take(np.flatnonzero(given)), c, integer=False, minimum=0,
                expected="a latency >= 0 s (or an empty cell: the request did not finish)")


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


#: Replay settings (the harness's names) -> where the simulation takes them.
SETTING_KEYS = {"num_blocks": ("params", int), "max_requests_per_batch": ("params", int),
                "safety_margin": ("params", float), "block_size": ("scheduler", int),
                "max_batch_tokens": ("scheduler", int)}
#: The harness's model shapes -> simulator presets.
MODEL_NAMES = {"llama-2-7b": "llama-2-7b", "llama-3-8b": "llama-3.1-8b"}


def check_engine_settings(spec: EngineSpec) -> None:
    """The engine file's own settings, checked as a run checks them, naming the file (a
    replay's settings may replace some of them, which does not make the file right): its
    device and model, ``[scheduler]`` (:class:`~simcluster.serving.InstanceConfig`'s fields)
    and ``[batching]`` (the policy and its parameters)."""
    import dataclasses
    from contextlib import contextmanager

    from simcluster.policies import BATCHERS

    @contextmanager
    def at(field):              # an error relocated to the file and its key (err -> key)
        try:
            yield
        except InputError as err:
            raise InputError(err.reason, file=spec.source or None, field=field(err)) from None

    for key, load in (("engine.device", load_device), ("engine.model", load_model)):
        with at(lambda err: key):
            load(getattr(spec, key.split(".")[1]))
    fields = {f.name for f in dataclasses.fields(InstanceConfig)}
    unknown = sorted(set(spec.scheduler) - fields)
    if unknown:
        raise InputError(f"unknown keys {unknown}; known: {sorted(fields)}",
                         file=spec.source or None, field=f"scheduler.{unknown[0]}")
    with at(lambda err: f"scheduler.{err.field}"):
        InstanceConfig(**spec.scheduler)
    with at(lambda err: "batching.policy" if spec.batching not in BATCHERS else
            "batching.params" + (f".{err.field}" if err.field else "")):
        BATCHERS.create(spec.batching, **spec.batching_params)


def effective_settings(spec: EngineSpec, meta: dict, overrides: dict | None = None):
    """(batching params, scheduler, model name, padding, warnings) to simulate a replay with:
    the replay's own settings where its metadata has them, the engine file's otherwise,
    ``overrides`` last; a warning for every setting where the replay and the file differ."""
    params, sched = dict(spec.batching_params), dict(spec.scheduler)
    model, padding = spec.model, dict(spec.padding)
    replay = settings_of(meta)
    warnings = []

    def put(key, value, field=None):
        where, cast = SETTING_KEYS[key]
        try:
            value = cast(value)
        except ValueError:
            what = "a whole number" if cast is int else "a number"
            raise InputError(f"{key}: expected {what}, got {value!r}",
                             field=field or "settings") from None
        if where == "params":
            old = params.get(key)
            params[key] = value
        else:
            skey = "max_batched_tokens" if key == "max_batch_tokens" else key
            old = sched.get(skey)
            sched[skey] = value
        return old
    for key in SETTING_KEYS:
        if key in replay:
            old = put(key, replay[key])
            if old is not None and float(old) != float(replay[key]):
                warnings.append(f"{key}: the replay ran {replay[key]}, the engine file says "
                                f"{old}; simulating the replay's")
    graphs = replay.get("use_cuda_graph")
    if graphs is not None and (graphs == "True") != (spec.execution.decode == "graphs"):
        warnings.append(f"CUDA graphs: the replay ran use_cuda_graph={graphs}, the engine "
                        f"file models {spec.execution.decode} execution; the engine model is "
                        "used as it is (fit one on a profile of the replay's regime)")
    if "model_name" in replay:
        name = MODEL_NAMES.get(replay["model_name"], replay["model_name"])
        if load_model(name).name != load_model(model).name:
            warnings.append(f"model: the replay served {replay['model_name']}, the engine "
                            f"was fitted on {spec.model}; its host terms are applied as they "
                            "are and its device terms scaled to the replay's model "
                            f"({spec.transfer or 'kv_bytes, attention'})")
        model = name
    for key, value in (overrides or {}).items():
        if key == "model":
            model = value
        elif key in SETTING_KEYS:
            put(key, value, field="--set")
        else:
            raise InputError(f"unknown override {key!r}; known: model, "
                             f"{', '.join(SETTING_KEYS)}", field="--set")
    if "max_requests_per_batch" in params:
        sched["max_num_seqs"] = params["max_requests_per_batch"]
    return params, sched, model, padding_of(padding, sched, params), warnings


def censor_time(df: pd.DataFrame) -> float | None:
    """When the replay's driver stopped waiting (the last token it saw), if some request never
    finished; None when all did."""
    if np.isfinite(df.e2e_s.to_numpy(float)).all():
        return None
    seen = np.concatenate([df.arrival_s + df.e2e_s, df.arrival_s + df.ttft_s])
    seen = seen[np.isfinite(seen)]
    return float(seen.max()) if len(seen) else None


@dataclass
class Comparison:
    """Simulated vs measured summary statistics of one replay."""

    name: str
    measured: dict
    simulated: dict
    meta: dict
    requests: pd.DataFrame          # per request: measured and simulated latencies
    warnings: list = None           # settings mismatches, envelope, censoring

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
                 *[f"warning: {w}" for w in (self.warnings or [])],
                 f"{'metric':<26}{'measured':>12}{'simulated':>12}{'error':>9}"]
        for r in self.table().itertuples():
            unit, k = ("tok/s", 1.0) if r.metric.startswith("throughput") else (
                ("ms", 1e3) if r.metric.startswith("tpot") else ("s", 1.0))
            lines.append(f"{r.metric + ' [' + unit + ']':<26}{r.measured * k:>12.4g}"
                         f"{r.simulated * k:>12.4g}{100 * r.error:>+8.1f}%")
        return "\n".join(lines)


def simulate_replay(df: pd.DataFrame, spec: EngineSpec, name: str = "replay", meta=None,
                    overrides=None):
    """Simulate the replay's requests on one replica of the engine (settings: see
    :func:`effective_settings`). Returns (results, warnings)."""
    params, sched, model, pad, warnings = effective_settings(spec, meta or {}, overrides)
    arrival = df.arrival_s.to_numpy(float)
    trace = Trace(arrival - arrival.min(), df.prompt_tokens.to_numpy(np.int64),
                  df.output_tokens.to_numpy(np.int64), name=name)
    layout = Layout.uniform(load_device(spec.device))
    inst = InstanceSpec(layout, InstanceConfig(**sched), batching=spec.batching,
                        batching_params=params, name=spec.name)
    cost = EngineCostModel.of(spec)
    cost.pad = pad
    sim = Simulation(trace, load_model(model), [inst], cost_model=cost, name=name)
    res = sim.run()
    env = getattr(res, "envelope", None)
    if env:
        warnings += [report_text(spec.name, c) for c in env.values() if c.outside_any]
    return res, warnings


def _censored(v, arrival, cut):
    v = np.asarray(v, float)
    if cut is None:
        return v
    limit = cut - np.asarray(arrival, float)
    return np.where(np.isfinite(v), np.minimum(v, limit), limit)


def validate_replay(path, engine, overrides: dict | None = None) -> Comparison:
    """Simulate the replay at ``path`` with ``engine`` (a name or spec) and compare."""
    spec = load_engine(engine) if isinstance(engine, str) else engine
    check_engine_settings(spec)
    df, meta = read_replay(path)
    name = meta.get("kind", str(path)).replace("trace replay ", "")
    try:
        res, warnings = simulate_replay(df, spec, name, meta, overrides)
    except InputError as err:       # (a setting of the replay's, or a --set, the engine refuses)
        if err.file is not None or err.field == "--set":
            raise
        raise InputError(f"{err.reason} (the replay's settings and --set on engine "
                         f"{spec.name}, batching {spec.batching})", file=str(path),
                         field=err.field) from None
    r = res.requests
    cut = censor_time(df)
    arr = df.arrival_s.to_numpy(float) - df.arrival_s.min()
    done = np.isfinite(df.e2e_s.to_numpy(float))
    m_tpot, s_tpot = df.tpot_s.to_numpy(float), r.tpot_s.to_numpy(float)
    if cut is not None:
        warnings.append(f"censored: {int((~done).sum())} of {len(df)} requests had not finished "
                        f"when the replay stopped at {cut:.1f} s; latencies compared as "
                        "min(latency, stop - arrival), TPOT over the requests that finished")
        s_tpot = np.where(done, s_tpot, np.nan)
        m_tpot = np.where(done, m_tpot, np.nan)
    m_fin = df.arrival_s + df.e2e_s
    s_fin = r.finish_s.to_numpy(float)
    measured = _stats(_censored(df.ttft_s, df.arrival_s, cut), m_tpot,
                      _censored(df.e2e_s, df.arrival_s, cut), df.arrival_s, m_fin,
                      df.output_tokens)
    simulated = _stats(_censored(r.ttft_s, arr, None if cut is None else cut - df.arrival_s.min()),
                       s_tpot, _censored(r.e2e_s, arr, None if cut is None
                                         else cut - df.arrival_s.min()),
                       r.arrival_s, np.where(done, s_fin, np.nan) if cut is not None else s_fin,
                       r.output_tokens)
    per = pd.DataFrame({"arrival_s": df.arrival_s, "prompt_tokens": df.prompt_tokens,
                        "output_tokens": df.output_tokens, "ttft_s": df.ttft_s,
                        "sim_ttft_s": r.ttft_s.to_numpy(), "tpot_s": df.tpot_s,
                        "sim_tpot_s": r.tpot_s.to_numpy(), "e2e_s": df.e2e_s,
                        "sim_e2e_s": r.e2e_s.to_numpy()})
    return Comparison(name, measured, simulated, meta, per, warnings)
