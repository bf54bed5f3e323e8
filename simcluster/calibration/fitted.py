"""Measured calibration: achievable rates as a function of shape, from kernel tables.

For every measured row the fitter computes the *slowdown* s = measured time / datasheet
roofline time (``max(flops / peak_flops, bytes / peak_bw)``, with the same FLOP and byte counts
the cost model uses). A :class:`Curve` interpolates log s linearly over log-shape features —
inside the measured grid by Delaunay simplices, outside it by the nearest measured point, so far
from the grid the prediction falls back to the roofline scaled by the nearest measured
efficiency. The achievable rates handed to the cost model are the peaks divided by s; per-kernel
launch overheads are part of s (tiny shapes are measured), and the smallest time measured for
an operator class is kept as its per-kernel floor.

Features (the last one is the *length* axis the simulator varies most):

=============  ===========================================  =========================
operator        features                                     table rows used
=============  ===========================================  =========================
gemm            log n, log k, log m                          ``gemm`` / ``cpu_gemm``
attn_prefill    log(heads / kv_heads), log(batch x heads),   ``attn_prefill`` (fastest
                log tokens                                   backend per shape)
attn_decode     log(heads / kv_heads), log(batch x kv_heads), ``attn_decode`` / ``cpu_attn_
                log kv_len                                   decode`` (fastest backend)
elementwise     log row length (hidden), log bytes per       ``elementwise``
                kernel; one curve per kernel kind (rmsnorm,
                silu_mul, residual_add)
grouped_gemm    log n, log k, log groups, log m (rows per    ``grouped_gemm``
                group)
=============  ===========================================  =========================

A device with a GEMM table but no grouped-GEMM table times grouped GEMMs (mixture-of-experts
routed experts) with its *dense* GEMM curves at the per-expert shape (m = rows per expert):
the provenance (:meth:`MeasuredCalibration.op_provenance`) says so. It is a rough stand-in:
on the H200's own grouped rows it is off by a median 29% (p90 178%; benchmarks/moe_layouts.py)
-- a small expert's GEMM alone is launch-latency-bound, inside one grouped kernel it is not,
while large experts stream weights at 1.5-3.5 TB/s grouped against the dense GEMV's 4.4.

A GEMM whose (n, k) pair was measured is interpolated along m within that pair only (the
tile-quantisation steps of one pair do not blur into its neighbours'); other pairs use the 3-D
interpolation. An elementwise group of the cost model (norms, activation, residual adds fused
in one accounting line) uses the mean log slowdown of the measured kinds.

A device without tables borrows the curves of a calibrated device of its ``arch_family``
(else, flagged *cross-family*, of its kind), applied to its own peaks: the prediction's
provenance says so. CPU tables (measured on the lent machines' host) belong to the
``Lent-Host-Xeon-16C`` spec; only rows at the largest thread count are used.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator, RBFInterpolator
from scipy.spatial import QhullError

from simcluster.calibration.roofline import DEVICE_OPS, Calibration, compute_dtype
from simcluster.calibration.tables import calibrated_devices, load_tables
from simcluster.models.operators import op_counts
from simcluster.hardware import DeviceSpec, load_device

HOST_CPU = "Lent-Host-Xeon-16C"


class Curve:
    """log slowdown interpolated over log-shape features (see module docstring)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, smooth: bool = False):
        X, y = np.asarray(X, float), np.asarray(y, float)
        if X.ndim == 1:
            X = X[:, None]
        # a feature that never varies in the measurements carries no information
        self._keep = np.ptp(X, axis=0) > 0
        if not self._keep.any():
            self._keep[-1] = True
        X = X[:, self._keep]
        self.dim = X.shape[1]
        self.n = len(y)
        if self.dim == 1:
            order = np.argsort(X[:, 0])
            self._x1, self._y1 = X[order, 0], y[order]
        else:
            self._near = NearestNDInterpolator(X, y, rescale=True)
            try:
                self._lin = LinearNDInterpolator(X, y, rescale=True)
            except QhullError:     # measured points on a flat set: nearest point only
                self._lin = lambda Z: np.full(len(Z), np.nan)
                smooth = False
            # inside the hull a thin-plate spline follows the saturating efficiency curves
            # better than linear simplices across the grid's 2-4x gaps
            self._rbf = RBFInterpolator(X, y, kernel="thin_plate_spline") if smooth else None
        self.floor_s = None

    def __call__(self, X) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, float))[:, self._keep]
        if self.dim == 1:
            return np.interp(X[:, 0], self._x1, self._y1)
        out = self._lin(X)
        bad = np.isnan(out)
        if self._rbf is not None and (~bad).any():
            out[~bad] = self._rbf(X[~bad])
        if bad.any():
            out[bad] = self._near(X[bad])
        return out


