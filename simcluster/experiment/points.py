"""A sweep point: an experiment TOML's data plus overrides -> resolved config -> hash -> row.

The key is a SHA-256 of the resolved configuration — the file's data with the overrides
applied, as canonical JSON — with the folder relative paths in it are read from,
simcluster's version, and the folder an override's relative paths are read from when its
value holds text (it may name a file). Two points that resolve to the same configuration have
the same key (``instances.0.count=4`` on a file that already says 4 is the file itself), so a
sweep's re-run finds them on disk. What the key does not see: the contents of files the
experiment names (a trace CSV, a plugin module, hardware specs). Change one of those and run
with ``fresh=True`` (``--fresh``), or write to a new folder.

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
        body = json.dumps({"experiment": self.resolved, "base": str(Path(self.path).parent),
                           "version": _version(), **({"origins": origins} if origins else {})},
                          sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:20]

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
