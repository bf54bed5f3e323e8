"""A sweep point: an experiment TOML's data plus overrides -> resolved config -> hash -> row.

The key is a SHA-256 of the resolved configuration — the file's data with the overrides
applied, as canonical JSON — with the folder relative paths in it are read from,
simcluster's version, the folder an override's relative paths are read from when its value
holds text (it may name a file), and the contents of the files it names: every text value that
is the path of a file (a trace CSV, a resampled-lengths source, a link spec) and every spec
file under ``SIMCLUSTER_HWSPECS``, each by a SHA-256 of its bytes (hashed once per process per
file version). Two points that resolve to the same configuration over the same files have the
same key (``instances.0.count=4`` on a file that already says 4 is the file itself), so a
sweep's re-run finds them on disk, and an edited trace file runs again. What the key does not
see: a plugin module's code (``plugins = [...]`` names a module, not a file) — change one and
run with ``fresh=True`` (``--fresh``), or write to a new folder.

A relative path in an override is read from the folder where the override was given — the
current folder for ``--set``, ``--vary``, ``--trace`` and the Python API, the sweep file's for
its ``[set]``, ``[grid]`` and ``[[points]]`` — recorded, absolute, per key in ``origins`` when
the point is made, so a worker with another current folder (a Ray worker) reads the same
files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from simcluster.experiment import (experiment_from_data, experiment_path,
                                   read_experiment_data)
from simcluster.experiment.overrides import apply_overrides, as_mapping


def _has_text(value) -> bool:
    """Whether ``value`` (a TOML value) holds a string anywhere."""
    if isinstance(value, str):
        return True
    if isinstance(value, dict):
        return any(_has_text(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_text(v) for v in value)
    return False


_DIGESTS: dict[tuple, str] = {}


def _file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (16 hex digits), remembered per (path, size, mtime)."""
    st = path.stat()
    k = (str(path), st.st_size, st.st_mtime_ns)
    if k not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[k] = h.hexdigest()[:16]
    return _DIGESTS[k]


def _named_files(node, dotted: str, folder_of, out: dict) -> dict:
    """{absolute path: digest} of every text value under ``node`` naming a file, relative
    paths read from ``folder_of(dotted key)``."""
    if isinstance(node, dict):
        for k, v in node.items():
            _named_files(v, f"{dotted}.{k}" if dotted else str(k), folder_of, out)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _named_files(v, f"{dotted}.{i}", folder_of, out)
    elif isinstance(node, str) and node and "\n" not in node and len(node) < 4096:
        p = Path(node).expanduser()
        p = p if p.is_absolute() else Path(folder_of(dotted)) / p
        try:
            if p.is_file():
                out[str(p.resolve())] = _file_digest(p)
        except OSError:                  # (a name no file system takes: not a file)
            pass
    return out


def _hwspec_files() -> dict:
    """{path: digest} of the spec files under ``SIMCLUSTER_HWSPECS``'s folders."""
    import os
    out = {}
    for root in os.environ.get("SIMCLUSTER_HWSPECS", "").split(os.pathsep):
        if root and Path(root).is_dir():
            for f in sorted(Path(root).rglob("*")):
                if f.is_file():
                    out[str(f.resolve())] = _file_digest(f)
    return out


def _version() -> str:
    from simcluster import __version__
    return __version__


@dataclass(frozen=True, eq=False)
class ExperimentPoint:
    """One simulation: the experiment file at ``path`` (its ``data``) with ``overrides``
    (``origins``: override key -> the absolute folder relative paths in its value are read
    from; see the module docstring)."""

    path: str
    data: dict
    overrides: dict = field(default_factory=dict)
    origins: dict = field(default_factory=dict)

    @classmethod
    def from_file(cls, path=None, overrides=None, folder=None) -> "ExperimentPoint":
        """The experiment at ``path`` with ``overrides``, whose relative paths are read from
        ``folder`` (default: the current folder)."""
        p = experiment_path(path)
        return cls(str(p.resolve()), read_experiment_data(p)).with_overrides(overrides, folder)

    def with_overrides(self, more: Mapping[str, Any] | None,
                       folder=None) -> "ExperimentPoint":
        """This point with ``more`` overrides (they win over its own), whose relative paths
        are read from ``folder`` (default: the current folder)."""
        more = as_mapping(more)
        where = str(Path(folder if folder is not None else Path.cwd()).resolve())
        return ExperimentPoint(self.path, self.data, {**self.overrides, **more},
                               {**self.origins, **{k: where for k in more}})

    @property
    def folder(self) -> Path:
        """The folder relative paths in the experiment file are read from: the file's."""
        return Path(self.path).parent

    @cached_property
    def resolved(self) -> dict:
        """The experiment's data with the overrides applied (unvalidated)."""
        return apply_overrides(self.data, self.overrides, file=self.path)

    @cached_property
    def key(self) -> str:
        # (an override's folder only where its value holds text: a number reads no file, so
        # a re-run from another folder still finds the point)
        origins = {k: v for k, v in sorted(self.origins.items())
                   if k in self.overrides and _has_text(self.overrides[k])}
        files = {**_named_files(self.resolved, "", self._folder_of, {}), **_hwspec_files()}
        body = json.dumps({"experiment": self.resolved, "base": str(Path(self.path).parent),
                           "version": _version(), **({"origins": origins} if origins else {}),
                           **({"files": files} if files else {})},
                          sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:20]

    def _folder_of(self, dotted: str) -> str:
        """The folder a relative path at key ``dotted`` is read from: the override's that
        set it (the longest override key it is under), else the experiment file's."""
        over = [k for k in self.origins if k in self.overrides
                and (dotted == k or dotted.startswith(k + "."))]
        return self.origins[max(over, key=len)] if over else str(Path(self.path).parent)

    def get(self, dotted: str, default=None):
        """A value of the resolved data by key path (``instances.0.device``)."""
        node = self.resolved
        for part in dotted.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return default
        return node

    def experiment(self):
        """The validated :class:`~simcluster.experiment.Experiment`."""
        return experiment_from_data(self.data, self.path, self.overrides, self.origins)

    def prepare(self):
        """Load what runs share — the calibration (fitted once per process), the trace — by
        building this point's experiment: forked workers then start with them, and a bad
        configuration fails here, once, before any worker starts."""
        self.experiment()

    def evaluate(self, keep: bool = False):
        """Run it: (its summary, with ``failure`` saying why if it served nothing, else '',
        and ``rejected_because`` why it rejected what it did (the commonest kind, in one
        line), else ''; the results when ``keep``)."""
        results = self.experiment().run()
        row = {**results.summary(), "failure": results.failure(),
               "rejected_because": results.rejected_because()}
        return row, (results if keep else None)

    def __getstate__(self):          # cached properties are recomputed where it runs
        return {"path": self.path, "data": self.data, "overrides": self.overrides,
                "origins": self.origins}

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)
