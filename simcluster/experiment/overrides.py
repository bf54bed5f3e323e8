"""Overrides: ``key.path=value`` edits of an experiment's TOML data, applied before validation.

    router.policy=round_robin       a string (a bare word is a string)
    instances.0.count=8             the first [[instances]] table's count (an integer)
    trace.rate_per_s=12             a number
    slo.ttft_s=0.5                  creates the [slo] table if the file has none
    instances.0.devices=["A100-80GB-PCIe", "RTX3090"]    any TOML value: arrays, inline tables
    seed=3

The value is read as a TOML value (``12`` is an integer, ``12.0`` a float, ``true`` a boolean,
``"12"`` a string); text that is not a TOML value is taken as a string. Overrides change the
data the TOML file parsed into, so the experiment loader checks them exactly as it checks the
file's own keys: a mistyped key or an out-of-range value fails naming the key. A relative
path an override sets (``trace.source=my.csv``) is read from the folder the override was given
in, not the experiment file's (``Table.base_for``; the loader is told the folder per key).
"""

from __future__ import annotations

import copy
import tomllib
from typing import Any, Iterable, Mapping

from simcluster.errors import InputError, toml_text


def parse_value(text: str) -> Any:
    """A TOML value, or the text itself when it is not one (``jsq`` -> ``"jsq"``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def parse_override(text: str) -> tuple[str, Any]:
    """``"key.path=value"`` -> ``("key.path", value)``."""
    key, eq, value = str(text).partition("=")
    key = key.strip()
    if not eq or not key or any(not part for part in key.split(".")):
        raise InputError("expected KEY.PATH=VALUE (e.g. router.policy=round_robin), got "
                         f"{text!r}", field="--set")
    return key, parse_value(value)


def split_values(text: str) -> list[Any]:
    """``"a,b,[1, 2]"`` -> ``["a", "b", [1, 2]]``: a comma-separated list of values, commas
    inside brackets, braces or quotes kept (the values of a ``--vary``)."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    if any(not p.strip() for p in parts):
        raise InputError(f"empty value in the list {text!r}", field="--vary")
    return [parse_value(p) for p in parts]


def as_mapping(overrides: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """Overrides as ``{key.path: value}`` from a mapping or ``KEY=VALUE`` strings."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return {str(k): v for k, v in overrides.items()}
    if isinstance(overrides, str):
        overrides = [overrides]
    items = list(overrides) if isinstance(overrides, Iterable) and not isinstance(
        overrides, bytes) else None
    if items is None or not all(isinstance(o, str) for o in items):
        raise TypeError(f"overrides: expected a mapping of KEY.PATH to value, or KEY=VALUE "
                        f"strings; got {type(overrides).__name__} {overrides!r:.60}")
    out: dict[str, Any] = {}
    for o in items:
        key, value = parse_override(o)
        if key in out:              # (the last would replace the first without a word)
            raise InputError(f"{key} is set twice ({toml_text(out[key])} and "
                             f"{toml_text(value)}); set it once", field=key)
        inner = next((k for k in out if k.startswith(key + ".")), None)
        if inner is not None:       # (a whole table or list after a key inside it)
            raise InputError(f"{key} would replace {inner}, set before it; set {key} first",
                             field=key)
        out[key] = value
    return out


def apply_overrides(data: dict, overrides: Mapping[str, Any] | Iterable[str] | None,
                    file: str | None = None) -> dict:
    """A copy of ``data`` with each ``key.path`` set to its value (the input is untouched).

    Tables on the path are created when missing; a list is indexed by a whole number within
    its length (``instances.0``). A path through a value that is neither fails naming it.
    """
    out = copy.deepcopy(data)
    for path, value in as_mapping(overrides).items():
        parts = path.split(".")
        node = out
        for i, part in enumerate(parts):
            here = field_name(".".join(parts[:i + 1]))
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    where = ".".join(parts[:i])
                    expected = (f"expected an index 0..{len(node) - 1}" if node else
                                "it is empty, so no index exists")
                    raise InputError(f"--set {path}: {where} is a list of {len(node)}; "
                                     f"{expected}, got {part!r}", file=file, field=here)
                part = int(part)
            elif not isinstance(node, dict):
                raise InputError(f"--set {path}: {'.'.join(parts[:i])} is "
                                 f"{type(node).__name__} {node!r}, not a table",
                                 file=file, field=here)
            if last:
                node[part] = copy.deepcopy(value)
            else:
                if isinstance(node, dict) and part not in node:
                    node[part] = {}
                node = node[part]
    return out


def field_name(path: str) -> str:
    """The name the experiment loader gives a key path: ``instances.0.count`` ->
    ``instances[0].count``."""
    out = []
    for part in path.split("."):
        if part.isdigit() and out:
            out[-1] += f"[{part}]"
        else:
            out.append(part)
    return ".".join(out)


def blame(err: InputError, overrides: Mapping[str, Any]) -> InputError:
    """``err`` with the override that set its field named, when one did."""
    if not overrides or err.field is None:
        return err
    for path, value in overrides.items():
        name = field_name(path)
        if err.field == name or err.field.startswith(name + ".") or \
                err.field.startswith(name + "["):
            return type(err)(f"{err.reason} (set by override {path}={toml_text(value)})",
                             file=err.file, line=err.line, field=err.field)
    return err
