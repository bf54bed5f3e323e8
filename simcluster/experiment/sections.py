"""The sections of an experiment TOML, each read into the objects the simulator takes."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from simcluster import workload as wl
from simcluster.cluster import InstanceSpec
from simcluster.cost import CostModel, Layout
from simcluster.cost.parallel import check_parallel
from simcluster.errors import InputError
from simcluster.experiment.tables import Table, positive
from simcluster.hardware import load_device, load_link
from simcluster.models import load_model
from simcluster.serving import InstanceConfig


def read_disaggregation(t: Table | None) -> dict | None:
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


def _lengths(t: Table | None, rng, key: str):
    if t is None:
        raise InputError(f"missing [trace.synthetic.{key}]", file=None, field=key)
    dist = t.get("dist", str, check=lambda d: d in ("fixed", "lognormal", "resample"))
    if dist == "fixed":
        spec = t.get("tokens", int, check=positive)
    elif dist == "lognormal":
        spec = partial(wl.lognormal_lengths, median=t.get("median", float, check=positive),
                       sigma=t.get("sigma", float, check=positive),
                       max_tokens=t.get("max_tokens", int, None))
    else:
        spec = wl.load_trace(t.get("source", str))
    t.done()
    return spec


def _prefix_workload(t: Table, rng: np.random.Generator):
    """[trace.shared_prefix] or [trace.conversations]: synthetic prefix-sharing workloads with
    block hashes (simcluster.workload.prefixes), or None when neither is given."""
    from simcluster.workload import prefixes
    sp, conv = t.sub("shared_prefix"), t.sub("conversations")
    if sp is not None and conv is not None:
        raise InputError("give one of [trace.shared_prefix] and [trace.conversations]",
                         file=t.file, field="trace")
    if sp is not None:
        n = sp.get("n", int, check=positive)
        arrivals = partial(wl.gamma_arrivals, rate_per_s=sp.get("rate_per_s", float,
                                                                  check=positive),
                           cv=sp.get("cv", float, 1.0, check=positive))
        kw = dict(system_tokens=sp.get("system_tokens", int, check=positive),
                  system_prompts=sp.get("system_prompts", int, 1, check=positive),
                  zipf_s=sp.get("zipf_s", float, 0.0),
                  block_tokens=sp.get("block_tokens", int, 512, check=positive))
        user = _lengths(sp.sub("user", required=True), rng, "user")
        output = _lengths(sp.sub("output", required=True), rng, "output")
        sp.done()
        return prefixes.shared_prefix_trace(n, arrivals=arrivals, user=user, output=output,
                                            rng=rng, **kw)
    if conv is not None:
        n = conv.get("n", int, check=positive)
        kw = dict(rate_per_s=conv.get("rate_per_s", float, check=positive),
                  think_s=conv.get("think_s", float, 30.0),
                  system_tokens=conv.get("system_tokens", int, 0),
                  block_tokens=conv.get("block_tokens", int, 512, check=positive))
        turns = _lengths(conv.sub("turns", required=True), rng, "turns")
        user = _lengths(conv.sub("user", required=True), rng, "user")
        output = _lengths(conv.sub("output", required=True), rng, "output")
        conv.done()
        return prefixes.conversation_trace(n, turns=turns, user=user, output=output, rng=rng,
                                           **kw)
    return None


def read_trace(t: Table, base: Path, rng: np.random.Generator):
    syn = t.sub("synthetic")
    prefix = _prefix_workload(t, rng)
    if prefix is not None:
        if syn is not None:
            raise InputError("give one of [trace.synthetic] and a prefix workload",
                             file=t.file, field="trace")
        trace = prefix
    elif syn is not None:
        n = syn.get("n", int, check=positive)
        rate = syn.get("rate_per_s", float, check=positive)
        cv = syn.get("cv", float, 1.0, check=positive)
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
    first = t.get("first_n", int, None, check=positive)
    if first is not None:
        trace = wl.first_n(trace, first)
    sub = t.get("subsample", (int, float), None, check=positive)
    if sub is not None:
        trace = wl.subsample(trace, sub, rng)
    rate = t.get("rate_per_s", float, None, check=positive)
    if rate is not None:
        trace = wl.rescale_rate(trace, rate)
    fit = t.get("fit_context", int, None, check=lambda v: v >= 2)
    if fit is not None:
        trace = wl.fit_context(trace, fit)
    t.done()
    return trace


def read_pools(t: Table | None) -> dict | None:
    """``[pools]``: phase pools (simcluster.cluster.phase_pools) — the network between servers,
    the pool router, an optional rebalancer and the switch cost."""
    if t is None:
        return None
    from simcluster.policies.registry import POOL_ROUTERS, REBALANCERS
    out = {"network_link": load_link(t.get("network_link", str, "IB-NDR400")),
           "routing": t.get("routing", str, "splitwise", check=lambda v: v in POOL_ROUTERS),
           "routing_params": t.get("routing_params", dict, {}),
           "rebalancer": t.get("rebalancer", str, None, check=lambda v: v in REBALANCERS),
           "rebalancer_params": t.get("rebalancer_params", dict, {}),
           "reload_s": t.get("reload_s", float, None, check=lambda v: v >= 0)}
    t.done()
    return out


def _design_layout(t: Table, stated: dict):
    """A ``design = "N,dc,lc,mm,gb,cc,lb,lanes,ah,vw"`` instance: LLMShare's row (server count
    first), one server per instance, tensor parallel over the server's devices."""
    from simcluster.hardware.designed import designed_device
    from simcluster.hardware.parametric import parse_row
    try:
        pool = parse_row(t.get("design", str), **stated)
    except InputError as err:
        raise InputError(err.reason, file=t.file, field=f"{t.where}{err.field or 'design'}") \
            from None
    except TypeError as err:
        raise InputError(str(err), file=t.file, field=f"{t.where}design_params") from None
    d = pool.design
    layout = Layout.uniform(designed_device(d), tp=d.devices_per_server, link=d.link_spec())
    return layout, pool.servers


