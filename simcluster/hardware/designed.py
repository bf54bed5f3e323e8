"""A parametric design as a device of the cost model: peaks, power and price per hour.

:func:`designed_device` turns an :class:`~simcluster.hardware.parametric.AcceleratorDesign`
into a :class:`~simcluster.hardware.parametric.DesignedDevice` — a
:class:`~simcluster.hardware.DeviceSpec` with the derived peaks (:mod:`.parametric`), the power
of each state (:mod:`.power`; ``tdp_w`` is the larger of prefill and decode power) and a price
per hour (the server's amortised cost from :mod:`.tco`, shared by its devices) — which carries
its design for the calibrations that model its buffers (:mod:`simcluster.calibration.tiles`).
"""

from __future__ import annotations

import functools

from simcluster.hardware.parametric import AcceleratorDesign, DesignedDevice
from simcluster.hardware.power import design_power
from simcluster.hardware.tco import design_cost


@functools.lru_cache(maxsize=4096)
def designed_device(design: AcceleratorDesign) -> DesignedDevice:
    """The device of ``design`` (one object per design: calibrations memoise by device)."""
    if not isinstance(design, AcceleratorDesign):
        hint = (" (a PoolDesign's is .design)" if hasattr(design, "design") else
                " (parse_row(ROW).design)" if isinstance(design, str) else "")
        raise TypeError(f"design: expected an AcceleratorDesign{hint}; got "
                        f"{type(design).__name__}")
    power = design_power(design)
    cost = design_cost(design)
    flops = design.matrix_flops
    return DesignedDevice(
        name=design.name or f"design[{design.row}]", kind="gpu", arch_family="hypothetical",
        mem_bytes=int(round(design.memory_gb * 2**30)),
        mem_bw_bytes_per_s=design.mem_bw_bytes_per_s,
        peak_flops={"bf16": flops, "fp16": flops, "fp32": design.vector_flops / 2},
        compute_units=design.cores, clock_hz=design.clock_hz,
        tdp_w=max(power.prefill_w, power.decode_w),
        idle_power_w=power.idle_w, prefill_power_w=power.prefill_w,
        decode_power_w=power.decode_w,
        price_usd_per_hour=cost.usd_per_hour / design.devices_per_server,
        l2_bytes=design.global_buffer_bytes, host_link="PCIe5",
        source=f"LLMShare parametric design {design.row} (simcluster.hardware.parametric)",
        design=design)
