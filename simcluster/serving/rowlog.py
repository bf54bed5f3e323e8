"""Append-only rows kept in columns: a replica's timeline without a Python tuple per row.

A :class:`RowLog` reads as a sequence of row tuples (``len``, iteration, indexing and slicing
over every row appended, numbered from 0). Its owner packs the newest rows into a byte buffer
(``rows``, a ``bytearray``: the hot path appends ``log.pack(*values)`` there, the row laid out
as one numpy record of the columns' ``dtypes``) and *compacts* at safe points: the buffer
becomes a numpy record chunk (one copy, no per-value conversion), or is handed to a ``sink``
(e.g. a Parquet writer) and dropped. Memory then grows by one packed row per row (a few dozen
bytes), or not at all when streaming: rows handed to the sink keep their numbers but are no
longer held (indexing one raises IndexError; iteration and slices skip them). At the end of a
run the rows may *move* into the columns of a results frame (:meth:`move_into`): the log then
reads them from there, holding no copy of its own.

Rows are packed as they come rather than kept as tuples until a compaction: a tuple per row
is some 300 bytes of scattered objects that the garbage collector counts and traverses, and
converting a chunk of them costs about 0.6 us a row. With 64 replicas, 64 lists of up to
:data:`CHUNK_ROWS` tuples each were alive at once, and collecting and converting them cost
about 5 us per simulated request (``benchmarks/route_cost.py``, perf samples). A value that
does not fit its column (a float in an integer column, an integer out of its range) is refused
where it is packed (``struct.error``, at the append that brings it); numpy's conversion of
tuples used to truncate such a float silently at the compaction.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

#: Rows an owner lets a RowLog hold packed before compacting it.
CHUNK_ROWS = 1 << 13
#: struct codes (standard sizes, native byte order, no padding) of the column dtypes.
_CODES = {("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q", ("u", 1): "B",
          ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q", ("f", 4): "f", ("f", 8): "d",
          ("b", 1): "?"}
#: Record chunks freed between two hand-backs of freed memory (see :func:`release_memory`).
TRIM_CHUNKS = 32


def _malloc_trim():
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.malloc_trim
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
        return fn
    except (OSError, AttributeError):      # not glibc: the allocator keeps what it keeps
        return None


_TRIM = [None, False]
_FREED = [0]           # record chunks freed since the last release_memory()


def release_memory():
    """Hand memory freed in the middle of the C heap back to the system (glibc's
    ``malloc_trim``; nothing elsewhere). Record chunks are a few hundred kB each, below the
    size glibc maps on its own after the first few are freed, so without this the chunks
    freed while a run's rows move into its frames would still count in the resident size
    (under the frames they moved into)."""
    _FREED[0] = 0
    if not _TRIM[1]:
        _TRIM[0], _TRIM[1] = _malloc_trim(), True
    if _TRIM[0] is not None:
        _TRIM[0](0)


def chunk_freed():
    """Count a record chunk freed; :func:`release_memory` after every :data:`TRIM_CHUNKS`
    of them, whichever logs they came from (``malloc_trim`` walks the whole heap: once per
    replica's log, 1,024 replicas' timelines cost 0.34 s of trims in a 40,960-request run)."""
    _FREED[0] += 1
    if _FREED[0] >= TRIM_CHUNKS:
        release_memory()


class RowLog(Sequence):
    """Rows of fixed columns (see module docstring)."""

    def __init__(self, columns, dtypes, sink=None, chunk_rows: int = CHUNK_ROWS):
        self.names = tuple(columns)
        dtypes = [np.dtype(d) for d in dtypes]
        self.record = np.dtype(list(zip(self.names, dtypes)))      # (packed: no padding)
        try:
            layout = "=" + "".join(_CODES[d.kind, d.itemsize] for d in dtypes)
        except KeyError as e:
            raise TypeError(f"RowLog: no packed layout for column dtype {e.args[0]}") from None
        self.row = struct.Struct(layout)
        assert self.row.size == self.record.itemsize
        self.size = self.row.size          # bytes a row
        self.pack, self.pack_into = self.row.pack, self.row.pack_into
        self.rows = bytearray()            # the newest rows, packed (never replaced: owners
        #                                    append to it and may repack their open row)
        self.chunks: list[np.ndarray] = []
        self.base = 0                      # rows moved out of ``rows`` so far
        self.streamed = 0                  # of which handed to the sink (not kept)
        self.sink = sink                   # callable(columns dict) taking compacted chunks
        self.chunk_rows = chunk_rows       # (sets ``cap``)
        self.view: list | None = None      # after move_into: the rows' columns, elsewhere

    @property
    def chunk_rows(self) -> int:
        """Rows an owner lets the log hold packed before compacting it (``cap`` bytes: what
        the owner compares ``len(rows)`` with)."""
        return self.cap // self.size

    @chunk_rows.setter
    def chunk_rows(self, rows: int):
        self.cap = rows * self.size

    # -- writing -----------------------------------------------------------------------------
    def append(self, row: tuple):
        self.rows += self.pack(*row)

    def held(self) -> int:
        """Rows in :attr:`rows` (appended since the last compaction)."""
        return len(self.rows) // self.size

    def compact(self):
        """Move every row of :attr:`rows` into a record chunk (or the sink). Only where no row
        is open any more: an owner may still repack its newest row until then."""
        n = self.held()
        if not n:
            return
        chunk = np.frombuffer(self.rows, dtype=self.record).copy()
        del self.rows[:]
        self.base += n
        if self.sink is not None:
            self.streamed += n
            self.sink({name: chunk[name] for name in self.names})
        else:
            self.chunks.append(chunk)

    def move_into(self, out: dict, start: int) -> int:
        """Copy every held row into ``out[name][start:...]`` (one preallocated array per
        column, any dtype the values cast to), freeing each record chunk once copied
        (:func:`chunk_freed`: the caller releases the memory once the last log has moved);
        from then on the log reads its rows from those arrays (views, no copy). Returns the
        rows moved. Moving twice is refused; rows appended afterwards are held as before."""
        if self.view is not None:
            raise RuntimeError("RowLog rows were already moved into a frame")
        self.compact()
        pos = start
        chunks, self.chunks = self.chunks, []
        chunks.reverse()
        while chunks:
            chunk = chunks.pop()
            n = len(chunk)
            for name in self.names:
                out[name][pos:pos + n] = chunk[name]
            pos += n
            del chunk
            chunk_freed()
        self.view = [out[name][start:pos] for name in self.names]
        return pos - start

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.base + self.held()

    def total(self) -> int:
        """Rows ever appended (streamed ones included)."""
        return self.base + self.held()

    def _recent(self, start: int = 0, stop: int | None = None) -> list:
        """Rows ``start:stop`` of :attr:`rows` (counted in it), as tuples."""
        end = None if stop is None else stop * self.size
        return list(self.row.iter_unpack(bytes(self.rows[start * self.size:end])))

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step == 1 and start >= self.base:
                return self._recent(start - self.base, max(start, stop) - self.base)
            return [self[k] for k in range(max(start, self.streamed) if step > 0 else start,
                                           stop, step) if k >= self.streamed]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("RowLog index out of range")
        if i >= self.base:
            return self.row.unpack_from(self.rows, (i - self.base) * self.size)
        if i < self.streamed:
            raise IndexError(f"row {i} was streamed out and is not held")
        i -= self.streamed
        if self.view is not None:
            if i < len(self.view[0]):
                return tuple(col[i].item() for col in self.view)
            i -= len(self.view[0])
        for chunk in self.chunks:
            if i < len(chunk):
                return tuple(chunk[i].tolist())
            i -= len(chunk)
        raise IndexError(i)                # pragma: no cover

    def __iter__(self):
        if self.view is not None:
            yield from zip(*(col.tolist() for col in self.view))
        for chunk in self.chunks:
            yield from chunk.tolist()
        yield from self._recent()

    def since(self, start: int):
        """Rows from index ``start`` on (those held)."""
        if start >= self.base:
            yield from self._recent(start - self.base)
            return
        pos = self.streamed
        if self.view is not None:
            off = max(0, start - pos)
            yield from zip(*(col[off:].tolist() for col in self.view))
            pos += len(self.view[0])
        for chunk in self.chunks:
            if start < pos + len(chunk):
                yield from chunk[max(0, start - pos):].tolist()
            pos += len(chunk)
        yield from self._recent()

    def record_chunks(self) -> list:
        """Every kept row as record arrays (the newest rows copied, not moved)."""
        chunks = list(self.chunks)
        if self.view is not None:
            moved = np.empty(len(self.view[0]), dtype=self.record)
            for name, col in zip(self.names, self.view):
                moved[name] = col
            chunks.insert(0, moved)
        return chunks + [np.frombuffer(self.rows, dtype=self.record).copy()]

    def columns(self) -> dict:
        """Every kept row, as one array per column."""
        chunks = self.record_chunks()
        return {name: np.concatenate([c[name] for c in chunks]) for name in self.names}