def _slowdown_points(op: str, df: pd.DataFrame, device: DeviceSpec, dtype: str):
    """(features, log slowdown, times) of the measured rows of one operator class."""
    peak = device.peak_flops_for(compute_dtype(device, dtype))
    bw = device.mem_bw_bytes_per_s
    feats, ys, ts = [], [], []
    for row in df.to_dict("records"):
        if op == "gemm":
            shape = {"m": row["m"], "n": row["n"], "k": row["k"]}
            x = (math.log(row["n"]), math.log(row["k"]), math.log(row["m"]))
        elif op == "attn_prefill":
            shape = {"tokens": row["seq_len"], "context": 0, "batch": row["batch"],
                     "num_heads": row["num_heads"], "num_kv_heads": row["num_kv_heads"],
                     "head_dim": row["head_dim"]}
            x = (math.log(row["num_heads"] / row["num_kv_heads"]),
                 math.log(row["batch"] * row["num_heads"]), math.log(row["seq_len"]))
        elif op == "attn_decode":
            shape = {"batch": row["batch"], "kv_len": row["kv_len"],
                     "num_heads": row["num_heads"], "num_kv_heads": row["num_kv_heads"],
                     "head_dim": row["head_dim"]}
            x = (math.log(row["num_heads"] / row["num_kv_heads"]),
                 math.log(row["batch"] * row["num_kv_heads"]), math.log(row["kv_len"]))
        elif op == "grouped_gemm":
            shape = {"m": row["m"], "n": row["n"], "k": row["k"], "groups": row["groups"]}
            x = (math.log(row["n"]), math.log(row["k"]), math.log(row["groups"]),
                 math.log(row["m"]))
        else:  # elementwise: the row length matters (a norm reduces along it)
            shape = {"bytes": row["bytes"]}
            x = (math.log(row["hidden"]), math.log(row["bytes"]))
        flops, nbytes, _ = op_counts(op, shape)
        roof = max(flops / peak, nbytes / bw)
        feats.append(x)
        ys.append(math.log(row["time_s"] / roof))
        ts.append(row["time_s"])
    return np.array(feats), np.array(ys), np.array(ts)


def _best_per_shape(df: pd.DataFrame, keys) -> pd.DataFrame:
    """The fastest row (backend / op kind) for each shape."""
    return df.loc[df.groupby(list(keys)).time_s.idxmin()]


def table_rows(tables: Mapping[str, tuple[dict, pd.DataFrame]], op: str, dtype: str):
    """The rows of ``tables`` that calibrate ``op`` in ``dtype`` (None if there are none)."""
    def pick(name):
        return tables[name][1] if name in tables else None
    if op == "gemm":
        df = pick("gemm")
        if df is None:
            df = pick("cpu_gemm")
            if df is not None:
                df = df[df.threads == df.threads.max()]
        if df is not None:
            df = df[df.dtype == dtype]
        return df if df is not None and len(df) else None
    if op == "attn_prefill":
        df = pick("attn_prefill")
        return None if df is None else _best_per_shape(
            df, ["batch", "seq_len", "num_heads", "num_kv_heads", "head_dim"])
    if op == "attn_decode":
        df = pick("attn_decode")
        if df is None:
            df = pick("cpu_attn_decode")
            if df is not None:
                df = df[(df.threads == df.threads.max()) & (df.dtype == dtype)]
        return None if df is None or not len(df) else _best_per_shape(
            df, ["batch", "kv_len", "num_heads", "num_kv_heads", "head_dim"])
    if op == "elementwise":
        df = pick("elementwise")
        return None if df is None else df[df.dtype == "bf16"] if "dtype" in df else df
    if op == "grouped_gemm":
        df = pick("grouped_gemm")
        df = None if df is None else df[df.dtype == dtype]
        return df if df is not None and len(df) else None
    raise ValueError(op)


