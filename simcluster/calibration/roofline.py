"""The neutral calibration (datasheet roofline) and the interface every calibration keeps.

The cost model asks a :class:`Calibration` for the *time* of one operator on one device given
its FLOPs, its minimum bytes moved and its shape. The neutral calibration is the datasheet
roofline: ``max(flops / peak_flops, bytes / peak_bw)`` with no per-kernel overhead.

Operator classes: ``gemm``, ``attn_prefill``, ``attn_decode``, ``elementwise``,
``grouped_gemm`` (a mixture of experts' routed experts: one GEMM per expert, ``groups`` of ``m``
rows each) (device ops) and ``collective``, ``transfer`` (link ops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from simcluster.hardware import DeviceSpec, LinkSpec

DEVICE_OPS = ("gemm", "attn_prefill", "attn_decode", "elementwise", "grouped_gemm")
LINK_OPS = ("collective", "transfer")
#: Launch classes of the ``launch`` table: which PyTorch call a kernel is dispatched through.
LAUNCH_CLASSES = ("linear", "sdpa", "elementwise", "cat", "copy", "norm")


@dataclass(frozen=True)
class LaunchCosts:
    """Host dispatch seconds per launch, per launch class; launch latency (from the end of a
    dispatch to the kernel's start on an idle device); where they come from."""

    dispatch_s: dict = field(default_factory=lambda: {c: 0.0 for c in LAUNCH_CLASSES})
    latency_s: float = 0.0
    source: str = "none (datasheet: no host costs)"

    def per_launch(self, cls: str) -> float:
        return float(self.dispatch_s.get(cls, self.dispatch_s.get("elementwise", 0.0)))


NO_LAUNCH_COSTS = LaunchCosts()


def compute_dtype(device: DeviceSpec, dtype: str) -> str:
    """The dtype a device computes ``dtype`` work in: itself if the device has a peak for it,
    else fp32 (a CPU socket without bf16 units upconverts)."""
    try:
        device.peak_flops_for(dtype)
        return dtype
    except ValueError:
        return "fp32"


class Calibration:
    """Neutral calibration: datasheet peaks, no overheads.

    A subclass whose rates depend only on (device, op, dtype) overrides ``_rates``, whose
    answer is memoised — the simulator's hot path asks millions of times; one whose rates depend
    on the shape overrides :meth:`op_time` (see :mod:`.fitted`). Memos are keyed by the device
    *object* (kept alive by :meth:`_device_key`), not its name: a hypothetical
    ``with_overrides`` device keeps its name but not its peaks.
    """

    name = "datasheet"

    def __init__(self):
        self._memo: dict = {}
        self._devices: dict[int, DeviceSpec] = {}

    def _device_key(self, device: DeviceSpec) -> int:
        """A memo key for ``device``: its id, with the object held so the id stays unique."""
        key = id(device)
        if key not in self._devices:
            self._devices[key] = device
        return key

    def op_time(self, device: DeviceSpec, op: str, flops, bytes_, shape: Mapping,
                dtype: str = "bf16"):
        """Time in seconds of one ``op`` on ``device`` (array-valued when inputs are arrays).

        ``shape`` holds the operator's shape fields (``m, n, k`` for a GEMM; ``batch,
        kv_len`` for decode attention; ``kernels`` for how many launches a fused group is).
        """
        if op not in DEVICE_OPS:
            raise ValueError(f"unknown device operator class {op!r}; known: {DEVICE_OPS}")
        key = (self._device_key(device), op, dtype)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._rates(device, op, dtype)
        flops_per_s, bytes_per_s, overhead_s = hit
        kernels = shape.get("kernels", 1)
        return np.maximum(flops / flops_per_s, bytes_ / bytes_per_s) + overhead_s * kernels

    def op_time_for(self, device: DeviceSpec):
        """The :meth:`op_time` to call for ``device`` (a wrapper hands out its inner
        calibration's where it would only forward to it): the same times."""
        return self.op_time

    def slice_kernel(self, device: DeviceSpec, op: str, shape: Mapping, dtype: str = "bf16"):
        """``(flops, bytes_, length) -> time`` for arrays of one operator whose shape is
        ``shape`` but for its length axis — the same floats as :meth:`op_time` — or None if
        this calibration has no such shortcut (the caller then uses :meth:`op_time`)."""
        return None

    def link_time(self, link: LinkSpec, op: str, bytes_, n_ranks: int = 2):
        """Time of a ring all-reduce (``collective``) of ``bytes_`` per rank over ``n_ranks``,
        or of a point-to-point ``transfer`` of ``bytes_``."""
        bw, lat = self._link_rates(link, op, bytes_, n_ranks)
        if op == "collective":
            steps = 2 * (n_ranks - 1)
            return steps / n_ranks * bytes_ / bw + steps * lat
        if op == "transfer":
            return bytes_ / bw + lat
        raise ValueError(f"unknown link operator class {op!r}; known: {LINK_OPS}")

    def provenance(self, device: DeviceSpec) -> str:
        return f"{self.name}: {device.name} datasheet peaks"

    def op_provenance(self, device: DeviceSpec, op: str) -> str:
        """Where one operator class's times on ``device`` come from."""
        return f"{op}: {device.name} datasheet roofline"

    def launch_costs(self, device: DeviceSpec) -> LaunchCosts:
        """Per-launch host dispatch costs of ``device``'s host (none for the datasheet: an
        eager forward then costs what a graph replay does)."""
        return NO_LAUNCH_COSTS

    # -- override hooks -------------------------------------------------------------------
    def _rates(self, device: DeviceSpec, op: str, dtype: str):
        """(achievable FLOP/s, achievable bytes/s, per-kernel overhead s) for this op."""
        return (device.peak_flops_for(compute_dtype(device, dtype)),
                device.mem_bw_bytes_per_s, 0.0)

    def _link_rates(self, link: LinkSpec, op: str, bytes_, n_ranks: int):
        return link.bw_bytes_per_s, link.latency_s


NEUTRAL = Calibration()
