"""Parametric accelerators: LLMShare's per-pool design parameters, and the peaks they imply.

LLMShare (Liu et al., DAC'25) describes each pool of a serving system by ten numbers — server
count, then devices per server, links per device, main memory (GB), global buffer (MB), core
count, local buffer (KB), lane count, systolic array height and vector width — a design space
built on LLMCompass's hardware template (Zhang et al., ISCA'24). :class:`AcceleratorDesign`
holds the nine device/server numbers plus *stated* parameters (clock, memory technology, link
generation, process node, MACs per processing element per cycle) with defaults;
:class:`PoolDesign` adds the server count and :class:`ServingDesign` pairs a prefill and a
decode pool.

Peaks are derived the way LLMCompass derives them (``hardware_model/compute_module.py``,
``design_space_exploration/dse.py``):

* matrix FLOP/s = cores x lanes x array height x array width x MACs/PE/cycle x 2 x clock
  (LLMCompass's GA100: 108 x 4 x 16 x 16 x 1 x 2 x 1.41 GHz = 312 TFLOP/s);
* vector FLOP/s = cores x lanes x vector width x FLOPs per element per cycle x clock
  (LLMCompass's A100 vector unit: 4 lanes x 32 wide x 4 FLOP/cycle in fp16; fp32 at 2);
* memory bandwidth = stacks x pins per stack x pin rate, with stacks = ceil(capacity / stack
  capacity) of the memory technology (LLMShare's generator: one 1,024-pin HBM channel of 16 GB
  per 16 GB of capacity);
* link bandwidth = links per device x bandwidth per link per direction of the link generation.

How the H100 row of the source (``7,8,18,80,50,132,256,4,16,32``) maps onto an H100-SXM:
cores = SMs (132), lanes = the SM's four sub-partitions each with one tensor core, array
16 x 16 with 2 MACs per PE per cycle (Hopper's tensor core does twice the A100's dense MMA per
SM per clock — NVIDIA H100 architecture whitepaper, 2022; LLMCompass's A100 array does 1),
vector width 32 = FP32 lanes per sub-partition, local buffer = the SM's 256 KB L1/shared
memory, global buffer = the 50 MB L2, 80 GB of HBM3 = five 16 GB stacks at 5.23 Gb/s per pin
(3.35 TB/s / 5 stacks / 1,024 pins), 18 NVLink4 links of 25 GB/s per direction, clock 1.83 GHz
(the clock at which NVIDIA quotes 989.4 dense TFLOP/s: 132 x 4 x 256 x 2 x 2 x 1.83e9).

:func:`simcluster.hardware.designed.designed_device` makes a design an ordinary
:class:`DeviceSpec` (a :class:`DesignedDevice` that also carries its design), so the cost model
times it through the same code path as every other device; calibrations that know the design
(:mod:`simcluster.calibration.tiles`) use its buffers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from simcluster.errors import InputError
from simcluster.hardware.specs import DeviceSpec, LinkSpec


@dataclass(frozen=True)
class MemoryTechnology:
    """A stacked DRAM generation: pins and rate per stack, capacity per stack."""

    name: str
    pin_rate_bps: float       # bits per second per pin
    pins_per_stack: int
    stack_gb: float
    source: str

    @property
    def stack_bw_bytes_per_s(self) -> float:
        return self.pin_rate_bps * self.pins_per_stack / 8


MEMORY_TECHNOLOGIES: dict[str, MemoryTechnology] = {m.name.lower(): m for m in (
    MemoryTechnology("HBM2e", 3.2e9, 1024, 16,
                     "LLMCompass configs/GA100.json (1,024 pins x 3.2 Gb/s per channel); "
                     "LLMShare's generator: 400 GB/s and 16 GB per HBM2e channel"),
    MemoryTechnology("HBM3", 5.234e9, 1024, 16,
                     "NVIDIA H100 datasheet: 80 GB HBM3 at 3.35 TB/s over five active "
                     "stacks -> 670 GB/s, 16 GB per stack"),
    MemoryTechnology("HBM3e", 6.25e9, 1024, 24,
                     "NVIDIA H200 datasheet: 141 GB HBM3e at 4.8 TB/s over six stacks -> "
                     "800 GB/s, 24 GB per stack"),
)}


@dataclass(frozen=True)
class LinkGeneration:
    """A device-to-device link generation: bandwidth of one link per direction."""

    name: str
    bw_per_link_bytes_per_s: float
    source: str


LINK_GENERATIONS: dict[str, LinkGeneration] = {g.name.lower(): g for g in (
    LinkGeneration("NVLink3", 25e9, "NVIDIA A100 datasheet: 12 links, 600 GB/s both "
                   "directions; LLMCompass link_module_dict['NVLinkV3'] 25 GB/s per direction"),
    LinkGeneration("NVLink4", 25e9, "NVIDIA H100 datasheet: 18 links, 900 GB/s both "
                   "directions"),
)}

#: LLMShare's design space (the slides' Table 1): the values its search takes per parameter.
DESIGN_SPACE: dict[str, tuple[int, ...]] = {
    "servers": tuple(range(1, 11)),
    "devices_per_server": (4, 8, 12, 16),
    "links_per_device": (6, 12, 18, 24),
    "memory_gb": (40, 64, 80, 96, 112, 128),
    "global_buffer_mb": (20, 30, 40, 50, 60, 70, 80, 90, 100, 110),
    "cores": (72, 96, 108, 132, 156, 180),
    "local_buffer_kb": (64, 128, 192, 256, 320, 384, 448, 512),
    "lanes": (1, 2, 4, 8),
    "array_height": (16, 32, 64, 128),
    "vector_width": (16, 32, 64, 128),
}
#: The order of a design row in the source's tables: server count first, then the device.
ROW_FIELDS = tuple(DESIGN_SPACE)

# LLMCompass's global buffer: 5,120 bytes per cycle for A100's 40 MB L2 (configs/template.json),
# and LLMShare's generator scales the bandwidth with the buffer size: 5120 * MB // 40.
_GB_BYTES_PER_CYCLE_PER_MB = 5120 / 40


@dataclass(frozen=True)
class AcceleratorDesign:
    """One accelerator (and the server that holds ``devices_per_server`` of them)."""

    devices_per_server: int
    links_per_device: int
    memory_gb: float
    global_buffer_mb: float
    cores: int
    local_buffer_kb: float
    lanes: int
    array_height: int
    vector_width: int
    # stated parameters (the same for every design of a comparison)
    array_width: int | None = None          # None: square, as LLMShare's generator
    macs_per_pe_per_cycle: int = 2          # Hopper tensor core; LLMCompass's A100 array: 1
    clock_hz: float = 1.83e9                # H100 SXM's clock for its 989.4 TFLOP/s
    memory_technology: str = "HBM3"
    link_generation: str = "NVLink4"
    process_node: str = "5nm"               # TSMC 4N is a 5 nm-class node
    vector_flops_per_element: int = 4       # 16-bit FLOP per vector element per cycle (LLMCompass)
    name: str = ""

    def __post_init__(self):
        ints = ("devices_per_server", "links_per_device", "cores", "lanes", "array_height",
                "vector_width", "macs_per_pe_per_cycle", "vector_flops_per_element")
        for f in ints:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"expected a whole number >= 1, got {v!r}", field=f)
        if self.array_width is not None and (not isinstance(self.array_width, int)
                                             or self.array_width < 1):
            raise InputError(f"expected a whole number >= 1, got {self.array_width!r}",
                             field="array_width")
        for f in ("memory_gb", "global_buffer_mb", "local_buffer_kb", "clock_hz"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    math.isfinite(v) and v > 0):
                raise InputError(f"expected a number > 0, got {v!r}", field=f)
        if not 1e8 <= self.clock_hz <= 1e10:
            raise InputError(f"expected Hz between 1e8 and 1e10, got {self.clock_hz!r}",
                             field="clock_hz")
        for f, table in (("memory_technology", MEMORY_TECHNOLOGIES),
                         ("link_generation", LINK_GENERATIONS)):
            if str(getattr(self, f)).lower() not in table:
                raise InputError(f"unknown {f.replace('_', ' ')} {getattr(self, f)!r}; known: "
                                 f"{', '.join(v.name for v in table.values())}", field=f)
        from simcluster.hardware.area import PROCESS_NODES
        if self.process_node not in PROCESS_NODES:
            raise InputError(f"unknown process node {self.process_node!r}; known: "
                             f"{', '.join(PROCESS_NODES)}", field="process_node")

    # -- the parts ---------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.array_width or self.array_height

    @property
    def memory(self) -> MemoryTechnology:
        return MEMORY_TECHNOLOGIES[self.memory_technology.lower()]

    @property
    def link(self) -> LinkGeneration:
        return LINK_GENERATIONS[self.link_generation.lower()]

    @property
    def memory_stacks(self) -> int:
        return math.ceil(self.memory_gb / self.memory.stack_gb - 1e-9)

    @property
    def local_buffer_bytes(self) -> int:
        return int(self.local_buffer_kb * 1024)

    @property
    def global_buffer_bytes(self) -> int:
        return int(self.global_buffer_mb * 2**20)

    @property
    def global_buffer_bw_bytes_per_s(self) -> float:
        return _GB_BYTES_PER_CYCLE_PER_MB * self.global_buffer_mb * self.clock_hz

    # -- derived peaks -----------------------------------------------------------------------
    @property
    def matrix_flops(self) -> float:
        """Dense 16-bit matrix FLOP/s of the systolic arrays."""
        return (self.cores * self.lanes * self.array_height * self.width
                * self.macs_per_pe_per_cycle * 2 * self.clock_hz)

    @property
    def vector_flops(self) -> float:
        """16-bit FLOP/s of the vector units (fp32 is half)."""
        return (self.cores * self.lanes * self.vector_width * self.vector_flops_per_element
                * self.clock_hz)

    @property
    def mem_bw_bytes_per_s(self) -> float:
        return self.memory_stacks * self.memory.stack_bw_bytes_per_s

    @property
    def link_bw_bytes_per_s(self) -> float:
        """Device-to-device bandwidth per direction, all links together."""
        return self.links_per_device * self.link.bw_per_link_bytes_per_s

    @property
    def row(self) -> str:
        """The nine device numbers in the source's order (after the server count)."""
        return ",".join(_fmt(getattr(self, f)) for f in ROW_FIELDS[1:])

    def link_spec(self) -> LinkSpec:
        """The device-to-device link inside a server (tensor-parallel collectives)."""
        from simcluster.hardware.registry import load_link
        base = load_link(self.link.name)
        return LinkSpec(name=f"{self.link.name}x{self.links_per_device}",
                        bw_bytes_per_s=self.link_bw_bytes_per_s, latency_s=base.latency_s,
                        kind=base.kind,
                        source=f"{self.links_per_device} links; {self.link.source}")

    def with_overrides(self, **fields: Any) -> "AcceleratorDesign":
        known = {f.name for f in dataclasses.fields(self)}
        for key in set(fields) - known:
            raise InputError(f"unknown design parameter; known: {', '.join(sorted(known))}",
                             field=key)
        return dataclasses.replace(self, **fields)


