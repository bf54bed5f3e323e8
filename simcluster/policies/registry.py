"""Registries: one per extension point, a plain dict filled by a decorator.

    @ROUTERS.register("round_robin")
    class RoundRobin: ...

``ROUTERS.create(name, **params)`` builds one; an unknown name fails listing the known ones
(and the closest). ``ROUTERS.check(name, params)`` checks a params table against the
factory's signature without building anything: every key must be a parameter of the factory
(unless it takes ``**kwargs``), every required parameter given, and every value of the type
its annotation states (``int``, ``float``, ``str``, ``bool``, ``None``, ``Sequence[...]``;
other annotations are not checked; NaN is never a valid number). ``create`` checks the same
way and turns a ``ValueError`` of the factory (its own range checks) into an
:class:`~simcluster.errors.InputError` naming the policy. Shells (the experiment loader, a
plugin) call ``check``/``create`` for every params table they read, so every policy gets the
same checks whoever registers it.

Registering a name again *replaces* the entry with a warning — re-running a notebook cell that
defines a policy, or reloading a plugin, must not fail — except that a built-in policy (one
defined in simcluster) is never shadowed by another definition: that is an error.

Built-in policies beyond vLLM-like batching and the plain routers (:mod:`.batching`,
:mod:`.routing`) live in modules imported when first needed (:data:`BUILTIN_MODULES`): a
registry imports them all before it answers for a name it does not hold, before it is listed
(iterated, counted, its keys or items read) and before a policy defined outside simcluster is
registered (so that the shadowing check sees every built-in). A simulation that names only
those two modules' policies never imports the others: without cached bytecode, that is ~125
kB of source not compiled in every process's set-up.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import threading
import warnings
from collections.abc import Mapping
from typing import Any, Callable

from simcluster.errors import InputError, did_you_mean, toml_text, unknown_name

_SCALARS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,),
                                          "bool": (bool,)}
_SEQUENCE = re.compile(r"^(?:Sequence|list|tuple|Iterable|Collection)\[(.+?)(?:,\s*\.\.\.)?\]$")


#: Modules of built-in policies that every registry imports before it answers for a name it
#: does not hold or is listed (module docstring); one that fails to import stays listed.
BUILTIN_MODULES = ["simcluster.policies.bucketed", "simcluster.policies.controllers",
                   "simcluster.policies.hf_cb", "simcluster.policies.minibatch",
                   "simcluster.policies.numa", "simcluster.policies.offload",
                   "simcluster.policies.partition", "simcluster.policies.pool_routing",
                   "simcluster.policies.rebalance"]
_LOCK = threading.RLock()            # (one thread imports them; others wait for it)
_LOADING = threading.local()         # .active: this thread is importing them now


def load_builtins():
    """Import the modules of :data:`BUILTIN_MODULES` not imported yet (they register their
    policies as they are imported). Another thread asking meanwhile waits for them; a lookup
    from a module being imported (this thread) sees the policies registered so far."""
    if not BUILTIN_MODULES or getattr(_LOADING, "active", False):
        return
    with _LOCK:
        _LOADING.active = True
        try:
            while BUILTIN_MODULES:
                importlib.import_module(BUILTIN_MODULES[0])
                BUILTIN_MODULES.pop(0)
        finally:
            _LOADING.active = False


class Registry(dict):
    """Name -> factory (a class, or a function returning a policy object); the built-in
    modules are imported before a name it does not hold is answered or it is listed."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    # -- a dict whose built-in entries are imported on demand (module docstring) ----------
    def __contains__(self, name) -> bool:
        if dict.__contains__(self, name):
            return True
        if BUILTIN_MODULES:
            load_builtins()
            return dict.__contains__(self, name)
        return False

    def __missing__(self, name):
        if BUILTIN_MODULES:
            load_builtins()
            if dict.__contains__(self, name):
                return dict.__getitem__(self, name)
        raise KeyError(name)

    def get(self, name, default=None):
        return self[name] if name in self else default

    def __iter__(self):
        load_builtins()
        return dict.__iter__(self)

    def __len__(self) -> int:
        load_builtins()
        return dict.__len__(self)

    def keys(self):
        load_builtins()
        return dict.keys(self)

    def values(self):
        load_builtins()
        return dict.values(self)

    def items(self):
        load_builtins()
        return dict.items(self)

    def register(self, name: str) -> Callable:
        def deco(factory):
            if getattr(factory, "__module__", "").startswith("simcluster."):
                old = dict.get(self, name)      # (a built-in module, maybe mid-import)
            else:
                old = self.get(name)            # (every built-in imported first)
            if old is not None:
                self._replacing(name, old, factory)
            self[name] = factory
            factory.policy_name = name
            return factory
        return deco

    def _replacing(self, name: str, old, new):
        where = f"{getattr(old, '__module__', '?')}.{getattr(old, '__qualname__', old)}"
        same = where == f"{getattr(new, '__module__', '?')}.{getattr(new, '__qualname__', new)}"
        if where.startswith("simcluster.") and not same:
            raise ValueError(f"{self.kind} policy {name!r} is built in ({where}); register "
                             "yours under another name")
        warnings.warn(f"{self.kind} policy {name!r} registered again: replacing {where}",
                      RuntimeWarning, stacklevel=3)

    def lookup(self, name: str):
        """The factory registered as ``name``; UnknownNameError (a KeyError) listing the
        known names otherwise."""
        if isinstance(name, str) and name in self:
            return self[name]
        raise unknown_name(f"{self.kind} policy", name, self)

    def parameters(self, name: str) -> dict[str, inspect.Parameter] | None:
        """The keyword parameters of ``name``'s factory (None: it takes any keyword)."""
        try:
            sig = inspect.signature(self.lookup(name))
        except (TypeError, ValueError):   # a builtin without a signature: nothing to check
            return None
        params = {}
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                return None
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                params[p.name] = p
        return params

    def describe(self, name: str) -> str:
        """One line for listings: ``name``'s parameters with their defaults (what a params
        table may set) and the first sentence of its factory's docstring."""
        params = self.parameters(name)
        if params is None:
            args = "**params"
        else:
            args = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}"
                             for p in params.values())
        factory = self.lookup(name)
        doc = " ".join((inspect.getdoc(factory) or "").split()).replace("``", "")
        doc = re.sub(r"\s*\((see )?(the )?module docstring\)", "", doc)
        first = re.split(r"(?<=\.)\s", doc, maxsplit=1)[0]
        fixed = getattr(factory, "fixed_settings", {})    # (batching policies)
        if fixed:
            first += " Runs with " + ", ".join(f"{k} = {toml_text(v)}"
                                               for k, (v, _) in fixed.items()) + "."
        return f"({args})" + (f" {first}" if first else "")

    def check(self, name: str, params: Mapping[str, Any] | None = None):
        """Check ``params`` against the signature of ``name``'s factory; return the factory.

        Raises UnknownNameError for an unknown name, InputError with ``field`` = the key for
        an unknown key (listing the known ones), a missing required parameter, or a value of
        the wrong type.
        """
        factory = self.lookup(name)
        params = dict(params or {})
        known = self.parameters(name)
        if known is None:
            return factory
        what = f"{self.kind} policy {name!r}"
        for key in params:
            if key not in known:
                listed = ", ".join(sorted(known)) or "(none: it takes no parameters)"
                raise InputError(f"{what} has no parameter {key!r}{did_you_mean(key, known)}; "
                                 f"known: {listed}", field=key)
        for key, p in known.items():
            if p.default is p.empty and key not in params:
                raise InputError(f"{what} needs parameter {key!r}", field=key)
        for key, value in params.items():
            problem = _type_problem(known[key].annotation, value)
            if problem:
                raise InputError(f"{what}: {problem}", field=key)
        return factory

    def create(self, name: str, **params):
        """A new ``name`` policy built with ``params`` (checked as :meth:`check` does); a
        ValueError of the factory becomes an InputError naming the policy."""
        factory = self.check(name, params)
        try:
            return factory(**params)
        except InputError:
            raise
        except (TypeError, ValueError) as err:
            raise InputError(f"{self.kind} policy {name!r}: {err}") from None


