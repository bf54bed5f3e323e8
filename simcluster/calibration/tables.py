"""Measured kernel tables: CSV files with a ``# key: value`` metadata header.

``hwspecs/calibration/<DEVICE>/<table>.csv`` holds what ``simcluster calibrate`` measured on
one device (tables ``gemm``, ``attn_prefill``, ``attn_decode``, ``elementwise``, ``memcpy``,
``allreduce``, ``cpu_gemm``, ``cpu_attn_decode``; columns in hwspecs/calibration/README.md).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from simcluster.errors import InputError
from simcluster.hardware import hwspecs_dir


def calibration_dir() -> Path:
    return hwspecs_dir() / "calibration"


def read_table(path) -> tuple[dict, pd.DataFrame]:
    """(metadata, rows) of one measured table."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError("no such calibration table", file=str(path)) from None
    meta, body = {}, []
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            meta[key.strip()] = value.strip()
        elif line.strip():
            body.append(line)
    if len(body) < 2:
        raise InputError("calibration table has no rows", file=str(path))
    df = pd.read_csv(io.StringIO("\n".join(body)))
    if "time_s" not in df.columns:
        raise InputError(f"missing column 'time_s'; found {list(df.columns)}", file=str(path),
                         field="time_s")
    bad = df.index[~(df.time_s > 0)]
    if len(bad):
        raise InputError("time_s must be > 0", file=str(path),
                         line=int(bad[0]) + 2 + sum(1 for ln in text.splitlines()
                                                    if ln.startswith("#")), field="time_s")
    return meta, df


def calibrated_devices() -> dict[str, Path]:
    """Device name -> folder, for every device with measured tables."""
    d = calibration_dir()
    if not d.exists():
        return {}
    return {p.name: p for p in sorted(d.iterdir()) if p.is_dir() and any(p.glob("*.csv"))}


def load_tables(folder) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Every table of one device folder, by table name."""
    return {p.stem: read_table(p) for p in sorted(Path(folder).glob("*.csv"))}
