"""Curves fitted to measured tables: the log slowdown of each operator against the roofline,
interpolated over log-shape features (:class:`Curve`; grouped GEMMs :class:`GroupedCurve`,
fused elementwise kinds :class:`KindCurves`), and :func:`fit_curves`, which fits a device's
curves from its tables. :class:`~.fitted.MeasuredCalibration` evaluates them (once per slice,
kept on disk; :mod:`.slice_cache`). scipy and pandas are imported only while fitting.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

import numpy as np

from simcluster.calibration.roofline import DEVICE_OPS, compute_dtype
from simcluster.hardware import DeviceSpec
from simcluster.models.operators import op_counts

if TYPE_CHECKING:
    import pandas as pd


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
            # (scipy is imported only here: a process whose slices are cached never fits)
            from scipy.interpolate import (LinearNDInterpolator, NearestNDInterpolator,
                                           RBFInterpolator)
            from scipy.spatial import QhullError
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
            ctx = 0 if ctx is None or ctx != ctx else ctx        # (a missing value: NaN)
            shape = {"tokens": row["seq_len"], "context": ctx,
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
        if len(parts) > 1:
            import pandas as pd
            df = pd.concat(parts, ignore_index=True)
        else:
            df = parts[0]
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