@dataclass(frozen=True, eq=False)
class DesignedDevice(DeviceSpec):
    """A :class:`DeviceSpec` made from an :class:`AcceleratorDesign` (which it carries).

    Equality and hashing are by identity (two designs with the same peaks but different
    buffers are different devices)."""

    design: AcceleratorDesign | None = None

    __hash__ = object.__hash__
    __eq__ = object.__eq__


@dataclass(frozen=True)
class PoolDesign:
    """``servers`` servers of one design."""

    servers: int
    design: AcceleratorDesign

    def __post_init__(self):
        if isinstance(self.servers, bool) or not isinstance(self.servers, int) or self.servers < 1:
            raise InputError(f"expected a whole number >= 1, got {self.servers!r}",
                             field="servers")
        if not isinstance(self.design, AcceleratorDesign):
            raise TypeError(f"PoolDesign.design: expected an AcceleratorDesign; got "
                            f"{type(self.design).__name__}")

    @property
    def row(self) -> str:
        return f"{self.servers},{self.design.row}"

    @property
    def devices(self) -> int:
        return self.servers * self.design.devices_per_server


@dataclass(frozen=True)
class ServingDesign:
    """A serving system: a prefill pool and a decode pool (LLMShare's system model)."""

    prefill: PoolDesign
    decode: PoolDesign

    def __post_init__(self):
        for name in ("prefill", "decode"):
            if not isinstance(getattr(self, name), PoolDesign):
                raise TypeError(f"ServingDesign.{name}: expected a PoolDesign (servers, design) "
                                f"or parse_row(ROW); got {type(getattr(self, name)).__name__}")