class GroupedCurve:
    """Exact on the first ``exact`` features where that group was measured (interpolating the
    rest within the group), the full interpolation elsewhere. GEMMs group by (n, k) and
    interpolate along m; attention groups by the GQA group size."""

    def __init__(self, X: np.ndarray, y: np.ndarray, exact: int):
        self.general = Curve(X, y)
        self.exact, self.dim, self.n, self.floor_s = exact, X.shape[1], len(y), None
        self.groups = {}
        keys = np.round(X[:, :exact], 9)
        for key in {tuple(k) for k in keys}:
            sel = (keys == np.array(key)).all(axis=1)
            if sel.sum() > X.shape[1] - exact:
                self.groups[key] = Curve(X[sel, exact:], y[sel], smooth=self.dim - exact > 1)

    def __call__(self, X) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, float))
        keys = np.round(X[:, :self.exact], 9)
        key = tuple(keys[0])
        if key in self.groups and (keys == np.array(key)).all():
            return self.groups[key](X[:, self.exact:])
        return self.general(X)


class KindCurves:
    """Elementwise curves, one per kernel kind; an unknown kind gets their mean."""

    def __init__(self, curves: dict[str, Curve]):
        self.kinds = curves
        self.dim, self.floor_s = 1, None
        self.n = sum(c.n for c in curves.values())

    def __call__(self, X, kind: str | None = None) -> np.ndarray:
        if kind in self.kinds:
            return self.kinds[kind](X)
        return np.mean([c(X) for c in self.kinds.values()], axis=0)


def fit_curves(tables, device: DeviceSpec, dtypes=("bf16", "fp32")) -> dict:
    """(op, dtype) -> curve for every operator class the tables cover."""
    curves = {}
    for op in DEVICE_OPS:
        for dtype in dtypes:
            df = table_rows(tables, op, dtype)
            if df is None or len(df) < 2:
                continue
            if op == "elementwise":
                kinds = {}
                for kind, sub in df.groupby("op"):
                    X, y, t = _slowdown_points(op, sub, device, dtype)
                    if len(y) >= 3:
                        kinds[kind] = GroupedCurve(X, y, exact=1)
                curve = KindCurves(kinds)
                curve.floor_s = float(df.time_s.min())
            else:
                X, y, t = _slowdown_points(op, df, device, dtype)
                curve = GroupedCurve(X, y, exact=2 if op in ("gemm", "grouped_gemm") else 1)
                curve.floor_s = float(t.min())
            curves[(op, dtype)] = curve
    return curves


def fit_links(folders) -> dict:
    """(link kind, op) -> (bandwidth efficiency vs the link spec, latency floor s).

    ``allreduce.csv`` (NCCL over NVLink between two GPUs of one host) gives the all-reduce's
    asymptotic bus bandwidth (slope over messages >= 64 MiB) and its small-message floor (the
    median of messages <= 1 MiB). The floor was measured at two ranks and is used for any rank
    count (NCCL's small-message algorithms are not rings). ``memcpy.csv`` pinned host<->device
    copies give PCIe ``transfer`` efficiency the same way. The spec links these are relative to:
    NVLink4 for an H100/H200 pair, PCIe5 for those hosts.
    """
    from simcluster.hardware import load_link
    out = {}
    for name, folder in folders.items():
        tables = load_tables(folder)
        if "allreduce" in tables and ("nvlink", "collective") not in out:
            df = tables["allreduce"][1]
            df = df[df.world_size == 2]
            big = df[df.size_bytes >= 64 * 2**20]
            if len(big) >= 2:
                slope = np.polyfit(big.size_bytes, big.time_s, 1)[0]   # s per byte, n=2
                floor = float(df[df.size_bytes <= 2**20].time_s.median())
                out[("nvlink", "collective")] = (1.0 / slope / load_link("NVLink4").bw_bytes_per_s,
                                                 floor)
        if "memcpy" in tables and ("pcie", "transfer") not in out:
            df = tables["memcpy"][1]
            df = df[df.direction.isin(["h2d", "d2h"]) & (df.pinned.astype(str).str.lower() == "true")]
            big = df[df.size_bytes >= 64 * 2**20]
            if len(big) >= 2:
                slope = np.polyfit(big.size_bytes, big.time_s, 1)[0]
                floor = float(df[df.size_bytes <= 4096].time_s.median())
                out[("pcie", "transfer")] = (1.0 / slope / load_link("PCIe5").bw_bytes_per_s,
                                             floor)
    return out


