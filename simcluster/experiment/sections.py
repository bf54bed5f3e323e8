"""The sections of an experiment TOML, each read into the objects the simulator takes.

Every value is checked where it is read (:class:`~simcluster.experiment.tables.Table`), and
every library call that builds an object from values of the file runs in ``Table.at`` so that
its InputError names this file and key. Paths (device, link, config, trace files) resolve
against the experiment file's folder. The ``[trace]`` section is
:mod:`simcluster.experiment.trace_section`.
"""

from __future__ import annotations

from simcluster.cluster import InstanceSpec
from simcluster.cluster.replicas import POOLS
from simcluster.cost import CostModel, Layout
from simcluster.cost.parallel import check_parallel
from simcluster.errors import InputError, relocate, toml_text
from simcluster.experiment.tables import Table, non_negative, positive, resolve
from simcluster.experiment.trace_section import read_trace  # noqa: F401  (a section too)
from simcluster.hardware import default_tp_link, load_device, load_link
from simcluster.models import load_model
from simcluster.policies.registry import (BATCHERS, CONTROLLERS, NUMA_PLACEMENTS, OFFLOADS,
                                          PARTITIONS, POOL_ROUTERS, REBALANCERS, ROUTERS)
from simcluster.serving import InstanceConfig
from simcluster.serving.config import context_limit

# A sanity limit of one process (not of the hardware): beyond it the cluster would exhaust
# memory before the run starts.
MAX_REPLICAS = 100_000


# ----------------------------------------------------------------------------- policies
def read_router(t: Table | None) -> tuple[str, dict]:
    if t is None:
        return "round_robin", {}
    name, params = t.policy(ROUTERS, "policy", "round_robin", "params")
    t.done()
    return name, params


def read_disaggregation(t: Table | None) -> dict | None:
    if t is None:
        return None
    with t.at("kv_link"):
        kv_link = load_link(t.path("kv_link"))
    out = {"kv_link": kv_link}
    for key, registry, default in (("decode_router", ROUTERS, "least_outstanding_tokens"),
                                   ("offload", OFFLOADS, "all"),
                                   ("controller", CONTROLLERS, None),
                                   ("numa", NUMA_PLACEMENTS, None)):
        name, params = t.policy(registry, key, default, f"{key}_params")
        out[key], out[f"{key}_params"] = name, params
    t.done()
    return out


def read_pools(t: Table | None) -> dict | None:
    """``[pools]``: phase pools (simcluster.cluster.phase_pools) — the network between servers,
    the pool router, an optional rebalancer and the switch cost."""
    if t is None:
        return None
    with t.at("network_link"):
        link = load_link(t.path("network_link", "IB-NDR400"))
    routing, routing_params = t.policy(POOL_ROUTERS, "routing", "splitwise", "routing_params")
    rebalancer, rebalancer_params = t.policy(REBALANCERS, "rebalancer", None,
                                             "rebalancer_params")
    out = {"network_link": link, "routing": routing, "routing_params": routing_params,
           "rebalancer": rebalancer, "rebalancer_params": rebalancer_params,
           "reload_s": t.get("reload_s", float, None, check=non_negative, expect=">= 0")}
    t.done()
    return out


def check_pools(specs, tables: list[Table], disagg: dict | None, pools: dict | None,
                top: Table, router: tuple[str, dict]) -> None:
    """``pool`` keys, ``[disaggregation]`` and ``[pools]`` agree: a pool needs one of the
    tables, either table needs a decode pool and a prefill pool, and phase pools route with
    their own router."""
    if disagg is not None and pools is not None:
        raise top._err("pools", "give [disaggregation] or [pools], not both")
    if pools is not None and router != ("round_robin", {}):
        raise top._err("router", "phase pools route with [pools] routing (and "
                                 "routing_params), not [router]")
    names = [s.pool for s in specs]
    if disagg is None and pools is None:
        for t, pool in zip(tables, names):
            if pool:
                raise t._err("pool", f"pool = {pool!r} needs a [disaggregation] table (kv_link, "
                                     "decode_router, offload, ...) or a [pools] table; without "
                                     "one every instance serves whole requests")
        return
    key = "disaggregation" if disagg is not None else "pools"
    want = {"prefill", "decode"} if pools is not None else None
    ok = ("decode" in names and any(p != "decode" for p in names)) if want is None \
        else set(names) == want
    if not ok:
        raise top._err(key, "needs instances with pool = 'decode' and instances with pool = "
                            f"'prefill'{' (or no pool)' if want is None else ''}; found pools "
                            f"{[p or '(none)' for p in names]}")


