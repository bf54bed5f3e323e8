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

import contextlib
import functools
import math
import sys
from pathlib import Path
from typing import Mapping

import numpy as np

from simcluster.calibration.borrowing import load_borrowing
from simcluster.calibration.curves import (  # noqa: F401 (re-exported)
    FUSED_KINDS, Curve, GroupedCurve, KindCurves, fit_curves, table_rows)
from simcluster.calibration.links import fit_links
from simcluster.calibration.roofline import (DEVICE_OPS, NO_LAUNCH_COSTS,
                                             Calibration, LaunchCosts, compute_dtype)
from simcluster.calibration.slice_cache import SliceStore, content_hash
from simcluster.calibration.slice_kernel import SliceKernel, vector_time
from simcluster.calibration.tables import (calibrated_devices, load_tables, read_meta,
                                          read_table)
from simcluster.hardware import DeviceSpec, load_device

HOST_CPU = "Lent-Host-Xeon-16C"


_SLICED = frozenset(DEVICE_OPS)

@functools.cache
def _slice_x(op: str) -> np.ndarray:
    """The length axis of a slice: 481 points uniform in log length up to 1e6 (bytes per
    kernel up to 1e12 for elementwise operators)."""
    return np.linspace(0.0, math.log(1e12 if op == "elementwise" else 1e6), 481)


