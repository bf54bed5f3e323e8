"""Hardware as plain data: devices (GPUs and CPU sockets), links, and node templates.

A :class:`DeviceSpec` is what the cost model knows of one chip: memory capacity and bandwidth,
dense peak compute per dtype, power and an hourly price. GPUs and CPU sockets differ only in
values; a socket also carries NUMA figures. A :class:`LinkSpec` is a connection, and a
:class:`NodeSpec` a server template naming its devices and the links that join them.

Specs are TOML files under ``hwspecs/{devices,links,nodes}/`` (format: hwspecs/README.md),
read by :mod:`.registry`. Constructing a spec checks fields, types and units, naming the field
of any bad value.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simcluster.errors import InputError

DEVICE_KINDS = ("gpu", "cpu")
LINK_KINDS = ("nvlink", "pcie", "upi", "xgmi", "infiniband", "ethernet")
ARCH_FAMILIES = ("blackwell", "hopper", "ada", "ampere", "turing", "volta", "pascal", "skylake-sp",
                 "cascade-lake", "ice-lake-sp", "sapphire-rapids", "emerald-rapids",
                 "granite-rapids", "zen2", "zen3", "zen4", "zen5", "hypothetical")
DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")
_DTYPE_ALIASES = {"float64": "fp64", "double": "fp64", "float32": "fp32", "float": "fp32",
                  "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                  "float8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8"}
_NUMA_FIELDS = ("remote_mem_bw_bytes_per_s", "local_mem_latency_s", "remote_mem_latency_s")
_INTEGER_FIELDS = ("mem_bytes", "compute_units", "l2_bytes")
_OPTIONAL_NUMBERS = ("idle_power_w", "prefill_power_w", "decode_power_w",
                     "l2_bytes") + _NUMA_FIELDS

# field -> (unit, lowest plausible, highest plausible); the first 13 are DeviceSpec fields
_RANGES: dict[str, tuple[str, float, float]] = {
    "mem_bytes": ("bytes", 1e8, 1e14), "mem_bw_bytes_per_s": ("bytes/s", 1e9, 1e14),
    "compute_units": ("units", 1, 1e6), "clock_hz": ("Hz", 1e8, 1e10),
    # (power up to 20 kW: a parametric design may be far larger than any product)
    "tdp_w": ("W", 1, 2e4), "price_usd_per_hour": ("USD/h", 0, 1e4),
    "idle_power_w": ("W", 0, 2e4), "prefill_power_w": ("W", 0, 2e4),
    "decode_power_w": ("W", 0, 2e4), "l2_bytes": ("bytes", 1e5, 1e10),
    "remote_mem_bw_bytes_per_s": ("bytes/s", 1e9, 1e14),
    "local_mem_latency_s": ("s", 1e-9, 1e-5), "remote_mem_latency_s": ("s", 1e-9, 1e-5),
    # parametric designs of LLMShare's space reach ~2e16 (hardware/parametric.py)
    "peak_flops": ("FLOP/s", 1e11, 1e17),
    "bw_bytes_per_s": ("bytes/s", 1e8, 1e13), "latency_s": ("s", 1e-9, 1e-1),
}
_DEVICE_NUMBERS = tuple(_RANGES)[:13]
_PREFIXES = ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T"),
             (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))
_SI_UNITS = ("bytes", "bytes/s", "FLOP/s", "Hz", "s")


def normalize_dtype(dtype: str) -> str:
    """The canonical short name of a dtype ('bfloat16' -> 'bf16'); ValueError if unknown."""
    key = _DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    return key


def _number(value: Any, field: str, *, key: str | None = None, optional: bool = False) -> Any:
    """One numeric field checked against its unit's plausible range, suggesting a unit."""
    if value is None and optional:
        return None
    unit, low, high = _RANGES[key or field]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"expected a number in {unit}, got {type(value).__name__} {value!r}",
                         field=field)
    if not (math.isfinite(value) and low <= value <= high):
        hint, middle = "", (math.log10(max(low, 1e-30)) + math.log10(high)) / 2
        fits = [(abs(math.log10(value * f) - middle), f, p) for f, p in _PREFIXES
                if unit in _SI_UNITS and value > 0 and low <= value * f <= high]
        if fits:   # the SI prefix that lands nearest the middle of the plausible range
            _, factor, prefix = min(fits)
            hint = (f"; {value:g} looks like {prefix}{unit.replace('bytes', 'B')}: write "
                    f"{value:g}e{round(math.log10(factor))} (= {value * factor:.4g} {unit})")
        raise InputError(f"expected {unit} between {low:g} and {high:g}, got {value!r}{hint}",
                         field=field)
    if field in _INTEGER_FIELDS and float(value) != int(value):
        raise InputError(f"expected a whole number of {unit}, got {value!r}", field=field)
    return int(value) if field in _INTEGER_FIELDS else float(value)


