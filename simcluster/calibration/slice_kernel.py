"""The vector path of a measured calibration's slices (:meth:`~.fitted.MeasuredCalibration.
op_time` on arrays): one slice entry evaluated over many lengths, and :class:`SliceKernel`, an
operator's slice with its shape fixed but for the length axis (what the cost model's decode-run
timer calls once per run)."""

from __future__ import annotations

import numpy as np

try:                          # np.interp's compiled loop, without its Python-level checks
    from numpy._core.multiarray import interp as _interp
except ImportError:           # pragma: no cover - numpy < 2
    from numpy.core.multiarray import interp as _interp


def vector_time(ent, flops, bytes_, length, kernels=1):
    """The vector path of :meth:`MeasuredCalibration.op_time` for one slice entry."""
    peak, bw, xs, ys, _, floor, _, _ = ent
    t = np.maximum(flops / peak, bytes_ / bw)
    if xs is None:
        return t
    t = t * np.exp(_interp(np.log(np.maximum(length, 1.0)), xs, ys, None, None))
    return np.maximum(t, floor * kernels) if floor else t


class SliceKernel:
    """One operator's slice with its shape fixed but for the length axis: ``kernel(flops,
    bytes_, length)`` is :meth:`MeasuredCalibration.op_time` on arrays, the same floats."""

    __slots__ = ("ent", "kernels", "peak", "bw")

    def __init__(self, ent, kernels):
        self.ent, self.kernels = ent, kernels
        self.peak, self.bw = ent[0], ent[1]

    def __call__(self, flops, bytes_, length):
        return vector_time(self.ent, flops, bytes_, length, self.kernels)

    def bytes_bound(self, bytes_, length):
        """The same as the call when every ``flops / peak < bytes_ / bw`` and ``length >= 1``
        (the caller knows): the FLOPs roofline and the length clip are skipped."""
        _, bw, xs, ys, _, floor, _, _ = self.ent
        t = bytes_ / bw
        if xs is None:
            return t
        t *= np.exp(_interp(np.log(length), xs, ys, None, None))
        if floor:
            np.maximum(t, floor * self.kernels, out=t)
        return t