# ----------------------------------------------------------------------------- model
def read_model(t: Table):
    name = t.get("name", str, None)
    config = t.get("config", str, None)
    t.done()
    if (name is None) == (config is None):
        raise InputError("give exactly one of 'name' (a preset) or 'config' (a config.json)",
                         file=t.file, field="model")
    with t.at("name" if config is None else "config"):
        return load_model(name if config is None else t.base_for("config") / config)


# ----------------------------------------------------------------------------- instances
def _layout(t: Table, model) -> Layout:
    device = t.path("device", None)
    devices = t.get("devices", list, None)
    tp = t.get("tp", int, None, check=positive, expect=">= 1")
    pp = t.get("pp", int, 1, check=positive, expect=">= 1")
    ep = t.get("ep", int, 1, check=positive, expect=">= 1")    # expert parallelism (MoE)
    dp = t.get("dp", int, 1, check=positive, expect=">= 1")    # attention data parallelism
    if (device is None) == (devices is None):
        raise InputError("give exactly one of 'device' or 'devices'", file=t.file,
                         field=t.where.rstrip("."))
    for key, value, limit, what in (("tp", tp or 1, model.num_heads, "attention heads"),
                                    ("pp", pp, model.num_layers, "layers"),
                                    ("dp", dp, MAX_REPLICAS, "groups one process holds")):
        if value > limit:
            raise t._err(key, f"{key}={value} exceeds the {limit:,} {what} of {model.name}")
    if devices is not None:
        specs = _group(t, devices, tp, pp)
        tp = len(devices) // pp
    else:
        with t.at("device"):
            specs = [load_device(device)] * ((tp or 1) * pp * dp)
        tp = tp or 1
    need = tp > 1 or dp > 1 or (pp > 1 and "stage_link" not in t.data)
    for key, idle in (("link", not need), ("stage_link", pp == 1)):
        if idle and key in t.data:     # (nothing would cross it: it was read and unused)
            raise t._err(key, "does nothing: " + (
                "no two devices of this replica talk (tp, dp and pp are 1)" if key == "link"
                and pp == 1 else "link joins a stage's ranks (tp and dp are 1) and "
                "stage_link the stages" if key == "link" else "one stage (pp = 1)"))
    link = _link(t, "link", specs, needed=need)
    stage = _link(t, "stage_link", specs, needed=False)
    with t.at():
        layout = Layout(devices=tuple(specs), tp=tp, pp=pp, link=link, stage_link=stage,
                        ep=ep, dp=dp)
        if "partition" not in t.data:     # (a partition's shares are checked after it)
            check_parallel(model, layout)
    return layout


def _group(t: Table, devices, tp, pp):
    """The devices of a ``devices = [...]`` group, each a name or a spec file's path."""
    if tp is not None:
        raise t._err("tp", "not with 'devices': a devices = [...] group's tensor-parallel "
                           "size is len(devices) / pp")
    if not devices or not all(isinstance(d, str) for d in devices):
        raise t._err("devices", f"expected a non-empty array of device names, got {devices!r}")
    if len(devices) % pp:
        raise t._err("pp", f"pp={pp} does not divide the {len(devices)} devices")
    specs = []
    for j, name in enumerate(devices):
        with t.at(f"devices[{j}]"):
            specs.append(load_device(resolve(name, t.base_for(f"devices[{j}]"))))
    return specs


