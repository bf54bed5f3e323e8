"""Where the bundled data lives: hardware specs, traces, experiments.

In a source checkout (``pip install -e .``) the folders sit beside the package, at the
repository's top level (``hwspecs/``, ``traces/``, ``experiments/``). An installed wheel carries
copies inside the package, under ``simcluster/_data/``. :func:`data_dir` returns whichever
exists, the checkout first.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The bundled folder ``name`` (``hwspecs``, ``traces`` or ``experiments``)."""
    beside = _PACKAGE.parent / name
    if beside.is_dir():
        return beside
    return _PACKAGE / "_data" / name
