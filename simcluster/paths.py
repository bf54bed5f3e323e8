"""Where the bundled data lives: hardware specs, traces, experiments.

In a source checkout (``pip install -e .``) the folders sit beside the package, at the
repository's top level (``hwspecs/``, ``traces/``, ``experiments/``). An installed wheel carries
copies inside the package, under ``simcluster/_data/``. :func:`data_dir` returns whichever
exists, the checkout first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The bundled folder ``name`` (``hwspecs``, ``traces`` or ``experiments``)."""
    beside = _PACKAGE.parent / name
    if beside.is_dir():
        return beside
    return _PACKAGE / "_data" / name


def cache_dir() -> Path | None:
    """The per-user cache folder of simcluster (calibration slices, parsed bundled traces), or
    None when disabled: ``$SIMCLUSTER_CACHE_DIR`` if set (empty: no disk cache), else
    ``$XDG_CACHE_HOME/simcluster`` or ``~/.cache/simcluster`` (``~/Library/Caches`` on macOS,
    ``%LOCALAPPDATA%`` on Windows) -- never the package folder."""
    env = os.environ.get("SIMCLUSTER_CACHE_DIR")
    if env is not None:
        return Path(env).expanduser() if env.strip() else None
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "simcluster"


def code_digest() -> str:
    """A hash of the simulator's source (every ``.py`` under the package) and of the bundled
    hardware data (``hwspecs``, with any extra folders named by ``SIMCLUSTER_HWSPECS``): what
    a cache of simulated figures must match to be reused. Computed once per process."""
    if _DIGEST:
        return _DIGEST[0]
    import hashlib
    h = hashlib.sha256()
    roots = [_PACKAGE, data_dir("hwspecs")]
    roots += [Path(p) for p in os.environ.get("SIMCLUSTER_HWSPECS", "").split(os.pathsep) if p]
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and (
                    root != _PACKAGE or path.suffix == ".py"):
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
    _DIGEST.append(h.hexdigest()[:16])
    return _DIGEST[0]


_DIGEST: list[str] = []
