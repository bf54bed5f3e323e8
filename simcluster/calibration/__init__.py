"""Calibration: how close each device gets to its datasheet peaks, per operator class and shape.

The cost model asks a :class:`Calibration` for the *time* of one operator on one device given
its FLOPs, its minimum bytes moved and its shape. The neutral calibration is the datasheet
roofline: ``max(flops / peak_flops, bytes / peak_bw)`` with no per-kernel overhead. Measured
calibrations (``simcluster.calibration.fitted``) replace the peaks with achievable rates that
depend on shape and add per-kernel overheads.

Operator classes: ``gemm``, ``attn_prefill``, ``attn_decode``, ``elementwise`` (device ops)
and ``collective``, ``transfer`` (link ops).
"""

from __future__ import annotations

from simcluster.errors import InputError, unknown_name
from simcluster.calibration.roofline import (DEVICE_OPS, LAUNCH_CLASSES, LINK_OPS, NEUTRAL,
                                             NO_LAUNCH_COSTS, Calibration, LaunchCosts,
                                             compute_dtype)

__all__ = ["DEVICE_OPS", "LAUNCH_CLASSES", "LINK_OPS", "NEUTRAL", "NO_LAUNCH_COSTS",
           "Calibration", "LaunchCosts", "compute_dtype", "load_calibration"]

_LOADED: dict[tuple, Calibration] = {}   # by the table folders it was fitted on


def load_calibration(name: str = "measured") -> Calibration:
    """A calibration by name: ``measured`` (fitted from hwspecs/calibration tables, borrowed
    by architecture family where a device has none; a parametric design's achievable times
    come from its tile model, :mod:`.tiles`) or ``datasheet`` (neutral roofline at the
    device's peaks, derived ones for a design).

    A fitted calibration is immutable once built and is shared by the simulations of one
    process (fitting takes a second).
    """
    if name == "datasheet":
        return NEUTRAL
    if name == "measured":
        from simcluster.calibration.tables import calibrated_devices
        found = calibrated_devices()
        if not found:   # never a silent fall-back to the datasheet
            from simcluster.hardware import hwspecs_dirs
            raise InputError("the measured calibration found no kernel tables in "
                             f"{', '.join(str(d / 'calibration') for d in hwspecs_dirs())}; "
                             "use calibration 'datasheet' for the datasheet roofline",
                             field="calibration")
        key = (name, tuple(sorted((k, str(v)) for k, v in found.items())))
        if key not in _LOADED:
            from simcluster.calibration.fitted import MeasuredCalibration
            from simcluster.calibration.tiles import TileCalibration
            _LOADED[key] = TileCalibration(MeasuredCalibration())
        return _LOADED[key]
    raise unknown_name("calibration", name, ("datasheet", "measured"), field="calibration")
