"""TOML tables read with key checking: every key taken exactly once, each type- and range-checked.

A :class:`Table` is one table of an experiment file and where it sits (``instances[1].``). Its
readers are the one place an experiment's values are checked:

- :meth:`Table.get` a value of a type, in a range (numbers must be finite);
- :meth:`Table.sub` / :meth:`Table.tables` a sub-table / an array of tables;
- :meth:`Table.policy` a policy name and its params table, checked against the registered
  factory's signature and built once (so the policy's own range checks run at load);
- :meth:`Table.path` a file path, relative to the experiment file's folder — or, for a value
  an override set, to the folder the override was given in (:meth:`Table.base_for`);
- :meth:`Table.at` a context in which any :class:`InputError` (or ``ValueError`` of a
  constructor) raised by a library call is relocated to this file and key;
- :meth:`Table.done` every key was read (a typo fails naming the key and the known ones).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simcluster.errors import InputError, did_you_mean, relocate, toml_text


class Table:
    """A TOML table read with key checking: every key must be taken exactly once."""

    def __init__(self, data: dict, file: str, where: str, base: Path | None = None,
                 origins: dict | None = None):
        if not isinstance(data, dict):
            raise InputError(f"expected a table, got {data!r}", file=file,
                             field=where.rstrip(".") or None)
        self.data, self.file, self.where = dict(data), file, where
        self.base = base if base is not None else Path(file).parent
        #: field name of an override (``instances[0].device``) -> the folder its relative
        #: paths are read from (where it was given: the current folder for ``--set``)
        self.origins: dict = origins or {}
        self.seen: set[str] = set()

    def base_for(self, key: str) -> Path:
        """The folder a relative path at ``key`` is read from: the experiment file's, or the
        folder of the override that set the key or a table or list holding it (the longest
        such override)."""
        if self.origins:
            field, best, base = f"{self.where}{key}", "", None
            for name, folder in self.origins.items():
                if (field == name or field.startswith((name + ".", name + "["))) \
                        and len(name) > len(best):
                    best, base = name, folder
            if base is not None:
                return Path(base)
        return self.base

    def _err(self, key, msg):
        return InputError(msg, file=self.file, field=f"{self.where}{key}")

    def get(self, key: str, kind, default: Any = ..., *, check=None, expect: str = ""):
        """The value at ``key`` of type ``kind`` (a float key takes an int; no bool is a
        number; floats must be finite), passing ``check`` (whose failure says ``expect``)."""
        self.seen.add(key)
        if key not in self.data:
            if default is ...:
                raise self._err(key, f"missing; expected {_names(kind)}")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (float in kinds and int not in kinds and isinstance(value, int)
                and not isinstance(value, bool)):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            hint = ""
            if dict in kinds and not isinstance(value, (dict, list)):
                # (--set router=round_robin meant router.policy=round_robin)
                hint = f" (a table's keys are set one by one: {self.where}{key}.KEY=VALUE)"
            raise self._err(key, f"expected {_names(kind)}, got {toml_text(value)}{hint}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self._err(key, f"expected a finite number, got {value!r}")
        if check is not None and not check(value):
            raise self._err(key, f"value {value!r} out of range" + (
                f"; expected {expect}" if expect else ""))
        return value

    def sub(self, key: str, required=False) -> "Table | None":
        value = self.get(key, dict, ... if required else None)
        return None if value is None else Table(value, self.file, f"{self.where}{key}.",
                                                self.base, self.origins)

    def tables(self, key: str) -> list["Table"]:
        """An array of tables (``[[key]]``), each a Table at ``key[i].``."""
        items = self.get(key, list, [])
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise self._err(f"{key}[{i}]", f"expected a table ([[{key}]]), got {item!r}")
            out.append(Table(item, self.file, f"{self.where}{key}[{i}].", self.base,
                             self.origins))
        return out

    def path(self, key: str, default: Any = ...) -> str | Path | None:
        """A string that names a bundled thing or a file: a value that looks like a path
        (a separator or a file suffix) resolves against :meth:`base_for` the key."""
        value = self.get(key, str, default)
        return None if value is None else resolve(value, self.base_for(key))

    def policy(self, registry, key: str, default: str | None, params_key: str):
        """(name, params) of a policy: ``key`` names it in ``registry``, ``params_key`` is its
        parameter table; both checked, and the policy built once, at load."""
        name = self.get(key, str, default)
        params = self.get(params_key, dict, {})
        if name is None:
            if params:
                raise self._err(params_key, f"given without '{self.where}{key}'")
            return None, {}
        try:
            registry.lookup(name)
        except InputError as err:
            raise relocate(err, self.file, f"{self.where}{key}") from None
        try:
            registry.create(name, **params)
        except InputError as err:
            field = f"{self.where}{params_key}" + (f".{err.field}" if err.field else "")
            raise InputError(err.reason, file=self.file, field=field) from None
        return name, params

    @contextmanager
    def at(self, key: str = ""):
        """Relocate any InputError (or a constructor's ValueError) to this file and ``key``
        (to the key the error names, when it names a key of this table)."""
        field = f"{self.where}{key}".rstrip(".") or None
        try:
            yield
        except InputError as err:
            if err.file is None and err.field in self.data:
                field = f"{self.where}{err.field}"
            raise relocate(err, self.file, field) from None
        except ValueError as err:
            raise InputError(str(err), file=self.file, field=field) from None

    def done(self):
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise self._err(extra[0], f"unknown key{did_you_mean(extra[0], self.seen)}; "
                                      f"known here: {', '.join(sorted(self.seen))}")


#: The kinds of TOML file simcluster reads, by the top-level keys that only that kind has,
#: and the command that takes each.
FILE_KINDS = {"experiment": (("instances",), "simcluster run FILE"),
              "sweep": (("grid", "points", "experiment"), "simcluster sweep FILE"),
              "candidates": (("candidates",), "simcluster cheapest EXPERIMENT --candidates "
                                              "FILE"),
              "search": (("space", "objectives"), "simcluster search FILE")}


def check_kind(data: dict, file, what: str) -> None:
    """``data``, read as a ``what`` file, is not plainly another kind (a sweep file given to
    ``run`` was "field 'trace': missing"): an InputError naming the kind and its command."""
    own = FILE_KINDS[what][0]
    if any(k in data for k in own):
        return
    for kind, (keys, command) in FILE_KINDS.items():
        found = [k for k in keys if k in data]
        if kind != what and found:
            an = {k: "an" if k[0] in "aeiou" else "a" for k in (kind, what)}
            raise InputError(f"{an[kind]} {kind} file (it has {found[0]!r}), not {an[what]} "
                             f"{what} file; '{command}' takes it", file=str(file))


def resolve(value: str, base: Path) -> str | Path:
    """``value`` itself when it is a name, else the path it names relative to ``base``."""
    p = Path(value).expanduser()
    looks_like_path = ("/" in value or "\\" in value or p.suffix in (
        ".toml", ".json", ".csv", ".jsonl", ".ndjson", ".parquet", ".pq"))
    if not looks_like_path:
        return value
    return p if p.is_absolute() else base / p


#: what a TOML file calls each Python type a reader asks for
_TOML_NAMES = {dict: "a table", list: "an array", str: "a string", int: "an integer",
               float: "a number", bool: "true or false"}


def _names(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_TOML_NAMES.get(k, getattr(k, "__name__", str(k))) for k in kinds)


def positive(v):
    return v > 0


def non_negative(v):
    return v >= 0
