"""An on-disk cache of calibration slices, keyed by the calibration's content hash.

A measured calibration answers the cost model through 1-D *slices* of its fitted curves (one
per operator, device and fixed non-length features; :class:`~.fitted.MeasuredCalibration`).
Fitting the curves and evaluating a slice takes scipy's interpolators (an import of half a
second, a fit of another); a simulation needs a few dozen slices. They are computed once and
kept here, so that a later process starts with no fit and no scipy import at all.

One file per calibration content: ``<cache>/calibration/slices-<hash>.bin``. The hash
(:func:`content_hash`) covers every measured table's bytes, the device and link specs the fit
reads, the source of the code that fits and evaluates the curves, and the numpy and scipy
versions — any change gives another file, so a stale entry is never read. The file is a log
of records appended as new slices are computed (one ``os.write`` each, so two processes may
append at once); each record carries a CRC-32, and reading stops at the first bad one, so a
torn or corrupt file costs only a recomputation (:class:`SliceStore` then rewrites it whole).

Where: ``$SIMCLUSTER_CACHE_DIR`` if set (empty: no disk cache), else the per-user cache
folder (``$XDG_CACHE_HOME/simcluster`` or ``~/.cache/simcluster``; ``~/Library/Caches`` on
macOS, ``%LOCALAPPDATA%`` on Windows) — never the package folder. A folder that cannot be
written only means nothing is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from simcluster.paths import cache_dir

_MAGIC = b"SCS1"
_HEAD = struct.Struct("<4sIII")          # magic, key bytes, float64 count, crc32
FORMAT = "simcluster-slices-1"


def content_hash(folders, parts) -> str:
    """SHA-256 over every ``*.csv`` of each calibrated device folder (name, file name, bytes)
    and the further ``parts`` (strings: spec values, code, versions)."""
    h = hashlib.sha256(FORMAT.encode())
    for name, folder in sorted(folders.items()):
        for p in sorted(Path(folder).glob("*.csv")):
            h.update(f"\0{name}/{p.name}\0".encode())
            h.update(p.read_bytes())
    for part in parts:
        h.update(b"\0")
        h.update(str(part).encode())
    return h.hexdigest()


def _record(key, data) -> bytes:
    kb = json.dumps(key, separators=(",", ":")).encode()
    db = np.ascontiguousarray(data, dtype="<f8").tobytes()
    crc = zlib.crc32(db, zlib.crc32(kb))
    return _HEAD.pack(_MAGIC, len(kb), len(db) // 8, crc) + kb + db


def _freeze(key):
    """A JSON key (lists) as a hashable tuple."""
    return tuple(_freeze(k) for k in key) if isinstance(key, list) else key


def _read(blob: bytes):
    """(records {key: array}, clean) of a cache file's bytes; stops at the first bad record."""
    out, pos, n = {}, 0, len(blob)
    while pos < n:
        if n - pos < _HEAD.size:
            return out, False
        magic, klen, count, crc = _HEAD.unpack_from(blob, pos)
        end = pos + _HEAD.size + klen + 8 * count
        if magic != _MAGIC or end > n:
            return out, False
        kb = blob[pos + _HEAD.size:pos + _HEAD.size + klen]
        db = blob[pos + _HEAD.size + klen:end]
        if zlib.crc32(db, zlib.crc32(kb)) != crc:
            return out, False
        try:
            key = _freeze(json.loads(kb))
        except ValueError:
            return out, False
        out[key] = np.frombuffer(db, dtype="<f8").astype(float)
        pos = end
    return out, True


class SliceStore:
    """The records of one calibration's cache file: ``get(key)`` and ``put(key, array)``.

    Keys are JSON-able lists (stored as tuples). ``path`` None keeps everything in memory.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.records: dict = {}
        self._rewrite = False
        if path is not None:
            try:
                blob = path.read_bytes()
            except OSError:
                blob = b""
            self.records, clean = _read(blob)
            self._rewrite = not clean

    @classmethod
    def for_hash(cls, digest: str) -> "SliceStore":
        root = cache_dir()
        return cls(None if root is None else root / "calibration" / f"slices-{digest[:24]}.bin")

    def get(self, key):
        return self.records.get(_freeze(key))

    def put(self, key, data):
        """Keep ``data`` under ``key``, and append it to the file (best effort)."""
        data = np.asarray(data, dtype=float)
        self.records[_freeze(key)] = data
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._rewrite:
                tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(b"".join(_record(list(k) if isinstance(k, tuple) else k, v)
                                         for k, v in self.records.items()))
                os.replace(tmp, self.path)
                self._rewrite = False
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, _record(key, data))
            finally:
                os.close(fd)
        except OSError:
            pass            # a read-only or full disk: the cache is only an optimisation
