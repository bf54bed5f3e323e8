"""An experiment: one TOML file -> frozen config objects -> Simulation -> Results.

    name = "default"
    seed = 0
    plugins = ["mypolicies"]  (optional: user modules whose registered policies the experiment
                 names; a module name or a .py path relative to this file)
    [trace]      source = "azure-conv"  (bundled name, or a path relative to this file)
                 optional: format, sort, first_n, window_s = [start, end], rate_per_s,
                 subsample (a fraction or a count; seeded)
    [trace.synthetic]  instead of source: n, rate_per_s, cv (1 = Poisson),
                 prompt / output = {dist = "fixed", tokens = N} | {dist = "lognormal",
                 median = M, sigma = S, max_tokens = X} | {dist = "resample", source = NAME}
    [trace.shared_prefix]  instead of source, with block hashes: n, rate_per_s, cv,
                 system_tokens, system_prompts, zipf_s, block_tokens, user / output = {...}
    [trace.conversations]  instead of source, multi-turn with block hashes: n
                 (conversations), rate_per_s, think_s, system_tokens, block_tokens,
                 turns / user / output = {...}   (see simcluster.workload.prefixes)
    [model]      name = "llama-2-7b"  (a preset) or config = "path/config.json"
    [[instances]] device = "H100-SXM" (or devices = [...] for one heterogeneous TP group),
                 count, tp, pp, ep and dp (mixtures of experts: expert parallelism, 1 or
                 tp x dp, and attention data parallelism), link, stage_link, name, batching,
                 [instances.scheduler] (block_size, max_num_seqs, max_batched_tokens,
                 chunked_prefill, memory_utilization, max_model_len, prefix_caching),
                 [instances.batching_params]
                 pool = "prefill" | "decode" (with [disaggregation]),
                 partition = "equal" | "hexgen_tp" | "hexgen" | "hels" | "hels_enhanced" (how
                 a devices = [...] group is cut: heads, FFN and KV shares, or HexGen's
                 asymmetric stages), [instances.partition_params] (batch_size,
                 context_tokens, max_context_tokens, recompute; hels: max_steps;
                 hels_enhanced: kv_rules, max_steps; hexgen_tp: fit_batch) — see
                 simcluster.policies.partition
    [router]     policy = "round_robin", [router.params]
    [disaggregation]  kv_link = "PCIe4", decode_router, [disaggregation.decode_router_params],
                 offload = "all", [disaggregation.offload_params], controller,
                 [disaggregation.controller_params], numa (a NUMA placement of CPU-socket
                 decode instances: "aware", "oblivious", "interleave"),
                 [disaggregation.numa_params]   (see simcluster.cluster.pools, simcluster.policies.numa)
    [[instances]] design = "7,8,18,80,50,132,256,4,16,32" instead of device: LLMShare's row of a
                 parametric accelerator (server count, devices per server, links, memory GB,
                 global buffer MB, cores, local buffer KB, lanes, array height, vector width):
                 one instance per server, tensor parallel over its devices;
                 [instances.design_params] sets stated parameters (clock_hz,
                 memory_technology, ...; simcluster.hardware.parametric)
    [pools]      phase pools instead of [disaggregation]: network_link = "IB-NDR400",
                 routing = "splitwise", [pools.routing_params] (overlap, mixed,
                 prompt_max_pending_tokens), rebalancer = "threshold",
                 [pools.rebalancer_params], reload_s   (see simcluster.cluster.phase_pools)
    [trace]      fit_context = 2048: cut prompts to fit a model's context (keeps their last
                 tokens; simcluster.workload.fit_context)
    [slo]        ttft_s, tpot_s
    [cost]       calibration = "measured" (fitted kernel tables, the default) or "datasheet";
                 moe_popularity_cv (expert popularity skew, 0 = uniform), moe_samples
                 (routing draws; seeded by the experiment's seed: simcluster.cost.moe);
                 kernels = "fused" (default) or another accounting of hwspecs/engines/kernels;
                 execution = "graphs" (default), "eager" or "piecewise" (launch costs);
                 engine = "hf-cb-h100" (an engine model of hwspecs/engines: its overheads on
                 top of the device time; its batching rules are the instances' to choose:
                 batching = "hf_cb", see hwspecs/engines/README.md)

Every key is checked: an unknown or mistyped key fails naming the file and the key.
``load_experiment(path, overrides={"router.policy": "jsq"})`` (the command line's ``--set
router.policy=jsq``) edits the data before the checks (:mod:`.overrides`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from simcluster.calibration import load_calibration
from simcluster.cluster import Cluster, DisaggregatedCluster, InstanceSpec, PhasePoolCluster
from simcluster.cost import CostModel
from simcluster.cost.moe import RoutingModel
from simcluster.errors import InputError
from simcluster.experiment import sections
from simcluster.experiment.overrides import apply_overrides, as_mapping, blame
from simcluster.experiment.plugins import load_plugins
from simcluster.experiment.tables import Table, positive
from simcluster.paths import data_dir
from simcluster.simulation import Simulation


def experiments_dir() -> Path:
    """The bundled experiments folder."""
    return data_dir("experiments")


DEFAULT_EXPERIMENT = "default.toml"


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
    pools: dict | None = None            # PhasePoolCluster keyword arguments

    def simulation(self) -> Simulation:
        factory = Cluster
        if self.disaggregation is not None:
            factory = partial(DisaggregatedCluster, **self.disaggregation)
        if self.pools is not None:
            factory = partial(PhasePoolCluster, **self.pools)
        return Simulation(self.trace, self.model, self.instances, router=self.router,
                          router_params=self.router_params, cost_model=self.cost_model,
                          ttft_slo_s=self.ttft_slo_s, tpot_slo_s=self.tpot_slo_s,
                          name=self.name, cluster_factory=factory)

    def run(self, progress=None):
        return self.simulation().run(progress=progress)


def experiment_path(path=None) -> Path:
    """The experiment file ``path`` names: a path, or a bundled experiment's file name
    (the bundled default when None)."""
    path = Path(path) if path is not None else experiments_dir() / DEFAULT_EXPERIMENT
    if not path.exists() and (experiments_dir() / path).exists():
        path = experiments_dir() / path
    return path


def read_experiment_data(path) -> dict:
    """The TOML data of an experiment file, unvalidated."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError("no such experiment file", file=str(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"not valid TOML: {err}", file=str(path)) from None


