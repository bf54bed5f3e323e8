"""Bundled traces parsed once per user: the arrays of a parsed trace kept in the cache folder.

Parsing a trace file takes pandas (a quarter of a second to import) and its CSV reader; a
bundled trace never changes, so :func:`~.loaders.load_trace` keeps the parsed arrays of one it
loads by name in ``<cache>/traces/<hash>.npz`` (:func:`~simcluster.paths.cache_dir`) and reads
them from there next time. The hash covers the file's bytes, the format and sort arguments
and the source of the parsing code, so an edited file or parser gives another entry; an entry
that cannot be read (torn, corrupt, another layout) is parsed again and rewritten. Traces
whose extras are not plain numeric columns are not kept.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from simcluster.paths import cache_dir

FORMAT = "simcluster-trace-cache-1"
_PARSERS = ("simcluster.workload.loaders", "simcluster.workload._table",
            "simcluster.workload._columns", "simcluster.workload.trace",
            "simcluster.workload.hashes")


def _key(path: Path, format: str | None, sort: bool) -> str:
    h = hashlib.sha256(f"{FORMAT}\0{format}\0{sort}\0".encode())
    h.update(path.read_bytes())
    for name in _PARSERS:
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "__file__", None):
            h.update(b"\0")
            h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:32]


def load_cached(path: Path, name: str, format: str | None, sort: bool,
                parse: Callable[[], object]):
    """The trace ``parse()`` gives for ``path``, from the cache when it holds it."""
    from simcluster.workload.trace import Trace
    root = cache_dir()
    if root is None:
        return parse()
    try:
        entry = root / "traces" / f"{_key(path, format, sort)}.npz"
    except OSError:
        return parse()
    try:
        with np.load(entry, allow_pickle=False) as z:
            extras = {k[6:]: z[k] for k in z.files if k.startswith("extra:")}
            block = int(z["hash_block_tokens"][0])
            return Trace(z["arrival_s"], z["prompt_tokens"], z["output_tokens"], name=name,
                         extras=extras, hash_block_tokens=block if block > 0 else None)
    except Exception:           # absent, torn or foreign: parse it (and keep it below)
        pass
    trace = parse()
    if all(v.dtype.kind in "biuf" for v in trace.extras.values()):
        arrays = {"arrival_s": trace.arrival_s, "prompt_tokens": trace.prompt_tokens,
                  "output_tokens": trace.output_tokens,
                  "hash_block_tokens": np.array([trace.hash_block_tokens or 0]),
                  **{f"extra:{k}": v for k, v in trace.extras.items()}}
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_name(f"{entry.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, entry)
        except OSError:
            pass                # a read-only or full disk: the cache is only an optimisation
    return trace
