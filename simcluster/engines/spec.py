"""Engine specs: an engine model's fitted terms and scheduling settings, as TOML data.

An engine spec (``hwspecs/engines/<name>.toml``) holds an engine model — the overhead terms of
:mod:`simcluster.engines.model` — and the scheduling settings the engine ran with (a batching
policy and its parameters, ``scheduler`` fields of the serving layer's ``InstanceConfig``),
with the metadata of the measurement. :func:`load_engine` reads one, :func:`engine_toml`
writes one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simcluster.cost.accounting import ExecutionMode, load_accounting
from simcluster.engines.envelope import Envelope
from simcluster.engines.model import (BASE_TERMS, KINDS, EngineCostModel, EngineTerms, Padding,
                                      transfer_scales)
from simcluster.errors import InputError, unknown_name
from simcluster.hardware import hwspecs_dir, hwspecs_subdirs, read_toml_file
from simcluster.paths import data_dir


def engines_dir() -> Path:
    """Where new engine specs go: ``engines/`` of the first spec folder (the first of
    ``$SIMCLUSTER_HWSPECS`` if set, else the bundled one)."""
    return hwspecs_dir() / "engines"


def bundled_engines_dir() -> Path:
    """The engines shipped with simcluster (``calibrate-engine`` needs ``--force`` to
    replace one)."""
    return data_dir("hwspecs") / "engines"


def _engine_files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in hwspecs_subdirs("engines"):
        for p in sorted(d.glob("*.toml")):
            out.setdefault(p.stem, p)
    return out


@dataclass(frozen=True)
class EngineSpec:
    """One engine on one device and model: its fitted terms and its scheduling settings."""

    name: str
    terms: EngineTerms
    device: str
    model: str
    calibration: str = "measured"
    description: str = ""
    batching: str = "vllm"
    batching_params: dict = field(default_factory=dict)
    scheduler: dict = field(default_factory=dict)     # InstanceConfig fields (serving layer)
    meta: dict = field(default_factory=dict)          # measurement metadata (strings)
    fit: dict = field(default_factory=dict)           # fit statistics
    source: str = ""
    kernels: str = "fused"                            # kernel accounting (cost/accounting.py)
    execution: ExecutionMode = field(default_factory=ExecutionMode)
    padding: dict = field(default_factory=dict)       # CUDA-graph shapes: q_tokens, kv_tokens
    envelope: Envelope | None = None                  # the profiled batch shapes
    transfer: dict = field(default_factory=dict)      # how device terms follow the model

    def cost_model(self, calibration=None) -> EngineCostModel:
        return EngineCostModel.of(self, calibration)

    @property
    def padding_caps(self) -> Padding:
        """The padding with its caps from the engine's settings: the token budget, the KV
        cache's tokens, the requests per batch."""
        return padding_of(self.padding, self.scheduler, self.batching_params)


def padding_of(padding: dict, scheduler: dict, params: dict) -> Padding:
    if not padding:
        return Padding()
    blocks = params.get("num_blocks") or 0
    return Padding(q=int(padding.get("q_tokens", 0)), kv=int(padding.get("kv_tokens", 0)),
                   q_max=int(scheduler.get("max_batched_tokens") or 0),
                   kv_max=int(blocks * scheduler.get("block_size", 0)),
                   samples_max=int(params.get("max_requests_per_batch")
                                   or scheduler.get("max_num_seqs") or 0))


#: The keys and tables of an engine spec (what :func:`engine_toml` writes).
TOP_KEYS = frozenset({"name", "description", "engine", "terms", "batching", "scheduler",
                      "kernels", "execution", "envelope", "transfer", "fit"})


def list_engines() -> list[str]:
    return sorted(_engine_files())