def _type_problem(annotation: Any, value: Any) -> str:
    """Why ``value`` does not fit a parameter annotated ``annotation`` ('' if it does, or if
    the annotation is not one this checker reads)."""
    if isinstance(value, float) and math.isnan(value):
        return "expected a number, got NaN"
    if annotation is inspect.Parameter.empty:
        return ""
    text = annotation if isinstance(annotation, str) else getattr(
        annotation, "__name__", str(annotation))
    optional = re.fullmatch(r"Optional\[(.+)\]", text)
    if optional:
        text = optional.group(1) + " | None"
    alternatives = [a.strip() for a in text.split("|")]
    if any(_fits(a, value) is None for a in alternatives):
        return ""           # an annotation this checker does not read: accept
    if any(_fits(a, value) for a in alternatives):
        return ""
    return f"expected {' or '.join(alternatives)}, got {value!r}"


def _fits(annotation: str, value: Any) -> bool | None:
    """Whether ``value`` fits one alternative of an annotation (None: not understood)."""
    if annotation == "None":
        return value is None
    if annotation in _SCALARS:
        if isinstance(value, bool):
            return annotation == "bool"
        return isinstance(value, _SCALARS[annotation])
    m = _SEQUENCE.match(annotation)
    if m:
        if not isinstance(value, (list, tuple)):
            return False
        inner = [_fits(m.group(1).strip(), v) for v in value]
        return None if None in inner else all(inner)
    return None


ROUTERS = Registry("router")            # request -> instance
BATCHERS = Registry("batching")         # an instance's next iteration
PARTITIONS = Registry("partition")      # a model cut over a GPU group: TP shares or stages
CONTROLLERS = Registry("controller")    # pool sizing over time (e.g. M/M/c socket count)
OFFLOADS = Registry("offload")          # does a prefilled request change pool?
NUMA_PLACEMENTS = Registry("numa placement")   # CPU-socket weights and KV across sockets
POOL_ROUTERS = Registry("pool routing")  # a request's prompt and token servers (phase pools)
REBALANCERS = Registry("rebalancer")     # which servers move between phase pools, and when
# (a decode pool's choice of instance for a handed-off request is a router too: ROUTERS)
