"""Die area of a parametric accelerator, from its units and SRAM, at a stated process node.

The model and every constant are LLMCompass's (Zhang et al., ISCA'24; its repository's
``cost_model/cost_model.py``, area model by August Ning), re-implemented here:

* logic area = transistor count / transistor density of the node (million transistors per
  mm^2: 96.3 at 7 nm, 138.2 at 5 nm — Khan & Mann, "AI Chips: What They Are and Why They
  Matter", CSET 2020, via LLMCompass's supply-chain model);
* per lane (a sub-core: one systolic array, one vector unit, one register file): control logic
  of 996,200 transistors per vector element (from the A100 SM and MI210 CU); vector ALUs —
  int32 units of 177,690 transistors, fp32 of 685,300 x (23/52)^2, fp64 of 685,300 (Ariane and
  OpenPiton's SPARC T1 FPUs, scaled by mantissa width squared), in A100's proportions of
  vector width / 2 int32, / 2 fp32 and / 4 fp64 units; a systolic array of height x width
  processing elements of one fp16 FPU each (685,300 x (10/52)^2), times the MACs each does per
  cycle; a 64 KB register file (16,384 32-bit registers, 4 ports) by the EMPIRE model scaled
  from 90 nm (density 1.6);
* per core: the local buffer (SRAM bit cell 1.70e-7 mm^2 at 7 nm, 1.25e-7 at 5 nm, divided by a
  CACTI-derived array efficiency that depends on the macro size, macros of at most 512 KB) and
  its crossbar port (44.3 M transistors per core);
* the global buffer as 512 KB SRAM macros;
* memory: 10.45 mm^2 of PHY per 1,024-bit HBM stack interface (PHYs do not shrink with the
  node) plus 552.7 M transistors of controller; links: 0.965 mm^2 of PHY and 86.6 M transistors
  per NVLink4 link (1.888 mm^2 and 74.6 M for NVLink3).

LLMCompass reports its model lands within a few percent of GA100's 826 mm^2 (its artifact's
figure 6); :func:`die_area` of LLMCompass's GA100 template (7 nm, 128 physical cores) gives
827 mm^2 here (tests/test_llmshare_hardware.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessNode:
    """Densities and wafer economics of one node (the wafer figures are used by :mod:`.tco`)."""

    name: str
    mtr_per_mm2: float          # million transistors per mm^2 (logic)
    sram_bit_mm2: float         # mm^2 per SRAM bit cell
    wafer_usd: float            # one processed 300 mm wafer
    defects_per_mm2: float      # defect density for the yield model


PROCESS_NODES: dict[str, ProcessNode] = {n.name: n for n in (
    # densities: Khan & Mann (CSET 2020) via LLMCompass; bit cells: LLMCompass cost_model.py;
    # wafer costs: Khan & Mann via LLMCompass supply_chain_model.py; defect densities: TSMC's
    # public 10 nm / 5 nm slides via the same file (0.15 and 0.20 defects per cm^2)
    ProcessNode("7nm", 96.3, 1.70e-7, 9346.0, 1500 / 1e6),
    ProcessNode("5nm", 138.2, 1.25e-7, 16988.0, 2000 / 1e6),
)}
_DENSITY_90NM = 1.6             # MTr/mm^2 at 90 nm (same source), for the register-file model

FPU64_TR = 685_300
FPU32_TR = FPU64_TR * (23 / 52) ** 2
FPU16_TR = FPU64_TR * (10 / 52) ** 2
INT32_TR = 177_690
CONTROL_TR_PER_VECTOR_ELEMENT = 996_200
CROSSBAR_TR_PER_CORE = 44_300_000
REGISTERS_PER_LANE, REGISTER_BITS, REGISTER_PORTS = 16_384, 32, 4
SRAM_MACRO_MAX_BYTES = 2 ** 19
# CACTI-derived area efficiency of an SRAM macro of 4 KB, 8 KB, ... 1 MB (LLMCompass)
_SRAM_EFFICIENCY = (0.076, 0.142, 0.247, 0.393, 0.559, 0.704, 0.526, 0.602, 0.561)
HBM_PHY_MM2_PER_STACK = 10.45
HBM_CTRL_TR_PER_STACK = 552_743_000
LINK_PHY = {"nvlink3": (1.888, 74_632_000), "nvlink4": (0.965, 86_628_000)}
RETICLE_LIMIT_MM2 = 26 * 33     # 858 mm^2: the lithography field, the largest single die


def _logic_mm2(transistors: float, node: ProcessNode) -> float:
    return transistors / 1e6 / node.mtr_per_mm2


def sram_mm2(capacity_bytes: float, node: ProcessNode) -> float:
    """Area of an SRAM of ``capacity_bytes`` built of macros of at most 512 KB."""
    if capacity_bytes <= 0:
        return 0.0
    macros = max(1, math.ceil(capacity_bytes / SRAM_MACRO_MAX_BYTES))
    unit = min(capacity_bytes / macros, SRAM_MACRO_MAX_BYTES)
    unit = max(unit, 2 ** 12)
    efficiency = _SRAM_EFFICIENCY[math.ceil(math.log2(unit)) - 12]
    return macros * unit * 8 * node.sram_bit_mm2 / efficiency


def register_file_mm2(node: ProcessNode, registers=REGISTERS_PER_LANE, bits=REGISTER_BITS,
                      ports=REGISTER_PORTS) -> float:
    """One register file by the EMPIRE model (um^2 at 90 nm), scaled to ``node``."""
    d, w, p = registers, bits, ports
    um2 = (3.29e4 - 1.09e3 * d - 8.83e2 * w - 5.55e3 * p + 5.35e1 * d * w + 1.50e-2 * d * d
           + 1.08e-2 * w * w + 5.86e-1 * p * p + 1.42e2 * d * p + 3.68e2 * w * p)
    return um2 / 1e6 * _DENSITY_90NM / node.mtr_per_mm2


@dataclass(frozen=True)
class DieArea:
    """Area breakdown of one die in mm^2."""

    control: float
    vector: float
    systolic: float
    register_files: float
    local_buffers: float
    crossbar: float
    global_buffer: float
    memory_phy: float
    memory_controller: float
    link_phy: float
    link_controller: float

    @property
    def cores(self) -> float:
        return (self.control + self.vector + self.systolic + self.register_files
                + self.local_buffers)

    @property
    def total_mm2(self) -> float:
        return (self.cores + self.crossbar + self.global_buffer + self.memory_phy
                + self.memory_controller + self.link_phy + self.link_controller)

    @property
    def fits_reticle(self) -> bool:
        return self.total_mm2 <= RETICLE_LIMIT_MM2


def die_area(design) -> DieArea:
    """The die area of an :class:`~simcluster.hardware.parametric.AcceleratorDesign`."""
    node = PROCESS_NODES[design.process_node]
    vw, lanes, cores = design.vector_width, design.lanes, design.cores
    control = _logic_mm2(vw * CONTROL_TR_PER_VECTOR_ELEMENT, node)
    vector = _logic_mm2(vw / 2 * INT32_TR + vw / 2 * FPU32_TR + vw / 4 * FPU64_TR, node)
    systolic = _logic_mm2(design.array_height * design.width * FPU16_TR
                          * design.macs_per_pe_per_cycle, node)
    regfile = register_file_mm2(node)
    lb = sram_mm2(design.local_buffer_bytes, node)
    link_phy, link_tr = LINK_PHY[design.link_generation.lower()]
    stacks = design.memory_stacks
    return DieArea(
        control=cores * lanes * control, vector=cores * lanes * vector,
        systolic=cores * lanes * systolic, register_files=cores * lanes * regfile,
        local_buffers=cores * lb, crossbar=cores * _logic_mm2(CROSSBAR_TR_PER_CORE, node),
        global_buffer=sram_mm2(design.global_buffer_bytes, node),
        memory_phy=stacks * HBM_PHY_MM2_PER_STACK,
        memory_controller=_logic_mm2(stacks * HBM_CTRL_TR_PER_STACK, node),
        link_phy=design.links_per_device * link_phy,
        link_controller=_logic_mm2(design.links_per_device * link_tr, node))
