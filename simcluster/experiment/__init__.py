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
    [[instances]] device = "H100-SXM" (a name, or a spec file's path; or devices = [...] for
                 one heterogeneous TP group, whose tp is len(devices) / pp),
                 count, tp, pp, ep and dp (mixtures of experts: expert parallelism, 1 or
                 tp x dp, and attention data parallelism), link, stage_link (without a link,
                 parallelism over a device uses the interconnect of the node templates
                 holding it, when they state one), name, batching,
                 [instances.scheduler] (block_size, max_num_seqs, max_batched_tokens,
                 chunked_prefill, memory_utilization, max_model_len — required for a model
                 whose config states no context length —, prefix_caching, max_steady_steps;
                 a batching policy may fix some: hf_cb always chunks prompts and keeps no
                 prefix cache, so chunked_prefill = false or prefix_caching = true with it
                 is refused), [instances.batching_params]
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

Every key is checked: an unknown or mistyped key fails naming the file and the key (and
the closest known one); every value is type- and range-checked; every policy's params table
is checked against the policy's signature and the policy built once; paths (device, link,
config, trace, engine files) are relative to this file's folder; the file may start with a
UTF-8 byte-order mark. Last, the simulation is built once (not run), so that whatever its
constructors refuse is reported here, naming this file. Errors are InputError.
``load_experiment(path, overrides={"router.policy": "round_robin"})`` (the command line's
``--set router.policy=round_robin``) edits the data before the checks (:mod:`.overrides`); a
relative path an override sets is relative to the current folder (``--trace FILE`` is the
override ``trace = {source = FILE}``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from simcluster.cluster import Cluster, InstanceSpec
from simcluster.cost import CostModel
from simcluster.errors import InputError, relocate, unknown_name
from simcluster.experiment import sections
from simcluster.experiment.overrides import apply_overrides, as_mapping, blame, field_name
from simcluster.experiment.plugins import load_plugins
from simcluster.experiment.tables import Table, check_kind, non_negative
from simcluster.hardware import read_toml_file
from simcluster.paths import data_dir
from simcluster.simulation import Simulation
from simcluster.workload.loaders import SUFFIXES as TRACE_SUFFIXES


def experiments_dir() -> Path:
    """The bundled experiments folder."""
    return data_dir("experiments")


DEFAULT_EXPERIMENT = "default.toml"


@dataclass(frozen=True, repr=False)
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
            from simcluster.cluster import DisaggregatedCluster
            factory = partial(DisaggregatedCluster, **self.disaggregation)
        if self.pools is not None:
            from simcluster.cluster import PhasePoolCluster
            factory = partial(PhasePoolCluster, **self.pools)
        return Simulation(self.trace, self.model, self.instances, router=self.router,
                          router_params=self.router_params, cost_model=self.cost_model,
                          ttft_slo_s=self.ttft_slo_s, tpot_slo_s=self.tpot_slo_s,
                          name=self.name, cluster_factory=factory)

    def run(self, progress=None):
        return self.simulation().run(progress=progress)

    def __repr__(self) -> str:
        """One line for a notebook's cell or a prompt (the dataclass's repr spelt the model's
        and every device's whole spec: 2,300 characters for the default experiment)."""
        t = self.trace
        slo = ", ".join(f"{k} {v:g} s" for k, v in (("ttft", self.ttft_slo_s),
                                                    ("tpot", self.tpot_slo_s)) if v is not None)
        pools = "; ".join(f"{s.count}x {s.layout.describe()}" + (f" ({s.pool})" if s.pool else "")
                          for s in self.instances)
        return (f"<Experiment {self.name!r}: {len(t):,} requests of {t.name or 'a trace'}, "
                f"model {self.model.name}, [{pools}], router {self.router}"
                f"{f', SLO {slo}' if slo else ''}; .run(), .simulation(), .trace, .model, "
                f".instances>")


def bundled_experiments() -> list[str]:
    """The names of the bundled experiments (``simcluster run NAME``), sorted."""
    return sorted(f.stem for f in experiments_dir().glob("*.toml"))


def experiment_path(path=None) -> Path:
    """The file of an experiment: a path, or a bundled experiment's name (with or without
    ``.toml``); the bundled default when ``path`` is None."""
    if path is None:
        return experiments_dir() / DEFAULT_EXPERIMENT
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"experiment: expected an experiment TOML's path or a bundled "
                        f"experiment's name (simcluster list experiments); got "
                        f"{type(path).__name__}")
    p = Path(path).expanduser()
    if p.is_file():
        return p
    for candidate in (experiments_dir() / p, experiments_dir() / f"{p}.toml"):
        if p.parent == Path(".") and candidate.is_file():
            return candidate
    if p.is_dir():
        raise InputError("is a folder; expected an experiment TOML file", file=str(p))
    err = unknown_name("experiment", str(path), bundled_experiments(), hint=" (bundled), or the path of a "
                       "TOML file")
    raise InputError(f"no such experiment file; {err.reason}", file=str(p))


