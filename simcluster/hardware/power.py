"""Power of a device in each state it spends time in: idle, prefill, decode.

Splitwise (Patel et al., ISCA'24, section III) measured per-GPU power on DGX machines:
A100 63 W idle / 400 W prompt / 250 W token, H100 75 / 700 / 380 W — prompt computation runs
at the power cap (compute-bound), token generation well below it (memory-bound). A device spec
may state all three (``idle_power_w``, ``prefill_power_w``, ``decode_power_w``); where it does
not, the missing ones follow from ``tdp_w`` by Splitwise's ratios: prefill at TDP, decode at
0.58 x TDP (the mean of 250/400 and 380/700), idle at 0.13 x TDP (the mean of 63/400 and
75/700). GPUs and CPU sockets get the same rule: a socket prefilling runs its vector units at
full tilt, decoding it streams memory.

A parametric design (:mod:`.parametric`) has no measurement: its power scales Splitwise's H100
figures by the units that burn it, at the same node, clock and voltage (so the same energy per
operation): idle (leakage, clocks) with die area, the prefill increment (700 - 75 W) with the
matrix FLOP/s, the decode increment (380 - 75 W) with the memory bandwidth — each relative to
the H100 row of the LLMShare table (:func:`.parametric.h100_design`). A design with 19x the
H100's matrix throughput therefore draws about 19x its prefill power: energy per FLOP does not
improve with array size in this model (larger systolic arrays move fewer operands per MAC, so
this overstates their power).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

H100_IDLE_W, H100_PREFILL_W, H100_DECODE_W = 75.0, 700.0, 380.0
IDLE_FRACTION_OF_TDP = (63 / 400 + 75 / 700) / 2
DECODE_FRACTION_OF_TDP = (250 / 400 + 380 / 700) / 2


@dataclass(frozen=True)
class PowerProfile:
    """Watts of one device while idle, prefilling and decoding."""

    idle_w: float
    prefill_w: float
    decode_w: float

    def energy_j(self, idle_s: float, prefill_s: float, decode_s: float) -> float:
        """Energy of a device that spent these seconds in each state."""
        return self.idle_w * idle_s + self.prefill_w * prefill_s + self.decode_w * decode_s


def power_profile(device) -> PowerProfile:
    """The power profile of a :class:`~simcluster.hardware.DeviceSpec` (see module doc)."""
    design = getattr(device, "design", None)
    if design is not None:
        return design_power(design)
    tdp = device.tdp_w
    prefill = getattr(device, "prefill_power_w", None) or tdp
    decode = getattr(device, "decode_power_w", None) or DECODE_FRACTION_OF_TDP * tdp
    idle = device.idle_power_w if device.idle_power_w is not None else IDLE_FRACTION_OF_TDP * tdp
    return PowerProfile(float(idle), float(prefill), float(decode))


@functools.lru_cache(maxsize=4096)
def design_power(design) -> PowerProfile:
    """Power of a parametric design, scaled from Splitwise's H100 (see module doc)."""
    from simcluster.hardware.area import die_area
    from simcluster.hardware.parametric import h100_design
    ref = h100_design()
    idle = H100_IDLE_W * die_area(design).total_mm2 / die_area(ref).total_mm2
    prefill = idle + (H100_PREFILL_W - H100_IDLE_W) * design.matrix_flops / ref.matrix_flops
    decode = idle + (H100_DECODE_W - H100_IDLE_W) * (design.mem_bw_bytes_per_s
                                                     / ref.mem_bw_bytes_per_s)
    return PowerProfile(idle, prefill, decode)
