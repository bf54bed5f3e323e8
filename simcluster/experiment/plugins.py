"""Plugins: user modules an experiment names (``plugins = ["mypolicies"]``), imported before
its policies are looked up, so that the policies they register resolve by name.

A plugin is a module name importable from the experiment file's folder or ``sys.path``
(``"mypolicies"``, ``"mypkg.routing"``), or a path to a ``.py`` file relative to the
experiment file (``"policies/my_router.py"``; given by an override, ``--set plugins=[...]``,
both are from the current folder). A module is imported once per process; a sweep's
worker processes import it when they load the experiment. A plugin registers with the
registries' decorators::

    from simcluster.policies import ROUTERS

    @ROUTERS.register("shortest_prompt_first")
    class ShortestPromptFirst: ...
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from simcluster.errors import InputError


def _from_file(path: Path):
    name = "simcluster_plugin_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_plugins(names, base: Path, file: str | None = None) -> list:
    """Import each plugin (see the module docstring); a failure names the plugin and why."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"expected a list of module names or .py paths, got {names!r}",
                         file=file, field="plugins")
    modules = []
    for name in names:
        try:
            if name.endswith(".py") or "/" in name:
                path = Path(name) if Path(name).is_absolute() else Path(base) / name
                if not path.is_file():
                    raise FileNotFoundError(f"no such file {path}")
                modules.append(_from_file(path.resolve()))
                continue
            added = str(base) not in sys.path
            if added:
                sys.path.insert(0, str(base))
            try:
                modules.append(importlib.import_module(name))
            finally:
                if added:
                    sys.path.remove(str(base))
        except InputError:
            raise
        except Exception as err:   # an import error, or an error inside the plugin
            raise InputError(f"cannot load plugin {name!r}: {type(err).__name__}: {err}",
                             file=file, field="plugins") from None
    return modules