def parse_row(row: str | list | tuple, **stated: Any) -> PoolDesign:
    """A pool from the source's ten-number row (``"7,8,18,80,50,132,256,4,16,32"``: server
    count, devices per server, links, memory GB, global buffer MB, cores, local buffer KB,
    lanes, array height, vector width); ``stated`` sets the stated parameters."""
    parts = list(row.split(",") if isinstance(row, str) else row)
    if len(parts) != len(ROW_FIELDS):
        raise InputError(f"expected {len(ROW_FIELDS)} numbers ({', '.join(ROW_FIELDS)}), "
                         f"got {len(parts)}: {row!r}", field="design")
    known = {f.name for f in dataclasses.fields(AcceleratorDesign)} - set(ROW_FIELDS)
    for key in set(stated) - known:
        raise InputError(f"unknown stated parameter; known: {', '.join(sorted(known))}",
                         field=key)
    values = {}
    for f, p in zip(ROW_FIELDS, parts):
        try:
            v = float(p)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            raise InputError(f"expected a number for {f}, got {p!r}", field="design")
        values[f] = int(v) if v == int(v) else v
    servers = values.pop("servers")
    return PoolDesign(servers, AcceleratorDesign(**values, **stated))


def _fmt(v) -> str:
    return str(int(v)) if float(v) == int(v) else f"{v:g}"


#: The source's H100 cluster rows (prefill, decode) and its LLMShare design rows.
H100_PREFILL_ROW = "7,8,18,80,50,132,256,4,16,32"
H100_DECODE_ROW = "6,8,18,80,50,132,256,4,16,32"
LLMSHARE_PREFILL_ROW = "4,4,24,112,100,156,512,1,128,32"
LLMSHARE_DECODE_ROW = "6,12,18,80,70,72,448,2,32,16"


def h100_design() -> AcceleratorDesign:
    """The H100 row's device: the reference of the power and cost models."""
    return parse_row(H100_PREFILL_ROW).design
