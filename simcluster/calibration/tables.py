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
    from simcluster.workload._columns import unique_header
    unique_header(body[0], str(path), lines[0])
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
#: columns of whole numbers >= 1, of whole numbers >= 0 where given (an empty cell: none, as
#: a missing ``context`` is 0), of byte counts (numbers >= 1), and of labels (any value).
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
    as given. Tables of other names are not checked. The cells are checked as a trace's are
    (:func:`simcluster.workload._columns.numbers`)."""
    import numpy as np

    from simcluster.workload._columns import Rows, numbers, require_columns
    if name not in TABLE_COLUMNS:
        return
    counts, counts0, sizes, labels = TABLE_COLUMNS[name]
    lines = df.attrs.get("lines")
    rows = Rows(str(path), None if lines is None else np.asarray(lines))
    require_columns(list(df.columns), counts + sizes + labels, rows, what=f"a {name!r} table")
    for c in counts:
        numbers(df[c], rows, c, integer=True, minimum=1, expected="a whole number >= 1")
    for c in sizes:
        numbers(df[c], rows, c, integer=False, minimum=1, expected="a number of bytes >= 1")
    for c in counts0:
        if c in df.columns:
            given = df[c].notna().to_numpy()
            numbers(df[c][given], rows.take(np.flatnonzero(given)), c, integer=True,
                    minimum=0, expected="a whole number >= 0")