def _check_text(spec: Any, choices: Mapping[str, tuple[Any, ...]]) -> None:
    """``name`` non-empty, ``source`` a string, and each field of ``choices`` one of its values."""
    if not isinstance(spec.name, str) or not spec.name.strip():
        raise InputError(f"expected a non-empty string, got {spec.name!r}", field="name")
    if not isinstance(spec.source, str):
        raise InputError(f"expected text citing a datasheet, got {spec.source!r}", field="source")
    for field, allowed in choices.items():
        if getattr(spec, field) not in allowed:
            shown = ", ".join(str(a) for a in allowed if a is not None)
            raise InputError(f"expected one of {shown}, got {getattr(spec, field)!r}", field=field)


def _at(err: InputError, file: Any, field: str | None = None) -> InputError:
    return InputError(err.reason, file=str(file), line=err.line, field=field or err.field)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class FlopsTable(dict):
    """Read-only, hashable mapping dtype -> dense peak FLOP/s (OP/s for integer dtypes)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a FlopsTable is read-only; use DeviceSpec.with_overrides")

    def __reduce__(self) -> tuple[Any, ...]:  # pickling (multiprocessing sweeps) must not mutate
        return (FlopsTable, (dict(self),))

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only


def _check_flops(table: Any) -> FlopsTable:
    """Peak table with canonical dtype keys; 0 or None marks a dtype as unsupported."""
    if not isinstance(table, Mapping):
        raise InputError(f"expected a mapping dtype -> FLOP/s, got {table!r}", field="peak_flops")
    out = {}
    for name, value in table.items():
        try:
            dtype = normalize_dtype(name)
        except ValueError as err:
            raise InputError(str(err), field=f"peak_flops_{name}") from None
        if value not in (0, None):
            out[dtype] = _number(value, f"peak_flops_{dtype}", key="peak_flops")
    if not out:
        raise InputError("expected at least one peak_flops_<dtype> entry", field="peak_flops")
    return FlopsTable(out)


@dataclass(frozen=True)
class DeviceSpec:
    """One compute device: a GPU, or one CPU socket with the DRAM attached to it.

    Peaks are dense (no structured sparsity); ``clock_hz`` is the clock they assume (GPU boost,
    CPU base). The NUMA fields (remote bandwidth, local and remote latency) are set for CPU
    sockets, None for GPUs. ``host_link`` names the device's own bus (a link spec), which bounds
    its transfers even in a faster node. Equality ignores ``source`` and ``aliases``.
    """

    name: str
    kind: str
    arch_family: str
    mem_bytes: int
    mem_bw_bytes_per_s: float
    peak_flops: Mapping[str, float]
    compute_units: int
    clock_hz: float
    tdp_w: float
    idle_power_w: float | None = None
    prefill_power_w: float | None = None     # power while prefilling (see hardware/power.py)
    decode_power_w: float | None = None      # power while decoding
    price_usd_per_hour: float = 0.0
    l2_bytes: int | None = None
    remote_mem_bw_bytes_per_s: float | None = None
    local_mem_latency_s: float | None = None
    remote_mem_latency_s: float | None = None
    source: str = dataclasses.field(default="", compare=False)
    host_link: str | None = None
    aliases: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    def __post_init__(self) -> None:
        _check_text(self, {"kind": DEVICE_KINDS, "arch_family": ARCH_FAMILIES})
        set_ = functools.partial(object.__setattr__, self)
        set_("peak_flops", _check_flops(self.peak_flops))
        for f in _DEVICE_NUMBERS:
            set_(f, _number(getattr(self, f), f, optional=f in _OPTIONAL_NUMBERS))
        for f in ("idle_power_w", "prefill_power_w", "decode_power_w"):
            if getattr(self, f) is not None and getattr(self, f) > self.tdp_w:
                raise InputError(f"{f[:-2].replace('_', ' ')} {getattr(self, f):g} W exceeds "
                                 f"tdp_w {self.tdp_w:g} W", field=f)
        for f in _NUMA_FIELDS:   # NUMA: reading the other socket's memory
            if (getattr(self, f) is None) == (self.kind == "cpu"):
                raise InputError("required for kind 'cpu'" if self.kind == "cpu" else
                                 "only applies to kind 'cpu' (NUMA between sockets)", field=f)
        if self.kind == "cpu" and self.remote_mem_latency_s < self.local_mem_latency_s:
            raise InputError("remote latency is below local latency", field="remote_mem_latency_s")
        if self.host_link is not None and not isinstance(self.host_link, str):
            raise InputError(f"expected a link name, got {self.host_link!r}", field="host_link")
        set_("aliases", (self.aliases,) if isinstance(self.aliases, str) else tuple(self.aliases))
        if not all(isinstance(a, str) and a.strip() for a in self.aliases):
            raise InputError(f"expected a list of names, got {self.aliases!r}", field="aliases")

    def peak_flops_for(self, dtype: str) -> float:
        """Dense peak FLOP/s (OP/s for integer dtypes) of this device at ``dtype``.

        ``bf16`` falls back to the ``fp16`` peak where the device has no native bf16 (Pascal
        P100, Volta V100): a bf16 model runs there as fp16, at the fp16 rate. Raises ValueError
        naming the device and dtype when it has no peak for the dtype (e.g. fp16 on a Xeon Gold
        6148, which computes 16-bit models in fp32: ask it for 'fp32').
        """
        key = normalize_dtype(dtype)
        if key in self.peak_flops:
            return self.peak_flops[key]
        if key == "bf16" and "fp16" in self.peak_flops:
            return self.peak_flops["fp16"]
        raise ValueError(f"device {self.name!r} has no peak FLOP/s for dtype {dtype!r}; "
                         f"it has: {', '.join(self.peak_flops)}")

    def with_overrides(self, **fields: Any) -> DeviceSpec:
        """A hypothetical device: this one with some fields replaced, validated like a file.

        Takes field names, ``peak_flops=`` (a whole new table) or ``peak_flops_<dtype>=`` (one
        entry; 0 removes it). The name stays unless given, so calibration keyed by name or
        arch_family still applies; ``source`` records which fields were overridden.
        """
        flops = dict(fields.pop("peak_flops", self.peak_flops))
        for key in [k for k in fields if k.startswith("peak_flops_")]:
            flops[key[len("peak_flops_"):]] = fields.pop(key)
        known, where = {f.name for f in dataclasses.fields(self)}, f"<{self.name} with overrides>"
        for key in set(fields) - known:
            raise InputError(f"unknown field{_did_you_mean(key, known)}", file=where, field=key)
        changed = sorted(set(fields) - {"source"}) + ["peak_flops"] * (flops != self.peak_flops)
        if changed:
            fields.setdefault("source", f"{self.source} [overridden: {', '.join(changed)}]")
        try:
            return dataclasses.replace(self, peak_flops=flops, **fields)
        except InputError as err:
            raise _at(err, where) from None


@dataclass(frozen=True)
class LinkSpec:
    """A connection: bandwidth per direction per device, and a fixed per-transfer latency."""

    name: str
    bw_bytes_per_s: float
    latency_s: float
    kind: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        _check_text(self, {"kind": LINK_KINDS + (None,)})
        for f in ("bw_bytes_per_s", "latency_s"):
            object.__setattr__(self, f, _number(getattr(self, f), f))

    def transfer_time_s(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` one way over this link, alone on it."""
        return self.latency_s + nbytes / self.bw_bytes_per_s


@dataclass(frozen=True)
class NodeSpec:
    """A server template: (device spec name, count) pairs and the links that join them.

    ``intra_link`` joins devices in the node, ``inter_node_link`` is each device's share of the
    network, ``host_link`` joins devices to host memory; ``sockets`` and ``socket_link`` are the
    CPU sockets and the link between them (NUMA). Load specs with ``load_device(name)``."""

    name: str
    devices: tuple[tuple[str, int], ...]
    intra_link: str | None = None
    inter_node_link: str | None = None
    host_link: str | None = None
    source: str = ""
    sockets: tuple[tuple[str, int], ...] = ()
    socket_link: str | None = None

    @property
    def num_devices(self) -> int:
        """How many (non-socket) devices the node holds."""
        return sum(count for _, count in self.devices)

    @property
    def device_names(self) -> tuple[str, ...]:
        """Device spec names, one per physical device, in file order."""
        return tuple(name for name, count in self.devices for _ in range(count))