@contextlib.contextmanager
def _one_blas_thread():
    """BLAS pinned to one thread (fits and slices are small; threads only spin)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:           # pragma: no cover - threadpoolctl is a core dependency
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


#: The tables of a device's GPU curves.
GPU_TABLES = ("gemm", "attn_prefill", "attn_decode", "elementwise", "grouped_gemm",
              "profiled_kernels")


def _scipy_version() -> str:
    """scipy's version for the content hash: its ``version.py`` (version and git revision),
    read without importing scipy or ``importlib.metadata`` (whose import and metadata parse
    cost ~15-30 ms of every process's set-up); the distribution's metadata where the file
    is missing."""
    from importlib.util import find_spec
    spec = find_spec("scipy")
    if spec is not None and spec.origin:
        try:
            return Path(spec.origin).with_name("version.py").read_text()
        except OSError:
            pass
    from importlib.metadata import version
    return version("scipy")


class MeasuredCalibration(Calibration):
    """Achievable rates from measured tables: a device's own (measured, or imported from a
    published profile), else borrowed per operator class from a calibrated device of its
    architecture family, else (flagged cross-family) of its kind, unless
    ``hwspecs/calibration/borrowing.toml`` says otherwise (``datasheet_only``, an explicit
    source). The provenance names every borrowed curve.

    Built from the bundled tables (no curves given), the calibration is lazy: a device's curves
    are fitted only when one of its slices (or its curve list) is missing from the on-disk
    slice cache (:mod:`.slice_cache`, keyed by :attr:`content_hash`), so a process whose
    slices are cached never imports scipy or reads a table with pandas; launch costs and link
    fits are cached the same way. BLAS is pinned to one thread while fitting and slicing
    (threadpoolctl): on a busy machine its threads only spin. Built from given curves, it
    keeps its slices in memory. :attr:`curves` and :attr:`launch` are complete either way
    (reading them fits what is not yet fitted).
    """

    name = "measured"

    def __init__(self, curves_by_device: Mapping[str, dict] | None = None,
                 specs: Mapping[str, DeviceSpec] | None = None, note: str = "",
                 borrowing: Mapping[str, dict] | None = None,
                 launch: Mapping[str, LaunchCosts] | None = None):
        super().__init__()
        self.note = note
        self._source: dict = {}
        self._slices: dict = {}
        self._fast: dict = {}
        self._manifests: dict[str, dict] = {}
        self._links = None
        self._notes: dict[str, str] = {}
        if curves_by_device is not None:
            self._curves = dict(curves_by_device)
            self.specs = dict(specs or {})
            self.borrowing = dict(borrowing or {})
            self._launch = dict(launch or {})
            self._folders: dict[str, tuple] = {}
            self._links = {}
            self.content_hash = None
            self.store = SliceStore(None)
            return
        self.borrowing = dict(load_borrowing() if borrowing is None else borrowing)
        self._launch, self._launch_given = None, dict(launch or {})
        self._curves, self.specs, self._folders = {}, {}, {}
        self._calibrated = calibrated_devices()
        for name, folder in self._calibrated.items():
            stems = {p.stem for p in folder.glob("*.csv")}
            if stems & set(GPU_TABLES):
                self.specs[name] = load_device(name)
                self._folders[name] = (folder, "gpu")
            if any(s.startswith("cpu_") for s in stems) and HOST_CPU not in self._folders:
                self.specs[HOST_CPU] = load_device(HOST_CPU)
                self._folders[HOST_CPU] = (folder, "cpu")
        self.content_hash = content_hash(self._calibrated, self._hash_parts())
        self.store = SliceStore.for_hash(self.content_hash)

    def _hash_parts(self):
        """What the fits read besides the tables: specs, the fitting code, library versions."""
        from simcluster.calibration import (curves, launch, links, roofline, slice_kernel,
                                            tables)
        from simcluster.hardware import load_link
        from simcluster.models import operators
        code = [Path(m.__file__).read_text() for m in (
            sys.modules[__name__], curves, slice_kernel, roofline, tables, operators, launch,
            links)]
        specs = [repr(self.specs[n]) for n in self.specs]
        link_specs = [repr(load_link(n)) for n in ("NVLink4", "PCIe5")]
        return [*code, *specs, *link_specs, np.__version__, _scipy_version()]

    @property
    def curves(self) -> dict:
        """Calibrated device -> (op, dtype) -> curve, every device fitted."""
        for src in self._folders:
            self._fitted(src)
        return self._curves

    @property
    def links(self) -> dict:
        """(link kind, op) -> (bandwidth efficiency, latency floor s): :func:`fit_links`."""
        if self._links is None:
            done = self.store.get(["links_done"])
            if done is not None:
                self._links = {(k[1], k[2]): (float(v[0]), float(v[1]))
                               for k, v in self.store.records.items() if k[0] == "link"}
            else:
                self._links = fit_links(self._calibrated)
                for (kind, op), (eff, floor) in self._links.items():
                    self.store.put(["link", kind, op], [eff, floor])
                self.store.put(["links_done"], [len(self._links)])
        return self._links

    @property
    def launch(self) -> dict[str, LaunchCosts]:
        """Device -> its launch costs, from its ``launch`` table (cached like the slices)."""
        if self._launch is None:
            from simcluster.calibration.roofline import LAUNCH_CLASSES
            out = {}
            if self.store.get(["launch_done"]) is not None:
                for k, v in self.store.records.items():
                    if k[0] == "launch":
                        out[k[1]] = LaunchCosts(dict(zip(LAUNCH_CLASSES, map(float, v[1:]))),
                                                float(v[0]), k[2])
            else:
                from simcluster.calibration.launch import fit_launch
                for name, folder in self._calibrated.items():
                    path = Path(folder) / "launch.csv"
                    if path.exists():
                        meta, df = read_table(path)
                        out[name] = cost = fit_launch(meta, df, name, str(path))
                        self.store.put(["launch", name, cost.source],
                                       [cost.latency_s] + [cost.dispatch_s[c]
                                                           for c in LAUNCH_CLASSES])
                self.store.put(["launch_done"], [len(out)])
            out.update(self._launch_given)
            self._launch = out
        return self._launch

    def _note(self, name: str) -> str:
        """Where a device's GPU tables came from (their ``source`` metadata), for the
        provenance (the tables' comment headers only: no pandas)."""
        hit = self._notes.get(name)
        if hit is None:
            folder = self._folders.get(name, (None, ""))
            srcs = set()
            if folder[1] == "gpu":
                for stem in GPU_TABLES:
                    path = Path(folder[0]) / f"{stem}.csv"
                    if path.exists():
                        src = read_meta(path).get("source")
                        if src:
                            srcs.add(src)
            hit = self._notes[name] = "; ".join(sorted(srcs))
        return hit

    def _fitted(self, src: str) -> dict:
        """(op, dtype) -> curve of calibrated device ``src``, fitted on first use."""
        if src not in self._curves:
            folder, part = self._folders[src]
            tables = load_tables(folder)
            if part == "gpu":
                tables = {k: v for k, v in tables.items() if k in GPU_TABLES}
            else:
                tables = {k: v for k, v in tables.items() if k.startswith("cpu_")}
            with _one_blas_thread():
                self._curves[src] = fit_curves(tables, self.specs[src])
        return self._curves[src]

    def _manifest(self, src: str) -> dict:
        """(op, dtype) -> measured floor s of every curve of ``src`` (from the cache when
        it holds them, so that no fit is needed to know which curves exist)."""
        hit = self._manifests.get(src)
        if hit is None:
            if src not in self._folders:          # given curves
                hit = {key: c.floor_s or 0.0 for key, c in self._curves.get(src, {}).items()}
            elif self.store.get(["curves_done", src]) is not None:
                hit = {(k[2], k[3]): float(v[0]) for k, v in self.store.records.items()
                       if k[0] == "curve" and k[1] == src}
            else:
                hit = {key: c.floor_s or 0.0 for key, c in self._fitted(src).items()}
                for (op, dtype), floor in hit.items():
                    self.store.put(["curve", src, op, dtype], [floor])
                self.store.put(["curves_done", src], [len(hit)])
            self._manifests[src] = hit
        return hit

    # -- which curves a device uses --------------------------------------------------------
    def _has(self, name: str, op: str | None) -> bool:
        if name not in self._curves and name not in self._folders:
            return False
        return op is None or any(o == op for o, _ in self._manifest(name))

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
            note = self._note(device.name)
            return device.name, "own tables" + (f" ({note})" if note else "")
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
        from simcluster.calibration.launch import borrowed
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
        """(calibrated device, curve key) that times ``op`` on ``device`` in ``dtype``, or
        None (from the curves' manifest: no fit needed)."""
        src, _ = self.source_of(device, "gemm" if op == "gemm_nn" else op)
        if src is None:
            return None
        key = self._curve_key(src, op, dtype)
        if key is None and op == "gemm_nn":       # no nn-layout table: the nt curve
            return self._curve(device, "gemm", dtype)
        return None if key is None else (src, key)

    def _curve_key(self, src: str, op: str, dtype: str):
        """The (op, dtype) curve of ``src`` that times ``op`` in ``dtype`` (another dtype's
        curve of the same operator if that one was not measured), or None."""
        manifest = self._manifest(src)
        if (op, dtype) in manifest:
            return (op, dtype)
        return next((key for key in manifest if key[0] == op), None)

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
        hit = self._curve(device, op, cdt)
        if hit is None:
            return peak, bw, None, None, None, 0.0, 0.0, 0.0
        src, ckey = hit
        xs = _slice_x(op)
        skey = ["slice", src, ckey[0], ckey[1], kind, list(fixed)]
        ys = self.store.get(skey)
        if ys is None:
            curve = self._fitted(src)[ckey]
            pts = np.column_stack([np.broadcast_to(f, xs.shape) for f in fixed] + [xs])
            with _one_blas_thread():
                ys = curve(pts, kind) if op == "elementwise" else curve(pts)
            if self._folders:
                self.store.put(skey, ys)
        return (peak, bw, xs, ys, ys.tolist(), self._manifest(src)[ckey], float(xs[1]),
                len(xs) - 1.000001)

    def _link_rates(self, link, op, bytes_, n_ranks):
        fit = self.links.get((link.kind, op))
        if fit is None:
            return link.bw_bytes_per_s, link.latency_s
        efficiency, floor_s = fit
        steps = 2 * (n_ranks - 1) if op == "collective" else 1
        return link.bw_bytes_per_s * efficiency, floor_s / steps

    def _slice(self, device, op, shape, dtype):
        fixed, length = self._fixed_and_length(op, shape)
        kind = shape.get("kind")
        key = (self._device_key(device), op, dtype, kind, fixed)
        ent = self._slices.get(key)
        if ent is None:
            ent = self._slices[key] = self._entry(device, op, dtype, kind, fixed)
        return ent, length

    def _fast_key(self, device, op, shape, dtype):
        """(a key naming the slice by the raw shape fields, the length) — no logarithms; the
        key's slice is the one :meth:`_slice` finds (resolved there on a miss)."""
        if op == "gemm" or op == "gemm_nn":
            return (id(device), op, dtype, shape["n"], shape["k"]), shape["m"]
        if op == "grouped_gemm":     # (groups as _fixed_and_length rounds them)
            return ((id(device), op, dtype, shape["n"], shape["k"],
                     round(math.log2(max(shape["groups"], 1)) * 16)), shape["m"])
        if op == "elementwise":
            return ((id(device), op, dtype, shape.get("hidden"), shape.get("kind")),
                    shape["bytes"] / shape.get("kernels", 1))
        if op == "attn_prefill":
            return ((id(device), op, dtype, shape["heads"], shape.get("kv_heads"),
                     shape.get("batch")), shape["tokens"])
        return ((id(device), op, dtype, shape["heads"], shape["kv_heads"], shape["batch"]),
                shape["kv_len"])

    def op_time(self, device, op, flops, bytes_, shape, dtype="bf16"):
        """Roofline time at the datasheet peaks times the interpolated slowdown, not below
        the operator class's measured per-kernel floor."""
        if op not in _SLICED:
            raise ValueError(f"unknown device operator class {op!r}; known: {DEVICE_OPS}")
        if op == "grouped_gemm" and self._grouped_as_gemm(device, dtype):
            op = "gemm"     # the dense GEMM curve at the per-expert shape (see module doc)
            shape = {"m": shape["m"], "n": shape["n"], "k": shape["k"],
                     "kernels": shape.get("kernels", 1)}
        elif op == "gemm" and shape.get("layout") == "nn":
            op = "gemm_nn"       # the other weight layout: its own curve where measured
        fkey, length = self._fast_key(device, op, shape, dtype)
        ent = self._fast.get(fkey)
        if ent is None:
            ent = self._fast[fkey] = self._slice(device, op, shape, dtype)[0]
        peak, bw, xs, ys, ys_list, floor, dx, top = ent
        if xs is None:
            return np.maximum(flops / peak, bytes_ / bw)
        kernels = shape.get("kernels", 1)
        if isinstance(flops, float) and isinstance(length, (int, float)):
            # scalar fast path: the slice's x grid is uniform, index it directly (in Python
            # floats: the same IEEE arithmetic as numpy scalars, several times faster)
            x = math.log(max(length, 1.0))
            pos = min(max(x / dx, 0.0), top)
            i = int(pos)
            y = ys_list[i] + (ys_list[i + 1] - ys_list[i]) * (pos - i)
            t = max(flops / peak, bytes_ / bw) * math.exp(y)
            return max(t, floor * kernels) if floor else t
        return vector_time(ent, flops, bytes_, length, kernels)

    def slice_kernel(self, device, op, shape, dtype="bf16"):
        ent, _ = self._slice(device, op, shape, dtype)
        return SliceKernel(ent, shape.get("kernels", 1))
