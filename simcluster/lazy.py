"""Imports on first use, so that set-up stays light.

``pd = lazy_module("pandas")`` reads like ``import pandas as pd`` but imports pandas (a quarter
of a second with pyarrow) only when an attribute is first read: modules on the simulator's
import path use it for pandas, which a simulation needs only when it builds its result frames.
:func:`lazy_exports` does the same for a package's names (PEP 562): the top-level
``simcluster`` package, and packages whose parts a plain simulation does not use (trace
generators and transforms, other pool kinds, engine models, mixtures of experts, reading a
``config.json``). Without cached bytecode (``PYTHONDONTWRITEBYTECODE``) every module imported
is compiled again in every process: ~0.18 ms a kilobyte of source on this machine kind, 0.14 s
for the 804 kB a plain simulation imported before these names were deferred."""

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


def lazy_exports(namespace: dict, exports: dict[str, str], modules: dict[str, str] | None = None):
    """``(__getattr__, __dir__)`` of a package whose names ``exports`` (name -> the module
    defining it) and ``modules`` (name -> a module, the value itself) are imported when first
    read (PEP 562), then kept in ``namespace`` (the package's ``globals()``): ``from
    simcluster.workload import rescale_rate`` reads as before, and importing the package no
    longer imports (and, without cached bytecode, compiles) every submodule. A name must not
    be its module's own last component (importing that submodule would set the package
    attribute to the module). ``dir()`` lists the names, and the public names and dunders
    already bound."""
    package, modules = namespace["__name__"], modules or {}

    def __getattr__(name):
        if name in modules:
            value = importlib.import_module(modules[name])
        elif name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__():
        # (not ``annotations``, the __future__ flag's name, nor private helpers)
        loaded = {n for n in namespace if n.startswith("__")
                  or not n.startswith("_") and n != "annotations"}
        return sorted(loaded | set(exports) | set(modules))
    return __getattr__, __dir__