def _link(t: Table, key: str, devices, needed: bool):
    """The link at ``key``; when none is named but one is needed, the devices' own (the
    interconnect of the node templates holding them), else an error naming the key."""
    name = t.path(key, None)
    if name is None and needed:
        name = default_tp_link(*{d.name: d for d in devices}.values())
        if name is None:
            names = ", ".join(sorted({d.name for d in devices}))
            raise t._err(key, f"needed for parallelism over {names}, and no node template "
                              "states their interconnect; name a link (simcluster list "
                              "links), e.g. link = \"PCIe4\"")
    if name is None:
        return None
    with t.at(key):
        return load_link(name)


_SCHEDULER = {"block_size": int, "max_num_seqs": int, "max_batched_tokens": int,
              "chunked_prefill": bool, "memory_utilization": float, "max_model_len": int,
              "max_steady_steps": int, "prefix_caching": bool}


def _config(t: Table, model) -> InstanceConfig:
    """``[instances.scheduler]``: the replica's scheduler and memory settings."""
    sched = t.sub("scheduler")
    cfg = InstanceConfig()
    if sched is not None:
        kw = {k: sched.get(k, kind, None) for k, kind in _SCHEDULER.items()}
        sched.done()
        with sched.at():
            cfg = InstanceConfig(**{k: v for k, v in kw.items() if v is not None})
    try:
        context_limit(model, cfg)
    except InputError as err:
        raise relocate(err, t.file, f"{t.where}scheduler.max_model_len") from None
    return cfg


def _partition(t: Table, layout: Layout, model, cost_model: CostModel, cfg: InstanceConfig):
    """partition = "equal|hexgen_tp|hexgen|hels|hels_enhanced" cuts a devices = [...] group by
    a registered policy (simcluster.policies.partition), tuned for
    [instances.partition_params]: batch_size, context_tokens, max_context_tokens (the target
    decode batch), recompute (a KV share recomputed where that saves memory), and the policy's
    own parameters (hels: max_steps; hels_enhanced: kv_rules, max_steps; hexgen_tp:
    fit_batch)."""
    policy = t.get("partition", str, None)
    pparams = t.sub("partition_params")
    if policy is None:
        if pparams is not None:
            raise t._err("partition_params", "needs a 'partition' policy")
        return layout
    from simcluster.policies.partition import TargetBatch, partition
    with t.at("partition"):
        PARTITIONS.lookup(policy)
    if "devices" not in t.data or layout.pp != 1:
        raise t._err("partition", "a partition splits one tensor-parallel group: give devices = "
                                  "[...], a link, and pp = 1")
    pt = pparams or Table({}, t.file, f"{t.where}partition_params.", t.base, t.origins)
    target = {k: pt.get(k, int, None, check=positive, expect=">= 1")
              for k in ("batch_size", "context_tokens", "max_context_tokens")}
    recompute = pt.get("recompute", float, 0.0, check=lambda x: 0 <= x < 1, expect="in [0, 1)")
    extra = {k: pt.get(k, (object, bool)) for k in list(pt.data)
             if k not in target and k != "recompute"}
    pt.done()
    with pt.at():
        PARTITIONS.check(policy, extra)
        batch = TargetBatch(**{k: v for k, v in target.items() if v is not None},
                            block_size=cfg.block_size)
        layout = partition(policy, model, list(layout.devices), layout.link, batch=batch,
                           cost_model=cost_model, memory_utilization=cfg.memory_utilization,
                           max_batched_tokens=cfg.max_batched_tokens,
                           max_num_seqs=cfg.max_num_seqs, recompute=recompute, **extra).layout
        check_parallel(model, layout)
    return layout


def _spec(t: Table, layout: Layout, cfg: InstanceConfig, count: int) -> InstanceSpec:
    batching, params = t.policy(BATCHERS, "batching", "vllm", "batching_params")
    given = t.data.get("scheduler") or {}      # (a table: _config read it with t.sub)
    for key, (value, why) in getattr(BATCHERS.lookup(batching), "fixed_settings", {}).items():
        if key in given and given[key] != value:     # (the policy would run it as value)
            raise t._err(f"scheduler.{key}", f"{toml_text(given[key])} does not go with "
                                             f"batching {batching!r}, which {why}; drop it "
                                             f"or set {toml_text(value)}")
    spec = InstanceSpec(layout=layout, config=cfg, count=count, name=t.get("name", str, ""),
                        batching=batching, batching_params=params,
                        pool=t.get("pool", str, "", check=lambda p: p in POOLS,
                                   expect="'prefill' or 'decode'"))
    t.done()
    return spec


