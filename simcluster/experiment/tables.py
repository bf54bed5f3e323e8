"""TOML tables read with key checking: every key taken exactly once, each type- and range-checked."""

from __future__ import annotations

from typing import Any

from simcluster.errors import InputError


class Table:
    """A TOML table read with key checking: every key must be taken exactly once."""

    def __init__(self, data: dict, file: str, where: str):
        self.data, self.file, self.where = dict(data), file, where
        self.seen: set[str] = set()

    def _err(self, key, msg):
        return InputError(msg, file=self.file, field=f"{self.where}{key}")

    def get(self, key: str, kind, default: Any = ..., *, check=None):
        self.seen.add(key)
        if key not in self.data:
            if default is ...:
                raise self._err(key, f"missing; expected {getattr(kind, '__name__', kind)}")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self._err(key, f"expected {names}, got {value!r}")
        if check is not None and not check(value):
            raise self._err(key, f"value {value!r} out of range")
        return value

    def sub(self, key: str, required=False) -> "Table | None":
        value = self.get(key, dict, ... if required else None)
        return None if value is None else Table(value, self.file, f"{self.where}{key}.")

    def done(self):
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise self._err(extra[0], f"unknown key; known here: {', '.join(sorted(self.seen))}")


def positive(v):
    return v > 0
