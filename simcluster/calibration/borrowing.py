"""Borrowing rules: which curves a device without tables of its own may use.

``hwspecs/calibration/borrowing.toml`` holds one table per device that should not take the
default (borrow each operator class from a calibrated device of the same architecture family,
else, flagged cross-family, of the same kind)::

    [devices."P100"]
    datasheet_only = true          # the bare roofline, no borrowed efficiency, no launch costs

    [devices."L4"]
    from = "A100-80GB"             # borrow every class from this device
    ops = { elementwise = "H200" } # ... but this class from that one
    cross_family = false           # never borrow across families

Every borrowed curve is named in the calibration's provenance, which run headers print.
"""

from __future__ import annotations

import tomllib

from simcluster.calibration.tables import calibration_dir
from simcluster.errors import InputError

KEYS = {"datasheet_only": bool, "from": str, "ops": dict, "cross_family": bool, "note": str}


def load_borrowing(path=None) -> dict[str, dict]:
    """Device name -> its rule (empty when the file does not exist)."""
    p = calibration_dir() / "borrowing.toml" if path is None else path
    if not p.exists():
        return {}
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"not valid TOML: {err}", file=str(p)) from None
    out = {}
    for name, rule in (data.get("devices") or {}).items():
        for key, value in rule.items():
            if key not in KEYS:
                raise InputError(f"unknown key {key!r}; known: {sorted(KEYS)}", file=str(p),
                                 field=f"devices.{name}")
            if not isinstance(value, KEYS[key]):
                raise InputError(f"{key} must be a {KEYS[key].__name__}, got {value!r}",
                                 file=str(p), field=f"devices.{name}.{key}")
        out[name] = dict(rule)
    return out