def load_engine(name_or_path) -> EngineSpec:
    """An engine spec by name (``hwspecs/engines/<name>.toml``) or path."""
    p = Path(name_or_path)
    if not p.suffix and "/" not in str(name_or_path):
        files = _engine_files()
        if str(name_or_path) not in files:
            raise unknown_name("engine", str(name_or_path), files, field="engine")
        p = files[str(name_or_path)]
    data = read_toml_file(p)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise InputError(f"unknown keys {unknown}; an engine spec holds {sorted(TOP_KEYS)}",
                         file=str(p), field=unknown[0])
    for key in ("engine", "terms"):
        if not isinstance(data.get(key), dict):
            raise InputError(f"expected a table [{key}]" + (
                "" if key not in data else f", got {data[key]!r}"), file=str(p), field=key)
    try:
        terms_t = dict(data.get("terms", {}))
        scale = terms_t.pop("device_scale", 1.0)
        values = {}
        for kind in KINDS:
            table = terms_t.pop(kind, {})
            unknown = set(table) - {f"{t}_s" for t in BASE_TERMS}
            if unknown:
                raise InputError(f"unknown terms {sorted(unknown)}; known: "
                                 f"{[f'{t}_s' for t in BASE_TERMS]}", file=str(p),
                                 field=f"terms.{kind}")
            values.update({f"{kind}_{t}": table.get(f"{t}_s", 0.0) for t in BASE_TERMS})
        if terms_t:
            raise InputError(f"unknown keys {sorted(terms_t)}; [terms] holds device_scale and "
                             "the tables [terms.decode] and [terms.prefill]", file=str(p),
                             field="terms")
        terms = EngineTerms(**values, device_scale=scale)
        eng = data["engine"]
        bat = data.get("batching", {})
        ex = dict(data.get("execution", {}))
        padding = dict(ex.pop("padding", {}))
        bad = set(padding) - {"q_tokens", "kv_tokens"}
        if bad:
            raise InputError(f"unknown keys {sorted(bad)}; padding takes q_tokens, kv_tokens",
                             file=str(p), field="execution.padding")
        kernels = data.get("kernels", {}).get("accounting", "fused")
        load_accounting(kernels)        # an unknown accounting fails here, naming the file
        env = data.get("envelope")
        transfer = dict(data.get("transfer", {}))
        transfer_scales(None, None, transfer)         # unknown rules fail here
        return EngineSpec(name=data.get("name", p.stem), terms=terms, device=eng["device"],
                          model=eng["model"], calibration=eng.get("calibration", "measured"),
                          description=data.get("description", ""),
                          batching=bat.get("policy", "vllm"),
                          batching_params=dict(bat.get("params", {})),
                          scheduler=dict(data.get("scheduler", {})),
                          meta={k: v for k, v in eng.items()
                                if k not in ("device", "model", "calibration")},
                          fit=dict(data.get("fit", {})), source=str(p), kernels=kernels,
                          execution=ExecutionMode.of(ex or "graphs"), padding=padding,
                          envelope=Envelope.from_table(env) if env else None,
                          transfer=transfer)
    except KeyError as err:
        raise InputError(f"missing key {err}", file=str(p)) from None
    except InputError as err:
        if err.file is None:
            raise InputError(err.reason, file=str(p), field=err.field) from None
        raise
    except (ValueError, TypeError, AttributeError) as err:
        raise InputError(f"malformed engine spec: {err}", file=str(p)) from None


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def engine_toml(spec: EngineSpec, comments: dict | None = None) -> str:
    """The TOML text of an engine spec (what :func:`load_engine` reads back)."""
    c = comments or {}
    lines = [f"# {line}" for line in c.get("header", [])]
    lines += [f"name = {_toml_value(spec.name)}",
              f"description = {_toml_value(spec.description)}", "", "[engine]",
              f"device = {_toml_value(spec.device)}", f"model = {_toml_value(spec.model)}",
              f"calibration = {_toml_value(spec.calibration)}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in spec.meta.items()]
    t = spec.terms
    lines += ["", "[terms]    # time = device_scale * device time + sum of coefficient x count",
              f"device_scale = {_toml_value(t.device_scale)}"]
    for kind in KINDS:
        lines += ["", f"[terms.{kind}]    # seconds per unit, "
                  + ("iterations without prompt tokens" if kind == "decode"
                     else "iterations with prompt tokens (and any decodes)")]
        for name in BASE_TERMS:
            note = c.get("terms", {}).get(name, "")
            lines.append(f"{name}_s = {_toml_value(getattr(t, f'{kind}_{name}'))}"
                         + (f"    # {note}" if note else ""))
    lines += ["", "[batching]", f"policy = {_toml_value(spec.batching)}",
              f"params = {_toml_value(spec.batching_params)}", "", "[scheduler]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in spec.scheduler.items()]
    lines += ["", "[kernels]    # which kernels a forward launches: hwspecs/engines/kernels/",
              f"accounting = {_toml_value(spec.kernels)}", "",
              "[execution]    # graphs (CUDA-graph replay), eager (each launch dispatched), "
              "piecewise", f"prefill = {_toml_value(spec.execution.prefill)}",
              f"decode = {_toml_value(spec.execution.decode)}"]
    if spec.padding:
        lines += ["", "[execution.padding]    # graphs' static shapes: tokens padded to "
                  "multiples of these", *[f"{k} = {_toml_value(v)}"
                                          for k, v in spec.padding.items()]]
    if spec.transfer:
        lines += ["", "[transfer]    # how device terms follow another model shape: kv_bytes, "
                  "attention, none", *[f"{k} = {_toml_value(v)}"
                                       for k, v in spec.transfer.items()]]
    if spec.envelope is not None:
        lines += ["", "[envelope]    # the largest batch shapes the fitted profile covered"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in spec.envelope.as_table().items()]
    if spec.fit:
        lines += ["", "[fit]"] + [f"{k} = {_toml_value(v)}" for k, v in spec.fit.items()]
    return "\n".join(lines) + "\n"
