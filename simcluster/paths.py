"""Where the bundled data lives (hardware specs, traces, experiments), the user's cache, and
output paths checked before the work that writes them (:func:`out_dir`, :func:`out_file`:
a finished run or sweep is never lost to a path that cannot be written).

In a source checkout (``pip install -e .``) the folders sit beside the package, at the
repository's top level (``hwspecs/``, ``traces/``, ``experiments/``). An installed wheel carries
copies inside the package, under ``simcluster/_data/``. :func:`data_dir` returns whichever
exists, the checkout first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from simcluster.errors import InputError

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


def _writable_folder(path: Path, flag: str) -> None:
    """The nearest existing folder at or above ``path`` is a writable folder."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{str(probe)!r} is a file, so {str(path)!r} cannot be made",
                         field=flag)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {str(probe)!r} (permission denied)",
                         field=flag)


def out_dir(path: str | None, flag: str = "--out") -> Path | None:
    """An output folder: an existing folder, or one that can be made (checked, not made)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{str(p)!r} is a file; expected a folder (it would hold "
                         "several output files)", field=flag)
    _writable_folder(p, flag)
    return p


def out_file(path: str | None, flag: str = "--out") -> Path | None:
    """An output file: not a folder, in a folder that exists and can be written."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"{str(p)!r} is a folder; expected a file name", field=flag)
    if not p.parent.is_dir():
        _writable_folder(p.parent, flag)
        raise InputError(f"the folder {str(p.parent)!r} does not exist", field=flag)
    _writable_folder(p.parent, flag)
    return p
