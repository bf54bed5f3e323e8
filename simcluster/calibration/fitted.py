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
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator, RBFInterpolator
from scipy.spatial import QhullError

from simcluster.calibration.roofline import (DEVICE_OPS, NO_LAUNCH_COSTS,
                                             Calibration, LaunchCosts, compute_dtype)
from simcluster.calibration.borrowing import load_borrowing
from simcluster.calibration.launch import borrowed, fit_launch
from simcluster.calibration.links import fit_links
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
        if op in ("gemm", "gemm_nn"):
            shape = {"m": row["m"], "n": row["n"], "k": row["k"]}
            x = (math.log(row["n"]), math.log(row["k"]), math.log(row["m"]))
        elif op == "attn_prefill":
            ctx = row.get("context", 0)
            shape = {"tokens": row["seq_len"], "context": 0 if pd.isna(ctx) else ctx,
                     "batch": row["batch"],
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
        flops, nbytes, _ = op_counts("gemm" if op == "gemm_nn" else op, shape)
        roof = max(flops / peak, nbytes / bw)
        feats.append(x)
        ys.append(math.log(row["time_s"] / roof))
        ts.append(row["time_s"])
    return np.array(feats), np.array(ys), np.array(ts)


def _best_per_shape(df: pd.DataFrame, keys) -> pd.DataFrame:
    """The fastest row (backend / op kind) for each shape."""
    return df.loc[df.groupby(list(keys)).time_s.idxmin()]


def table_rows(tables: Mapping[str, tuple[dict, pd.DataFrame]], op: str, dtype: str):
    """The rows of ``tables`` that calibrate ``op`` in ``dtype`` (None if there are none).
    ``gemm`` is the ``nt`` weight layout (``F.linear``'s; tables without a layout column hold
    only it), ``gemm_nn`` the other."""
    def pick(name):
        return tables[name][1] if name in tables else None
    if op in ("gemm", "gemm_nn"):
        df = pick("gemm")
        if df is None:
            df = pick("cpu_gemm")
            if df is not None:
                df = df[df.threads == df.threads.max()]
        if df is not None:
            df = df[df.dtype == dtype]
            if "layout" in df.columns:
                df = df[df.layout == ("nn" if op == "gemm_nn" else "nt")]
            elif op == "gemm_nn":
                df = None
        return df if df is not None and len(df) else None
    if op == "attn_prefill":
        df = pick("attn_prefill")
        keys = ["batch", "seq_len", "num_heads", "num_kv_heads", "head_dim"]
        return None if df is None else _best_per_shape(
            df, keys + (["context"] if "context" in df.columns else []))
    if op == "attn_decode":
        df = pick("attn_decode")
        if df is None:
            df = pick("cpu_attn_decode")
            if df is not None:
                df = df[(df.threads == df.threads.max()) & (df.dtype == dtype)]
        return None if df is None or not len(df) else _best_per_shape(
            df, ["batch", "kv_len", "num_heads", "num_kv_heads", "head_dim"])
    if op == "elementwise":
        parts = [d for d in (pick("elementwise"), pick("profiled_kernels")) if d is not None]
        if not parts:
            return None
        df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return df[df.dtype == "bf16"] if "dtype" in df else df
    if op == "grouped_gemm":
        df = pick("grouped_gemm")
        df = None if df is None else df[df.dtype == dtype]
        return df if df is not None and len(df) else None
    raise ValueError(op)


class GroupedCurve:
    """Exact on the first ``exact`` features where that group was measured (interpolating the
    rest within the group), the full interpolation elsewhere. GEMMs group by (n, k) and
    interpolate along m; attention groups by the GQA group size.

    GEMM pairs whose n or k is not a multiple of 8 (16-byte rows in bf16; e.g. OPT's vocabulary
    over 8 ranks, n = 6284) run a slower cuBLAS path (2-3x on the H200): they are kept exact but
    left out of the across-pair interpolation, which they would otherwise pull up for aligned
    neighbours (a held-out (m=732, n=6144, k=5120) came out +199% with them in)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, exact: int, general=None):
        # ``general``: the rows the across-group interpolation may use (all by default)
        keep = np.ones(len(y), bool) if general is None else np.asarray(general, bool)
        self.general = Curve(X[keep], y[keep]) if keep.sum() > X.shape[1] else Curve(X, y)
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


#: The kinds a fused engine's grouped elementwise line (kind None) averages over; the
#: unfused HF kinds (rmsnorm_hf, rotary_hf) are used only when an accounting names them.
FUSED_KINDS = ("rmsnorm", "silu_mul", "residual_add")


class KindCurves:
    """Elementwise curves, one per kernel kind; an unnamed or unknown kind gets the mean of
    the fused kinds (all kinds where none of those was measured)."""

    def __init__(self, curves: dict[str, Curve]):
        self.kinds = curves
        self.dim, self.floor_s = 1, None
        self.n = sum(c.n for c in curves.values())
        self._mean = [c for k, c in curves.items() if k in FUSED_KINDS] or list(curves.values())

    def __call__(self, X, kind: str | None = None) -> np.ndarray:
        if kind in self.kinds:
            return self.kinds[kind](X)
        return np.mean([c(X) for c in self._mean], axis=0)


def _table_notes(tables) -> str:
    """Where imported tables came from (their ``source`` metadata), for the provenance."""
    srcs = sorted({meta["source"] for meta, _ in tables.values() if meta.get("source")})
    return "; ".join(srcs)


def fit_curves(tables, device: DeviceSpec, dtypes=("bf16", "fp32")) -> dict:
    """(op, dtype) -> curve for every operator class the tables cover."""
    curves = {}
    for op in DEVICE_OPS + ("gemm_nn",):
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
                general = ((df.n.to_numpy() % 8 == 0) & (df.k.to_numpy() % 8 == 0)
                           if op in ("gemm", "gemm_nn", "grouped_gemm") else None)
                curve = GroupedCurve(X, y, exact=2 if op in ("gemm", "gemm_nn", "grouped_gemm")
                                     else 1, general=general)
                curve.floor_s = float(t.min())
            curves[(op, dtype)] = curve
    return curves


class MeasuredCalibration(Calibration):
    """Achievable rates from measured tables: a device's own (measured, or imported from a
    published profile), else borrowed per operator class from a calibrated device of its
    architecture family, else (flagged cross-family) of its kind, unless
    ``hwspecs/calibration/borrowing.toml`` says otherwise (``datasheet_only``, an explicit
    source). The provenance names every borrowed curve."""

    name = "measured"

    def __init__(self, curves_by_device: Mapping[str, dict] | None = None,
                 specs: Mapping[str, DeviceSpec] | None = None, note: str = "",
                 borrowing: Mapping[str, dict] | None = None,
                 launch: Mapping[str, LaunchCosts] | None = None):
        super().__init__()
        from_tables = curves_by_device is None
        self.notes: dict[str, str] = {}
        launch = dict(launch or {})
        if from_tables:
            curves_by_device, specs = {}, {}
            for name, folder in calibrated_devices().items():
                tables = load_tables(folder)
                gpu = {k: v for k, v in tables.items()
                       if k in ("gemm", "attn_prefill", "attn_decode", "elementwise",
                                "grouped_gemm", "profiled_kernels")}
                cpu = {k: v for k, v in tables.items() if k.startswith("cpu_")}
                if gpu:
                    specs[name] = load_device(name)
                    curves_by_device[name] = fit_curves(gpu, specs[name])
                    self.notes[name] = _table_notes(gpu)
                if "launch" in tables:
                    launch[name] = fit_launch(*tables["launch"], name,
                                              str(Path(folder) / "launch.csv"))
                if cpu and HOST_CPU not in curves_by_device:
                    specs[HOST_CPU] = load_device(HOST_CPU)
                    curves_by_device[HOST_CPU] = fit_curves(cpu, specs[HOST_CPU])
            if borrowing is None:
                borrowing = load_borrowing()
        self.curves = dict(curves_by_device)
        self.specs = dict(specs or {})
        self.links = fit_links(calibrated_devices()) if from_tables else {}
        self.launch = launch
        self.borrowing = dict(borrowing or {})
        self.note = note
        self._source: dict = {}
        self._slices: dict = {}

    # -- which curves a device uses --------------------------------------------------------
    def _has(self, name: str, op: str | None) -> bool:
        return name in self.curves and (op is None or any(
            o == op for o, _ in self.curves[name]))

    def source_of(self, device: DeviceSpec, op: str | None = None) -> tuple[str | None, str]:
        """(calibrated device whose curves apply, how) for ``device`` (and one operator class;
        without one, for the device as a whole)."""
        key = (device.name, op)
        hit = self._source.get(key)
        if hit is None:
            hit = self._source[key] = self._find_source(device, op)
        return hit

    def _find_source(self, device, op):
        rule = self.borrowing.get(device.name, {})
        if rule.get("datasheet_only"):
            return None, "datasheet only (hwspecs/calibration/borrowing.toml)"
        if op == "grouped_gemm" and self._has(device.name, "gemm"):
            op = "grouped_gemm" if self._has(device.name, "grouped_gemm") else "gemm"
            # no grouped table of its own: its dense GEMM curves (op_provenance says so)
        if self._has(device.name, op):
            return device.name, "own tables" + (f" ({self.notes[device.name]})"
                                                if self.notes.get(device.name) else "")
        explicit = (rule.get("ops") or {}).get(op) or rule.get("from")
        if explicit and self._has(explicit, op):
            return explicit, f"borrowed from {explicit} (hwspecs/calibration/borrowing.toml)"
        has = [n for n, s in self.specs.items() if s.kind == device.kind and self._has(n, op)]
        same = [n for n in has if self.specs[n].arch_family == device.arch_family]
        if same:
            return same[0], f"borrowed from {same[0]} ({device.arch_family})"
        if has and rule.get("cross_family", True):
            src = self.specs[has[0]]
            return has[0], (f"borrowed cross-family from {has[0]} "
                            f"({src.arch_family} -> {device.arch_family})")
        return None, "no tables: datasheet roofline"

    def provenance(self, device: DeviceSpec) -> str:
        note = f" [{self.note}]" if self.note else ""
        hows: dict[str, list[str]] = {}
        for op in DEVICE_OPS:
            hows.setdefault(self.source_of(device, op)[1], []).append(op)
        if len(hows) == 1:
            text = next(iter(hows))
        else:
            text = "; ".join(f"{', '.join(ops)}: {how}" for how, ops in hows.items())
        return f"{self.name}{note}: {device.name} {text}"

    def launch_costs(self, device: DeviceSpec) -> LaunchCosts:
        """Own launch table, else (GPUs on the lent machines' kind of host) borrowed from a
        device that has one, saying so; none for CPU sockets and datasheet-only devices."""
        if device.kind != "gpu" or self.borrowing.get(device.name, {}).get("datasheet_only"):
            return NO_LAUNCH_COSTS
        if device.name in self.launch:
            return self.launch[device.name]
        if not self.launch:
            return NO_LAUNCH_COSTS
        owner = sorted(self.launch)[-1]
        return borrowed(self.launch[owner], owner)

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
        src, _ = self.source_of(device, "gemm" if op == "gemm_nn" else op)
        if src is None:
            return None
        curves = self.curves[src]
        hit = curves.get((op, dtype)) or next(
            (c for (o, _), c in curves.items() if o == op), None)
        if hit is None and op == "gemm_nn":       # no nn-layout table: the nt curve
            return self._curve(device, "gemm", dtype)
        return hit

    # -- rates -----------------------------------------------------------------------------
    def _fixed_and_length(self, op, shape):
        if op in ("gemm", "gemm_nn"):
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
        if op == "gemm" and shape.get("layout") == "nn":
            op = "gemm_nn"       # the other weight layout: its own curve where measured
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