def read_instance(t: Table, model, cost_model: CostModel) -> InstanceSpec:
    if "design" in t.data:
        return _design_instance(t, model)
    layout = _layout(t, model)
    cfg = _config(t, model)
    layout = _partition(t, layout, model, cost_model, cfg)
    count = t.get("count", int, 1, check=lambda v: 1 <= v <= MAX_REPLICAS,
                  expect=f"a whole number in [1, {MAX_REPLICAS:,}]")
    return _spec(t, layout, cfg, count)


def _design_instance(t: Table, model) -> InstanceSpec:
    """An [[instances]] table with ``design = "N,dc,lc,mm,gb,cc,lb,lanes,ah,vw"``: LLMShare's
    row of a parametric accelerator (server count first), one instance per server, tensor
    parallel over the server's devices; ``[instances.design_params]`` sets stated parameters
    of simcluster.hardware.parametric.AcceleratorDesign (e.g. clock_hz)."""
    from simcluster.hardware.designed import designed_device
    from simcluster.hardware.parametric import parse_row
    for key in ("device", "devices", "tp", "pp", "ep", "dp", "link", "stage_link", "count",
                "partition"):
        if key in t.data:
            raise t._err(key, "does not go with 'design' (the design row gives the server "
                              "count, devices per server and links)")
    stated = t.get("design_params", dict, {})
    row = t.get("design", str)
    with t.at("design_params" if stated else "design"):
        try:
            pool = parse_row(row, **stated)
        except TypeError as err:
            raise InputError(str(err), field="design_params") from None
        d = pool.design
        layout = Layout.uniform(designed_device(d), tp=d.devices_per_server, link=d.link_spec())
        check_parallel(model, layout)
    return _spec(t, layout, _config(t, model), pool.servers)


# ----------------------------------------------------------------------------- slo, cost
def read_slo(t: Table | None) -> tuple[float | None, float | None]:
    if t is None:
        return None, None
    ttft = t.get("ttft_s", float, None, check=positive, expect="> 0")
    tpot = t.get("tpot_s", float, None, check=positive, expect="> 0")
    t.done()
    return ttft, tpot


def read_cost(t: Table, seed: int):
    """``[cost]``: the calibration (with the kernel accounting and execution mode), or an
    engine model, and the MoE routing model."""
    from simcluster.calibration import load_calibration
    from simcluster.cost.moe import RoutingModel
    calibration = t.get("calibration", str, None)
    engine = t.get("engine", str, None)
    kernels = t.get("kernels", str, None)
    execution = t.get("execution", str, None)
    if engine is not None:          # (an engine model has its own: these would do nothing)
        for key, value in (("kernels", kernels), ("execution", execution)):
            if value is not None:
                with t.at(key):
                    raise InputError(f"does nothing with engine = {engine!r}: an engine model "
                                     f"has its own {key} ([kernels] / [execution] of its "
                                     "file)")
    kernels, execution = kernels or "fused", execution or "graphs"
    routing = {k: v for k, v in (
        ("popularity_cv", t.get("moe_popularity_cv", float, None, check=non_negative,
                                expect=">= 0")),
        ("samples", t.get("moe_samples", int, None, check=positive, expect=">= 1")))
        if v is not None}
    t.done()
    if engine is None:
        with t.at("calibration"):
            cal = load_calibration(calibration or "measured")
        with t.at():
            cost_model = CostModel(cal, kernels=kernels, execution=execution)
    else:
        from simcluster.engines import load_engine
        from simcluster.engines.model import EngineCostModel
        with t.at("engine"):
            spec = load_engine(resolve(engine, t.base_for("engine")))
        with t.at("calibration"):
            load_calibration(calibration or spec.calibration)
            cost_model = EngineCostModel.of(spec, calibration)
    with t.at("moe_popularity_cv"):
        cost_model.routing = RoutingModel(seed=seed, **routing)
    return cost_model
