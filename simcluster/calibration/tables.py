"""Measured kernel tables: CSV files with a ``# key: value`` metadata header.

``hwspecs/calibration/<DEVICE>/<table>.csv`` holds what ``simcluster calibrate`` measured on
one device (tables ``gemm``, ``attn_prefill``, ``attn_decode``, ``elementwise``, ``memcpy``,
``allreduce``, ``cpu_gemm``, ``cpu_attn_decode``; columns in hwspecs/calibration/README.md).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from simcluster.errors import InputError, value_text
from simcluster.hardware import hwspecs_dir, hwspecs_subdirs

if TYPE_CHECKING:
    import pandas as pd


def calibration_dir() -> Path:
    """Where new tables go: ``calibration/`` of the first spec folder."""
    return hwspecs_dir() / "calibration"


def read_meta(path) -> dict:
    """The ``# key: value`` metadata of one measured table (no rows parsed, no pandas)."""
    meta = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                key, _, value = line[1:].partition(":")
                meta[key.strip()] = value.strip()
    return meta


def read_table(path, time_column: str | None = "time_s") -> tuple[dict, pd.DataFrame]:
    """(metadata, rows) of one measured table; ``time_column`` must be there and positive."""
    import pandas as pd           # (imported when a table is read: cached calibrations never are)
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError("no such calibration table", file=str(path)) from None
    meta, body, lines = {}, [], []
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            meta[key.strip()] = value.strip()
        elif line.strip():
            body.append(line)
            lines.append(n)
    if len(body) < 2:
        raise InputError("calibration table has no rows", file=str(path))
    df = pd.read_csv(io.StringIO("\n".join(body)))
    df.attrs["lines"] = lines[1:]      # the file's line of each row, for messages
    if time_column is None:
        return meta, df
    if time_column not in df.columns:
        raise InputError(f"missing column {time_column!r}; found {list(df.columns)}",
                         file=str(path), field=time_column)
    bad = df.index[~(pd.to_numeric(df[time_column], errors="coerce") > 0)]
    if len(bad):
        got = value_text(df[time_column][bad[0]])
        raise InputError(f"{time_column} must be a number > 0, got {got}",
                         file=str(path), line=lines[int(bad[0]) + 1], field=time_column)
    return meta, df


def calibrated_devices() -> dict[str, Path]:
    """Device name -> folder, for every device with measured tables, in every spec folder
    (``$SIMCLUSTER_HWSPECS`` first: its tables of a device replace the bundled ones)."""
    out: dict[str, Path] = {}
    for d in hwspecs_subdirs("calibration"):
        for p in sorted(d.iterdir()):
            if p.is_dir() and any(p.glob("*.csv")) and p.name not in out:
                out[p.name] = p
    return out


def load_tables(folder) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Every table of one device folder, by table name, each checked (:func:`check_table`)."""
    out = {}
    for p in sorted(Path(folder).glob("*.csv")):
        meta, df = out[p.stem] = read_table(p)
        check_table(p.stem, df, p)
    return out


_SHAPE = ("num_heads", "num_kv_heads", "head_dim")
#: What the fits read of each table (beside ``time_s``, which :func:`read_table` checks):
#: columns of whole numbers >= 1, of whole numbers >= 0 (where present), of numbers > 0, and
#: of labels (present, any value).
TABLE_COLUMNS = {
    "gemm": (("m", "n", "k"), (), (), ("dtype",)),
    "cpu_gemm": (("m", "n", "k", "threads"), (), (), ("dtype",)),
    "grouped_gemm": (("groups", "m", "n", "k"), (), (), ("dtype",)),
    "attn_prefill": (("batch", "seq_len") + _SHAPE, ("context",), (), ()),
    "attn_decode": (("batch", "kv_len") + _SHAPE, (), (), ()),
    "cpu_attn_decode": (("batch", "kv_len", "threads") + _SHAPE, (), (), ("dtype",)),
    "elementwise": (("hidden",), (), ("bytes",), ("op",)),
    "profiled_kernels": (("hidden",), (), ("bytes",), ("op",)),
    "allreduce": (("world_size", "size_bytes"), (), (), ()),
    "memcpy": (("size_bytes",), (), (), ("direction", "pinned")),
}


def check_table(name: str, df: pd.DataFrame, path) -> None:
    """An InputError naming the file, line and column where a measured table ``name`` lacks
    a column its fit reads (:data:`TABLE_COLUMNS`) or holds a shape that is not one (a
    fraction, zero or less, text): a fit would otherwise fail deep inside, or take the value
    as given. Tables of other names are not checked."""
    import numpy as np
    import pandas as pd
    if name not in TABLE_COLUMNS:
        return
    counts, counts0, positive, labels = TABLE_COLUMNS[name]
    missing = [c for c in counts + positive + labels if c not in df.columns]
    if missing:
        raise InputError(f"a {name!r} table needs column(s) {missing}; found "
                         f"{list(df.columns)}", file=str(path), field=missing[0])
    lines = df.attrs.get("lines") or range(2, len(df) + 2)
    for cols, least, whole in ((counts, 1, True), (counts0, 0, True), (positive, 0, False)):
        for c in cols:
            if c not in df.columns:
                continue
            x = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
            ok = np.isfinite(x) & ((x >= least) if whole else (x > least))
            if whole:
                ok &= np.floor(np.where(ok, x, 0)) == np.where(ok, x, 0)
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                what = f"a whole number >= {least}" if whole else f"a number > {least}"
                raise InputError(f"expected {what}, got {value_text(df[c].iloc[i])}",
                                 file=str(path), line=lines[i], field=c)