def load_experiment(path=None, overrides=None) -> Experiment:
    """Read an experiment TOML (the bundled default when ``path`` is None).

    ``overrides`` (``{"router.policy": "jsq"}`` or ``["router.policy=jsq", ...]``, see
    :mod:`.overrides`) edit the file's data before it is checked, so they are checked like it.
    """
    path = experiment_path(path)
    return experiment_from_data(read_experiment_data(path), path, overrides)


def experiment_from_data(data: dict, path, overrides=None) -> Experiment:
    """An experiment from TOML data (``path``: the file it came from, which relative paths in
    it are relative to), with ``overrides`` applied first; an error from an overridden key
    names the override."""
    path = Path(path)
    sets = as_mapping(overrides)
    data = apply_overrides(data, sets, file=str(path))
    try:
        return _build(data, path)
    except InputError as err:
        raise blame(err, sets) from None


def _build(data: dict, path: Path) -> Experiment:
    top = Table(data, str(path), "")
    plugins = top.get("plugins", list, None)
    if plugins is not None:
        load_plugins(plugins, path.parent, file=str(path))
    name = top.get("name", str, path.stem)
    seed = top.get("seed", int, 0)
    rng = np.random.default_rng(seed)
    trace = sections.read_trace(top.sub("trace", required=True), path.parent, rng)
    model = sections.read_model(top.sub("model", required=True), path.parent)
    cost = top.sub("cost")
    calibration, engine, routing = "measured", None, {}
    kernels, execution = "fused", "graphs"
    if cost is not None:
        calibration = cost.get("calibration", str, calibration)
        engine = cost.get("engine", str, None)
        kernels = cost.get("kernels", str, kernels)
        execution = cost.get("execution", str, execution)
        routing = {k: v for k, v in (
            ("popularity_cv", cost.get("moe_popularity_cv", float, None)),
            ("samples", cost.get("moe_samples", int, None, check=positive))) if v is not None}
        cost.done()
    if engine is not None:
        from simcluster.engines import load_engine
        from simcluster.engines.model import EngineCostModel
        try:
            spec = load_engine(engine)
        except KeyError as err:
            raise InputError(err.args[0], file=str(path), field="cost.engine") from None
        cost_model = EngineCostModel.of(spec, calibration if "calibration" in cost.data
                                        else None)
    else:
        try:
            cost_model = CostModel(load_calibration(calibration), kernels=kernels,
                                   execution=execution)
        except InputError as err:
            raise InputError(err.reason, file=str(path), field=f"cost.{err.field or ''}"
                             .rstrip(".")) from None
    try:
        cost_model.routing = RoutingModel(seed=seed, **routing)
    except ValueError as err:
        raise InputError(str(err), file=str(path), field="cost.moe_popularity_cv") from None
    specs = tuple(sections.read_instance(Table(t, str(path), f"instances[{i}]."), path.parent, model,
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
        ttft = slo.get("ttft_s", float, None, check=positive)
        tpot = slo.get("tpot_s", float, None, check=positive)
        slo.done()
    disagg = sections.read_disaggregation(top.sub("disaggregation"))
    pools = sections.read_pools(top.sub("pools"))
    if disagg is not None and pools is not None:
        raise InputError("give [disaggregation] or [pools], not both", file=str(path),
                         field="pools")
    top.done()
    return Experiment(name, seed, trace, model, specs, policy, params, ttft, tpot,
                      cost_model, str(path), disagg, pools)


