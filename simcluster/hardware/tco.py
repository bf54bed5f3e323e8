"""What a parametric accelerator and its server cost: to build, to buy, and per hour.

Each step, with the source of every constant:

1. **Die.** Area from :mod:`.area`. A die larger than the lithography reticle (858 mm^2) is
   split into the fewest equal chiplets that fit (as LLMCompass's template allows several
   compute chiplets; B200 is two reticle-sized dies), each yielded separately. Dies per 300 mm
   wafer = pi r^2 / A - pi d / sqrt(2 A); yield = (1 + A D0 / alpha)^-alpha with alpha = 3
   (negative binomial; LLMCompass ``supply_chain_model.py``); wafer price and defect density
   D0 per node from :data:`.area.PROCESS_NODES` (Khan & Mann, CSET 2020; TSMC slides).
2. **Device** = good dies + HBM (USD per GB, LLMCompass ``cost_model.py``: $7/GB, DRAMexchange
   spot average, Oct 2023) + 2.5D packaging (CoWoS: $723 for an H100's interposer, Robert
   Castellano's estimate from TSMC's CoWoS revenue share, as reported in H100 bill-of-materials
   analyses, 2023; scaled here by interposer area = dies + 110 mm^2 per HBM stack, H100:
   814 + 6 x 110 mm^2) + board, test and assembly ($920 per H100 in the same breakdown of
   Raymond James's $3,320 H100 estimate, Barron's, Aug 2023).
3. **Server** = devices + their share of the scale-up fabric (NVSwitch baseboard: $142 per link;
   Epoch AI's "training-cost-trends" notebook finds SemiAnalysis's per-GPU cost of a DGX H100,
   $5,875, exceeds Raymond James's $3,320 by the baseboard: $2,555 over 18 links) + per-device
   network and I/O (NIC, optics, PCIe switches: $2,698 = SemiAnalysis's non-GPU DGX H100 bill
   of $32,010 less a host, divided by 8) + one host (CPUs, DRAM, storage, chassis, power:
   $10,424, SemiAnalysis's "AI Server Cost Analysis", 2023, standard dual-socket server).
4. **Price** = server bill / (1 - vendor gross margin), margin 0.70 (SemiAnalysis 2023: a DGX
   H100 sells for about $270,000 with almost $190,000 gross profit).
5. **Per hour** = price / lifetime (5 years: the useful life Amazon's 2024 annual report gives
   servers) + colocation ($184.06 per kW per month: CBRE North America Data Center Trends
   H2 2024, 250-500 kW wholesale asking rate) and electricity ($0.080/kWh, EIA 2023 US
   industrial average, x PUE 1.58, Uptime Institute 2023 survey average) for the server's
   power at full load (devices at their prefill or decode power, whichever is larger,
   :mod:`.power`, plus the host's 4.6 kW: DGX H100's 10.2 kW maximum less 8 x 700 W).

An H100-like design lands near the public price of an 8-GPU H100 server (SemiAnalysis's
~$270,000 DGX H100; benchmarks/llmshare_tables.py prints the comparison). Its dollars per
device-hour are an owner's cost; a cloud list price (the bundled H100-SXM spec's $3.35/h,
RunPod) adds the operator's margin and idle capacity, so it is about 2-3x higher.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from simcluster.hardware.area import PROCESS_NODES, RETICLE_LIMIT_MM2, die_area

WAFER_DIAMETER_MM = 300.0
YIELD_CLUSTERING = 3.0
HBM_USD_PER_GB = 7.0
COWOS_USD_H100 = 723.0
H100_INTERPOSER_MM2 = 814.0 + 6 * 110.0
HBM_STACK_FOOTPRINT_MM2 = 110.0
BOARD_TEST_ASSEMBLY_USD = 920.0
SCALE_UP_USD_PER_LINK = 2555.0 / 18
NETWORK_USD_PER_DEVICE = (32010.0 - 10424.0) / 8
HOST_USD_PER_SERVER = 10424.0
VENDOR_GROSS_MARGIN = 0.70
LIFETIME_YEARS = 5.0
HOURS_PER_YEAR = 8766.0
COLOCATION_USD_PER_KW_MONTH = 184.06
HOURS_PER_MONTH = HOURS_PER_YEAR / 12
ELECTRICITY_USD_PER_KWH = 0.080
PUE = 1.58
HOST_POWER_W = 10200.0 - 8 * 700.0


def dies_per_wafer(area_mm2: float) -> float:
    """Whole dies of ``area_mm2`` on a 300 mm wafer (the usual edge-loss formula)."""
    r = WAFER_DIAMETER_MM / 2
    n = math.pi * r * r / area_mm2 - math.pi * WAFER_DIAMETER_MM / math.sqrt(2 * area_mm2)
    if n < 1:
        raise ValueError(f"a {area_mm2:.0f} mm^2 die does not fit a 300 mm wafer")
    return n


def die_yield(area_mm2: float, defects_per_mm2: float, alpha: float = YIELD_CLUSTERING) -> float:
    """Negative-binomial yield of a die of ``area_mm2``."""
    return (1 + area_mm2 * defects_per_mm2 / alpha) ** -alpha


@dataclass(frozen=True)
class DesignCost:
    """Costs of one device and of the server holding ``devices_per_server`` of them (USD)."""

    die_area_mm2: float
    chiplets: int
    die_yield: float
    dies_usd: float
    memory_usd: float
    packaging_usd: float
    board_usd: float
    device_usd: float
    server_bill_usd: float
    server_price_usd: float
    server_power_w: float
    usd_per_hour: float       # the whole server, amortised, with colocation and energy

    @property
    def fits_reticle(self) -> bool:
        return self.chiplets == 1


@functools.lru_cache(maxsize=4096)
def design_cost(design) -> DesignCost:
    """Build, buy and run cost of a design (see module docstring)."""
    from simcluster.hardware.power import design_power
    node = PROCESS_NODES[design.process_node]
    area = die_area(design).total_mm2
    chiplets = max(1, math.ceil(area / RETICLE_LIMIT_MM2))
    piece = area / chiplets
    y = die_yield(piece, node.defects_per_mm2)
    dies = chiplets * node.wafer_usd / (dies_per_wafer(piece) * y)
    memory = design.memory_gb * HBM_USD_PER_GB
    interposer = area + design.memory_stacks * HBM_STACK_FOOTPRINT_MM2
    packaging = COWOS_USD_H100 * interposer / H100_INTERPOSER_MM2
    device = dies + memory + packaging + BOARD_TEST_ASSEMBLY_USD
    dc = design.devices_per_server
    bill = (dc * (device + design.links_per_device * SCALE_UP_USD_PER_LINK
                  + NETWORK_USD_PER_DEVICE) + HOST_USD_PER_SERVER)
    price = bill / (1 - VENDOR_GROSS_MARGIN)
    power = design_power(design)
    power_w = dc * max(power.prefill_w, power.decode_w) + HOST_POWER_W
    kw = power_w / 1000
    per_hour = (price / (LIFETIME_YEARS * HOURS_PER_YEAR)
                + kw * COLOCATION_USD_PER_KW_MONTH / HOURS_PER_MONTH
                + kw * PUE * ELECTRICITY_USD_PER_KWH)
    return DesignCost(area, chiplets, y, dies, memory, packaging, BOARD_TEST_ASSEMBLY_USD,
                      device, bill, price, power_w, per_hour)
