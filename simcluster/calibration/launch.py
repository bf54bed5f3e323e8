"""Per-launch host costs from a ``launch`` table (``hwspecs/calibration/<DEVICE>/launch.csv``).

The kernel suite's ``launch`` table times tiny operations of each launch class in three
execution modes and records the host's dispatch time per launch (columns:
``hwspecs/calibration/README.md``). From it:

* ``dispatch_s[class]``: host seconds to dispatch one launch of the class (PyTorch's dispatcher
  and ``cudaLaunchKernel``), the rate an eager forward issues kernels at;
* ``latency_s``: from the end of a dispatch to the kernel's start on an idle device, the
  median over the classes of ``isolated - graph - dispatch`` (one launch between events on an
  idle device, less its graph-replayed device time and its dispatch).

Launch classes map to the table's operations: ``linear`` -> F.linear, ``sdpa`` -> scaled dot
product attention, ``elementwise`` -> an add, ``cat``, ``copy``, ``norm`` -> a fused RMSNorm.
"""

from __future__ import annotations

from simcluster.lazy import lazy_module
from simcluster.calibration.roofline import LAUNCH_CLASSES, LaunchCosts
from simcluster.errors import InputError

pd = lazy_module("pandas")     # (imported when a frame is first built)

OP_OF_CLASS = {"linear": "linear", "sdpa": "sdpa", "elementwise": "add", "cat": "cat",
               "copy": "copy", "norm": "rms_norm"}


def fit_launch(meta: dict, df: pd.DataFrame, device: str, file: str = "launch.csv") -> LaunchCosts:
    """The launch costs a ``launch`` table measured (see module docstring)."""
    need = {"op", "mode", "time_s", "host_dispatch_s"}
    missing = need - set(df.columns)
    if missing:
        raise InputError(f"missing columns {sorted(missing)}", file=file)
    dispatch, lat = {}, []
    for cls in LAUNCH_CLASSES:
        rows = df[df.op == OP_OF_CLASS[cls]]
        if not len(rows):
            raise InputError(f"no rows for op {OP_OF_CLASS[cls]!r} (launch class {cls})",
                             file=file, field="op")
        dispatch[cls] = float(rows.host_dispatch_s.median())
        by_mode = rows.set_index("mode").time_s
        if {"isolated", "graph"} <= set(by_mode.index):
            lat.append(float(by_mode["isolated"] - by_mode["graph"]) - dispatch[cls])
    import statistics             # (fits only: a cached calibration never reads this)
    latency = max(statistics.median(lat), 0.0) if lat else 0.0
    when = meta.get("date_utc", "?")
    return LaunchCosts(dispatch, latency, f"{device} launch table ({when})")


def borrowed(costs: LaunchCosts, owner: str) -> LaunchCosts:
    """``costs`` used for another device on the same kind of host, saying so."""
    return LaunchCosts(dict(costs.dispatch_s), costs.latency_s,
                       f"borrowed from {owner}'s host ({costs.source})")
