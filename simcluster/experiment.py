"""An experiment: one TOML file -> frozen config objects -> Simulation -> Results.

    name = "default"
    seed = 0
    [trace]      source = "azure-conv"  (bundled name, or a path relative to this file)
                 optional: format, sort, first_n, window_s = [start, end], rate_per_s,
                 subsample (a fraction or a count; seeded)
    [trace.synthetic]  instead of source: n, rate_per_s, cv (1 = Poisson),
                 prompt / output = {dist = "fixed", tokens = N} | {dist = "lognormal",
                 median = M, sigma = S, max_tokens = X} | {dist = "resample", source = NAME}
    [model]      name = "llama-2-7b"  (a preset) or config = "path/config.json"
    [[instances]] device = "H100-SXM" (or devices = [...] for one heterogeneous TP group),
                 count, tp, pp, link, stage_link, name, batching, [instances.scheduler]
                 (block_size, max_num_seqs, max_batched_tokens, chunked_prefill,
                 memory_utilization, max_model_len), [instances.batching_params]
                 pool = "prefill" | "decode" (with [disaggregation]),
                 partition = "equal" | "hexgen" | "hels" (a devices = [...] TP group's head,
                 FFN and KV shares), [instances.partition_params] (batch_size,
                 context_tokens, max_context_tokens; hels: kv_rules, max_steps; hexgen:
                 fit_batch) — see simcluster.partition
    [router]     policy = "round_robin", [router.params]
    [disaggregation]  kv_link = "PCIe4", decode_router, [disaggregation.decode_router_params],
                 offload = "all", [disaggregation.offload_params], controller,
                 [disaggregation.controller_params], numa (a NUMA placement of CPU-socket
                 decode instances: "aware", "oblivious", "interleave"),
                 [disaggregation.numa_params]   (see simcluster.disagg, simcluster.numa)
    [slo]        ttft_s, tpot_s
    [cost]       calibration = "measured" (fitted kernel tables, the default) or "datasheet";
                 engine = "hf-cb-h100" (an engine model of hwspecs/engines: its overheads on
                 top of the device time; its batching rules are the instances' to choose:
                 batching = "hf_cb", see hwspecs/engines/README.md)

Every key is checked: an unknown or mistyped key fails naming the file and the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from simcluster import workload as wl
from simcluster.calibration import load_calibration
from simcluster.cluster import Cluster, InstanceSpec
from simcluster.disagg import DisaggregatedCluster
from simcluster.cost import CostModel, Layout
from simcluster.errors import InputError
from simcluster.hardware import load_device, load_link
from simcluster.instance import InstanceConfig
from simcluster.models import load_model
from simcluster.simulation import Simulation


def experiments_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "experiments"


DEFAULT_EXPERIMENT = "default.toml"


class _Table:
    """A TOML table read with key checking: every key must be taken exactly once."""

    def __init__(self, data: dict, file: str, where: str):
        self.data, self.file, self.where = dict(data), file, where
        self.seen: set[str] = set()

    def _err(self, key, msg):
        return InputError(msg, file=self.file, field=f"{self.where}{key}")

    def get(self, key: str, kind, default: Any = ..., *, check=None):
        self.seen.add(key)
        if key not in self.data:
            if default is ...:
                raise self._err(key, f"missing; expected {getattr(kind, '__name__', kind)}")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self._err(key, f"expected {names}, got {value!r}")
        if check is not None and not check(value):
            raise self._err(key, f"value {value!r} out of range")
        return value

    def sub(self, key: str, required=False) -> "_Table | None":
        value = self.get(key, dict, ... if required else None)
        return None if value is None else _Table(value, self.file, f"{self.where}{key}.")

    def done(self):
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise self._err(extra[0], f"unknown key; known here: {', '.join(sorted(self.seen))}")


def _positive(v):
    return v > 0


@dataclass(frozen=True)
class Experiment:
    """Everything one simulation needs, resolved and validated."""

    name: str
    seed: int
    trace: Any
    model: Any
    instances: tuple[InstanceSpec, ...]
    router: str = "round_robin"
    router_params: dict = field(default_factory=dict)
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None
    cost_model: CostModel = field(default_factory=CostModel)
    source: str = ""
    disaggregation: dict | None = None   # DisaggregatedCluster keyword arguments

    def simulation(self) -> Simulation:
        factory = Cluster
        if self.disaggregation is not None:
            factory = partial(DisaggregatedCluster, **self.disaggregation)
        return Simulation(self.trace, self.model, self.instances, router=self.router,
                          router_params=self.router_params, cost_model=self.cost_model,
                          ttft_slo_s=self.ttft_slo_s, tpot_slo_s=self.tpot_slo_s,
                          name=self.name, cluster_factory=factory)

    def run(self, progress=None):
        return self.simulation().run(progress=progress)


def load_experiment(path=None) -> Experiment:
    """Read an experiment TOML (the bundled default when ``path`` is None)."""
    path = Path(path) if path is not None else experiments_dir() / DEFAULT_EXPERIMENT
    if not path.exists() and (experiments_dir() / path).exists():
        path = experiments_dir() / path
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("no such experiment file", file=str(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"not valid TOML: {err}", file=str(path)) from None
    top = _Table(data, str(path), "")
    name = top.get("name", str, path.stem)
    seed = top.get("seed", int, 0)
    rng = np.random.default_rng(seed)
    trace = _trace(top.sub("trace", required=True), path.parent, rng)
    model = _model(top.sub("model", required=True), path.parent)
    cost = top.sub("cost")
    calibration, engine = "measured", None
    if cost is not None:
        calibration = cost.get("calibration", str, calibration)
        engine = cost.get("engine", str, None)
        cost.done()
    if engine is not None:
        from simcluster.engines import load_engine
        from simcluster.engines.model import EngineCostModel
        try:
            spec = load_engine(engine)
        except KeyError as err:
            raise InputError(err.args[0], file=str(path), field="cost.engine") from None
        cost_model = EngineCostModel(spec.terms, calibration if "calibration" in cost.data
                                     else spec.calibration, spec.name)
    else:
        cost_model = CostModel(load_calibration(calibration))
    specs = tuple(_instance(_Table(t, str(path), f"instances[{i}]."), path.parent, model,
                            cost_model)
                  for i, t in enumerate(top.get("instances", list)))
    if not specs:
        raise InputError("needs at least one [[instances]] table", file=str(path),
                         field="instances")
    router = top.sub("router")
    policy, params = "round_robin", {}
    if router is not None:
        policy = router.get("policy", str, policy)
        params = router.get("params", dict, {})
        router.done()
    slo = top.sub("slo")
    ttft = tpot = None
    if slo is not None:
        ttft = slo.get("ttft_s", float, None, check=_positive)
        tpot = slo.get("tpot_s", float, None, check=_positive)
        slo.done()
    disagg = _disaggregation(top.sub("disaggregation"))
    top.done()
    return Experiment(name, seed, trace, model, specs, policy, params, ttft, tpot,
                      cost_model, str(path), disagg)


def _disaggregation(t: _Table | None) -> dict | None:
    if t is None:
        return None
    out = {"kv_link": load_link(t.get("kv_link", str)),
           "decode_router": t.get("decode_router", str, "least_outstanding_tokens"),
           "decode_router_params": t.get("decode_router_params", dict, {}),
           "offload": t.get("offload", str, "all"),
           "offload_params": t.get("offload_params", dict, {}),
           "controller": t.get("controller", str, None),
           "controller_params": t.get("controller_params", dict, {}),
           "numa": t.get("numa", str, None),
           "numa_params": t.get("numa_params", dict, {})}
    t.done()
    return out


def _resolve(source: str, base: Path) -> str | Path:
    if source in wl.bundled_traces():
        return source
    p = Path(source)
    return p if p.is_absolute() else base / p


def _lengths(t: _Table | None, rng, key: str):
    if t is None:
        raise InputError(f"missing [trace.synthetic.{key}]", file=None, field=key)
    dist = t.get("dist", str, check=lambda d: d in ("fixed", "lognormal", "resample"))
    if dist == "fixed":
        spec = t.get("tokens", int, check=_positive)
    elif dist == "lognormal":
        spec = partial(wl.lognormal_lengths, median=t.get("median", float, check=_positive),
                       sigma=t.get("sigma", float, check=_positive),
                       max_tokens=t.get("max_tokens", int, None))
    else:
        spec = wl.load_trace(t.get("source", str))
    t.done()
    return spec


def _trace(t: _Table, base: Path, rng: np.random.Generator):
    syn = t.sub("synthetic")
    if syn is not None:
        n = syn.get("n", int, check=_positive)
        rate = syn.get("rate_per_s", float, check=_positive)
        cv = syn.get("cv", float, 1.0, check=_positive)
        arrivals = partial(wl.gamma_arrivals, rate_per_s=rate, cv=cv)
        prompt = _lengths(syn.sub("prompt", required=True), rng, "prompt")
        output = None if isinstance(prompt, wl.Trace) else _lengths(
            syn.sub("output", required=True), rng, "output")
        syn.done()
        trace = wl.synthetic_trace(n, arrivals=arrivals, prompt=prompt, output=output, rng=rng)
    else:
        trace = wl.load_trace(_resolve(t.get("source", str), base),
                              format=t.get("format", str, None), sort=t.get("sort", bool, False))
    window = t.get("window_s", list, None)
    if window is not None:
        if len(window) != 2:
            raise InputError("expected [start_s, end_s]", file=t.file, field="trace.window_s")
        trace = wl.time_window(trace, float(window[0]), float(window[1]))
    first = t.get("first_n", int, None, check=_positive)
    if first is not None:
        trace = wl.first_n(trace, first)
    sub = t.get("subsample", (int, float), None, check=_positive)
    if sub is not None:
        trace = wl.subsample(trace, sub, rng)
    rate = t.get("rate_per_s", float, None, check=_positive)
    if rate is not None:
        trace = wl.rescale_rate(trace, rate)
    t.done()
    return trace


def _model(t: _Table, base: Path):
    name = t.get("name", str, None)
    config = t.get("config", str, None)
    t.done()
    if (name is None) == (config is None):
        raise InputError("give exactly one of 'name' (a preset) or 'config' (a config.json)",
                         file=t.file, field="model")
    return load_model(name if config is None else base / config)


def _instance(t: _Table, base: Path, model, cost_model: CostModel) -> InstanceSpec:
    device = t.get("device", str, None)
    devices = t.get("devices", list, None)
    tp = t.get("tp", int, 1, check=_positive)
    pp = t.get("pp", int, 1, check=_positive)
    link_name = t.get("link", str, None)
    stage_link = t.get("stage_link", str, None)
    if (device is None) == (devices is None):
        raise InputError("give exactly one of 'device' or 'devices'", file=t.file,
                         field=t.where.rstrip("."))
    link = load_link(link_name) if link_name else None
    if devices is not None:
        specs = [load_device(d) for d in devices]
        layout = Layout(devices=tuple(specs), tp=len(specs) // pp, pp=pp, link=link,
                        stage_link=load_link(stage_link) if stage_link else None)
    else:
        layout = Layout.uniform(load_device(device), tp=tp, pp=pp, link=link,
                                stage_link=load_link(stage_link) if stage_link else None)
    sched = t.sub("scheduler")
    cfg = InstanceConfig()
    if sched is not None:
        kw = {k: sched.get(k, type(getattr(cfg, k)) if k != "max_model_len" else int, None)
              for k in ("block_size", "max_num_seqs", "max_batched_tokens", "chunked_prefill",
                        "memory_utilization", "max_model_len")}
        sched.done()
        cfg = InstanceConfig(**{k: v for k, v in kw.items() if v is not None})
    # partition = "equal|hexgen|hels" cuts a devices = [...] group by a registered policy
    # (simcluster.partition), tuned for [instances.partition_params]: batch_size,
    # context_tokens, max_context_tokens (the target decode batch), and the policy's own
    # parameters (hels: kv_rules, max_steps; hexgen: fit_batch).
    policy = t.get("partition", str, None)
    pparams = t.sub("partition_params")
    if policy is None and pparams is not None:
        raise InputError("partition_params needs a 'partition' policy", file=t.file,
                         field=f"{t.where}partition_params")
    if policy is not None:
        from simcluster.partition import TargetBatch, partition
        from simcluster.policies.registry import PARTITIONS
        if policy not in PARTITIONS:
            raise InputError(f"unknown partition policy {policy!r}; known: "
                             f"{', '.join(sorted(PARTITIONS))}", file=t.file,
                             field=f"{t.where}partition")
        if devices is None or pp != 1 or link is None:
            raise InputError("a partition splits one tensor-parallel group: give devices = "
                             "[...], a link, and pp = 1", file=t.file, field=f"{t.where}partition")
        pt = pparams or _Table({}, t.file, f"{t.where}partition_params.")
        target = {k: pt.get(k, int, None, check=_positive)
                  for k in ("batch_size", "context_tokens", "max_context_tokens")}
        extra = {k: pt.get(k, (object, bool)) for k in list(pt.data) if k not in target}
        pt.done()
        try:
            batch = TargetBatch(**{k: v for k, v in target.items() if v is not None},
                                block_size=cfg.block_size)
            layout = partition(policy, model, specs, link, batch=batch,
                               cost_model=cost_model,
                               memory_utilization=cfg.memory_utilization,
                               max_batched_tokens=cfg.max_batched_tokens,
                               max_num_seqs=cfg.max_num_seqs, **extra).layout
        except (TypeError, ValueError) as err:
            raise InputError(str(err), file=t.file, field=f"{t.where}partition_params") from None
    spec = InstanceSpec(layout=layout, config=cfg, count=t.get("count", int, 1, check=_positive),
                        name=t.get("name", str, ""), batching=t.get("batching", str, "vllm"),
                        batching_params=t.get("batching_params", dict, {}),
                        pool=t.get("pool", str, "", check=lambda p: p in ("", "prefill", "decode")))
    t.done()
    return spec