def read_experiment_data(path) -> dict:
    """The TOML data of an experiment file, unvalidated (UTF-8, a byte-order mark skipped;
    InputError naming the file and line when it cannot be read or parsed; a trace file's
    suffix is named as one)."""
    if Path(path).suffix.lower() in _TRACE_SUFFIXES:
        raise InputError("a trace file, not an experiment TOML; serve it with --trace FILE "
                         "(in the default experiment, or in one named beside it) or the "
                         "override trace.source = FILE", file=str(path))
    data = read_toml_file(path)
    check_kind(data, path, "experiment")
    return data


# the suffixes the trace loader reads, but .json (a Hugging Face config is one too)
_TRACE_SUFFIXES = tuple(s for s in TRACE_SUFFIXES if s != ".json")


def load_experiment(path=None, overrides=None) -> Experiment:
    """Read an experiment TOML (the bundled default when ``path`` is None).

    ``overrides`` (``{"router.policy": "round_robin"}`` or ``["router.policy=round_robin",
    ...]``, see :mod:`.overrides`) edit the file's data before it is checked, so they are
    checked like it; a relative path in one (``{"trace.source": "my.csv"}``) is relative to
    the current folder, where it was typed, not to the experiment file's.
    """
    path = experiment_path(path)
    return experiment_from_data(read_experiment_data(path), path, overrides)


def experiment_from_data(data: dict, path, overrides=None, origins=None) -> Experiment:
    """An experiment from TOML data (``path``: the file it came from, which relative paths in
    it are relative to), with ``overrides`` applied first; an error from an overridden key
    names the override. ``origins``: override key -> the folder relative paths in its value
    are read from (for a key it does not name, the current folder)."""
    path = Path(path)
    sets = as_mapping(overrides)
    data = apply_overrides(data, sets, file=str(path))
    here, origins = Path.cwd(), origins or {}
    folders = {field_name(k): Path(origins.get(k, here)) for k in sets}
    try:
        return _build(data, path, folders)
    except InputError as err:
        raise blame(err, sets) from None


def _build(data: dict, path: Path, origins: dict) -> Experiment:
    top = Table(data, str(path), "", path.parent, origins)
    plugins = top.get("plugins", list, None)
    if plugins is not None:
        load_plugins(plugins, top.base_for("plugins"), file=str(path))
    name = top.get("name", str, path.stem, check=lambda v: v.strip() != "",
                   expect="a non-empty name")
    seed = top.get("seed", int, 0, check=non_negative, expect=">= 0")
    rng = np.random.default_rng(seed)
    trace = sections.read_trace(top.sub("trace", required=True), rng)
    model = sections.read_model(top.sub("model", required=True))
    cost_model = sections.read_cost(top.sub("cost") or Table({}, str(path), "cost.", path.parent,
                                                             origins), seed)
    tables = top.tables("instances")
    if not tables:
        raise InputError("needs at least one [[instances]] table", file=str(path),
                         field="instances")
    specs = tuple(sections.read_instance(t, model, cost_model) for t in tables)
    router, params = sections.read_router(top.sub("router"))
    ttft, tpot = sections.read_slo(top.sub("slo"))
    disagg = sections.read_disaggregation(top.sub("disaggregation"))
    pools = sections.read_pools(top.sub("pools"))
    sections.check_pools(specs, tables, disagg, pools, top, (router, params))
    top.done()
    exp = Experiment(name, seed, trace, model, specs, router, params, ttft, tpot,
                     cost_model, str(path), disagg, pools)
    try:        # what the constructors refuse is this file's mistake
        exp.simulation()
    except InputError as err:
        raise relocate(err, str(path)) from None
    except ValueError as err:
        raise InputError(str(err), file=str(path)) from None
    return exp
