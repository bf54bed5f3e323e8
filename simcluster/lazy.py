"""A module imported on first use: ``pd = lazy_module("pandas")`` reads like ``import pandas
as pd`` but imports pandas (a quarter of a second with pyarrow) only when an attribute is
first read. Modules on the simulator's import path use it for pandas, which a simulation needs
only when it builds its result frames, so that set-up stays light."""

from __future__ import annotations

import importlib


class _LazyModule:
    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        self._name, self._module = name, None

    def __getattr__(self, attr):
        mod = self._module
        if mod is None:
            mod = self._module = importlib.import_module(self._name)
        return getattr(mod, attr)

    def __repr__(self):
        return f"<lazy module {self._name!r}{'' if self._module is None else ' (imported)'}>"


def lazy_module(name: str):
    """``name``'s module, imported when an attribute of it is first read."""
    return _LazyModule(name)