def read_model(t: Table, base: Path):
    name = t.get("name", str, None)
    config = t.get("config", str, None)
    t.done()
    if (name is None) == (config is None):
        raise InputError("give exactly one of 'name' (a preset) or 'config' (a config.json)",
                         file=t.file, field="model")
    return load_model(name if config is None else base / config)


def _scheduler(t: Table) -> InstanceConfig:
    """``[instances.scheduler]``: the replica's scheduler and memory settings."""
    sched = t.sub("scheduler")
    cfg = InstanceConfig()
    if sched is not None:
        kw = {k: sched.get(k, type(getattr(cfg, k)) if k != "max_model_len" else int, None)
              for k in ("block_size", "max_num_seqs", "max_batched_tokens", "chunked_prefill",
                        "memory_utilization", "max_model_len", "prefix_caching")}
        sched.done()
        cfg = InstanceConfig(**{k: v for k, v in kw.items() if v is not None})
    return cfg


def read_instance(t: Table, base: Path, model, cost_model: CostModel) -> InstanceSpec:
    if "design" in t.data:
        return _read_design_instance(t)
    device = t.get("device", str, None)
    devices = t.get("devices", list, None)
    tp = t.get("tp", int, 1, check=positive)
    pp = t.get("pp", int, 1, check=positive)
    ep = t.get("ep", int, 1, check=positive)      # expert parallelism (MoE): 1 or tp x dp
    dp = t.get("dp", int, 1, check=positive)      # attention data parallelism (MoE)
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
        try:
            layout = Layout.uniform(load_device(device), tp=tp, pp=pp, link=link,
                                    stage_link=load_link(stage_link) if stage_link else None,
                                    ep=ep, dp=dp)
            check_parallel(model, layout)
        except InputError as err:
            raise InputError(err.reason, file=t.file, field=f"{t.where}{err.field or 'tp'}"
                             ) from None
        except ValueError as err:
            raise InputError(str(err), file=t.file, field=t.where.rstrip(".")) from None
    cfg = _scheduler(t)
    # partition = "equal|hexgen_tp|hexgen|hels|hels_enhanced" cuts a devices = [...] group by a
    # registered policy (simcluster.policies.partition), tuned for
    # [instances.partition_params]: batch_size, context_tokens, max_context_tokens (the target
    # decode batch), recompute (a KV share recomputed where that saves memory), and the
    # policy's own parameters (hels: max_steps; hels_enhanced: kv_rules, max_steps;
    # hexgen_tp: fit_batch).
    policy = t.get("partition", str, None)
    pparams = t.sub("partition_params")
    if policy is None and pparams is not None:
        raise InputError("partition_params needs a 'partition' policy", file=t.file,
                         field=f"{t.where}partition_params")
    if policy is not None:
        from simcluster.policies.partition import TargetBatch, partition
        from simcluster.policies.registry import PARTITIONS
        if policy not in PARTITIONS:
            raise InputError(f"unknown partition policy {policy!r}; known: "
                             f"{', '.join(sorted(PARTITIONS))}", file=t.file,
                             field=f"{t.where}partition")
        if devices is None or pp != 1 or link is None:
            raise InputError("a partition splits one tensor-parallel group: give devices = "
                             "[...], a link, and pp = 1", file=t.file, field=f"{t.where}partition")
        pt = pparams or Table({}, t.file, f"{t.where}partition_params.")
        target = {k: pt.get(k, int, None, check=positive)
                  for k in ("batch_size", "context_tokens", "max_context_tokens")}
        recompute = pt.get("recompute", (int, float), 0.0, check=lambda x: 0 <= x < 1)
        extra = {k: pt.get(k, (object, bool)) for k in list(pt.data)
                 if k not in target and k != "recompute"}
        pt.done()
        try:
            batch = TargetBatch(**{k: v for k, v in target.items() if v is not None},
                                block_size=cfg.block_size)
            layout = partition(policy, model, specs, link, batch=batch,
                               cost_model=cost_model,
                               memory_utilization=cfg.memory_utilization,
                               max_batched_tokens=cfg.max_batched_tokens,
                               max_num_seqs=cfg.max_num_seqs, recompute=float(recompute),
                               **extra).layout
        except (TypeError, ValueError) as err:
            raise InputError(str(err), file=t.file, field=f"{t.where}partition_params") from None
    spec = InstanceSpec(layout=layout, config=cfg, count=t.get("count", int, 1, check=positive),
                        name=t.get("name", str, ""), batching=t.get("batching", str, "vllm"),
                        batching_params=t.get("batching_params", dict, {}),
                        pool=t.get("pool", str, "", check=lambda p: p in ("", "prefill", "decode")))
    t.done()
    return spec


def _read_design_instance(t: Table) -> InstanceSpec:
    """An [[instances]] table with ``design`` (and ``[instances.design_params]``: the stated
    parameters of simcluster.hardware.parametric.AcceleratorDesign, e.g. clock_hz)."""
    for key in ("device", "devices", "tp", "pp", "link", "stage_link", "count", "partition"):
        if key in t.data:
            raise InputError(f"'{key}' does not go with 'design' (the design row gives the "
                             "server count, devices per server and links)", file=t.file,
                             field=f"{t.where}{key}")
    params = t.get("design_params", dict, {})
    layout, servers = _design_layout(t, params)
    cfg = _scheduler(t)
    spec = InstanceSpec(layout=layout, config=cfg, count=servers, name=t.get("name", str, ""),
                        batching=t.get("batching", str, "vllm"),
                        batching_params=t.get("batching_params", dict, {}),
                        pool=t.get("pool", str, "", check=lambda p: p in ("", "prefill",
                                                                          "decode")))
    t.done()
    return spec