class MeasuredCalibration(Calibration):
    """Achievable rates from measured tables (own, or borrowed by architecture family)."""

    name = "measured"

    def __init__(self, curves_by_device: Mapping[str, dict] | None = None,
                 specs: Mapping[str, DeviceSpec] | None = None, note: str = ""):
        super().__init__()
        from_tables = curves_by_device is None
        if from_tables:
            curves_by_device, specs = {}, {}
            for name, folder in calibrated_devices().items():
                tables = load_tables(folder)
                gpu = {k: v for k, v in tables.items()
                       if k in ("gemm", "attn_prefill", "attn_decode", "elementwise",
                                "grouped_gemm")}
                cpu = {k: v for k, v in tables.items() if k.startswith("cpu_")}
                if gpu:
                    specs[name] = load_device(name)
                    curves_by_device[name] = fit_curves(gpu, specs[name])
                if cpu and HOST_CPU not in curves_by_device:
                    specs[HOST_CPU] = load_device(HOST_CPU)
                    curves_by_device[HOST_CPU] = fit_curves(cpu, specs[HOST_CPU])
        self.curves = dict(curves_by_device)
        self.specs = dict(specs or {})
        self.links = fit_links(calibrated_devices()) if from_tables else {}
        self.note = note
        self._source: dict[str, tuple[str | None, str]] = {}
        self._slices: dict = {}

    # -- which curves a device uses --------------------------------------------------------
    def source_of(self, device: DeviceSpec) -> tuple[str | None, str]:
        """(calibrated device whose curves apply, how) for ``device``."""
        hit = self._source.get(device.name)
        if hit is None:
            if device.name in self.curves:
                hit = (device.name, "own tables")
            else:
                same = [n for n, s in self.specs.items()
                        if s.arch_family == device.arch_family and s.kind == device.kind]
                kind = [n for n, s in self.specs.items() if s.kind == device.kind]
                if same:
                    hit = (same[0], f"borrowed from {same[0]} ({device.arch_family})")
                elif kind:
                    src = self.specs[kind[0]]
                    hit = (kind[0], f"borrowed cross-family from {kind[0]} "
                                    f"({src.arch_family} -> {device.arch_family})")
                else:
                    hit = (None, "no tables: datasheet roofline")
            self._source[device.name] = hit
        return hit

    def provenance(self, device: DeviceSpec) -> str:
        src, how = self.source_of(device)
        note = f" [{self.note}]" if self.note else ""
        return f"{self.name}{note}: {device.name} {how}"

    def op_provenance(self, device: DeviceSpec, op: str) -> str:
        """Where one operator class's times on ``device`` come from (grouped GEMMs: their own
        measured table, or the dense GEMM curves as a stated fallback)."""
        src, how = self.source_of(device)
        if src is None:
            return f"{op}: {device.name} datasheet roofline"
        if op == "grouped_gemm" and self._grouped_as_gemm(device, "bf16"):
            return (f"grouped_gemm: {device.name} dense GEMM curves at rows per expert "
                    f"({how}; no grouped-GEMM table)")
        if self._curve(device, op, "bf16") is None:
            return f"{op}: {device.name} datasheet roofline (no {op} table)"
        return f"{op}: {device.name} measured {op} table ({how})"

    def _grouped_as_gemm(self, device, dtype) -> bool:
        """No grouped-GEMM curve for this device, but a dense GEMM one to fall back on."""
        key = ("grouped_as_gemm", self._device_key(device), dtype)
        hit = self._slices.get(key)
        if hit is None:
            cdt = compute_dtype(device, dtype)
            hit = self._slices[key] = (self._curve(device, "grouped_gemm", cdt) is None
                                       and self._curve(device, "gemm", cdt) is not None)
        return hit

    def _curve(self, device, op, dtype):
        src, _ = self.source_of(device)
        if src is None:
            return None
        curves = self.curves[src]
        return curves.get((op, dtype)) or next(
            (c for (o, _), c in curves.items() if o == op), None)

    # -- rates -----------------------------------------------------------------------------
    def _fixed_and_length(self, op, shape):
        if op == "gemm":
            return (math.log(shape["n"]), math.log(shape["k"])), shape["m"]
        if op == "grouped_gemm":     # (groups on a 1/16-octave grid: a bounded slice cache)
            groups = round(math.log2(max(shape["groups"], 1)) * 16) / 16 * math.log(2)
            return (math.log(shape["n"]), math.log(shape["k"]), groups), shape["m"]
        if op == "attn_prefill":
            group = math.log(shape["heads"] / max(shape.get("kv_heads", shape["heads"]), 1e-9))
            return (group, math.log(max(shape.get("batch", 1), 1) * shape["heads"])), \
                shape["tokens"]
        if op == "attn_decode":
            group = math.log(max(shape["heads"], 1e-9) / max(shape["kv_heads"], 1e-9))
            return (group, math.log(max(shape["batch"], 1) * max(shape["kv_heads"], 1))), \
                shape["kv_len"]
        kernels = shape.get("kernels", 1)
        return (math.log(shape.get("hidden") or 4096),), shape["bytes"] / kernels

    def _entry(self, device, op, dtype, kind, fixed):
        """(peak FLOP/s, peak bytes/s, slice x, slice log-slowdown as an array and as a list,
        floor s) for one operator of one device with its non-length features fixed: a 1-D slice
        of the curve along the length axis (a uniform grid in log length), so the hot path is
        one ``np.interp`` for arrays and a direct index for scalars."""
        cdt = compute_dtype(device, dtype)
        peak, bw = device.peak_flops_for(cdt), device.mem_bw_bytes_per_s
        curve = self._curve(device, op, cdt)
        if curve is None:
            return peak, bw, None, None, None, 0.0
        xs = np.linspace(0.0, math.log(1e12 if op == "elementwise" else 1e6), 481)
        pts = np.column_stack([np.broadcast_to(f, xs.shape) for f in fixed] + [xs])
        ys = curve(pts, kind) if op == "elementwise" else curve(pts)
        return peak, bw, xs, ys, ys.tolist(), curve.floor_s or 0.0

    def _link_rates(self, link, op, bytes_, n_ranks):
        fit = self.links.get((link.kind, op))
        if fit is None:
            return link.bw_bytes_per_s, link.latency_s
        efficiency, floor_s = fit
        steps = 2 * (n_ranks - 1) if op == "collective" else 1
        return link.bw_bytes_per_s * efficiency, floor_s / steps

    def op_time(self, device, op, flops, bytes_, shape, dtype="bf16"):
        """Roofline time at the datasheet peaks times the interpolated slowdown, not below
        the operator class's measured per-kernel floor."""
        if op == "grouped_gemm" and self._grouped_as_gemm(device, dtype):
            op = "gemm"     # the dense GEMM curve at the per-expert shape (see module doc)
            shape = {"m": shape["m"], "n": shape["n"], "k": shape["k"],
                     "kernels": shape.get("kernels", 1)}
        fixed, length = self._fixed_and_length(op, shape)
        kind = shape.get("kind")
        key = (self._device_key(device), op, dtype, kind, fixed)
        ent = self._slices.get(key)
        if ent is None:
            ent = self._slices[key] = self._entry(device, op, dtype, kind, fixed)
        peak, bw, xs, ys, ys_list, floor = ent
        if xs is None:
            return np.maximum(flops / peak, bytes_ / bw)
        kernels = shape.get("kernels", 1)
        if isinstance(flops, float) and isinstance(length, (int, float)):
            # scalar fast path: the slice's x grid is uniform, index it directly
            x = math.log(max(length, 1.0))
            pos = min(max(x / xs[1], 0.0), len(xs) - 1.000001)
            i = int(pos)
            y = ys_list[i] + (ys_list[i + 1] - ys_list[i]) * (pos - i)
            t = max(flops / peak, bytes_ / bw) * math.exp(y)
            return max(t, floor * kernels) if floor else t
        t = np.maximum(flops / peak, bytes_ / bw)
        t = t * np.exp(np.interp(np.log(np.maximum(length, 1.0)), xs, ys))
        return np.maximum(t, floor * kernels) if floor else t
