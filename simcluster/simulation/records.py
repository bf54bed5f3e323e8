"""What a simulation records as it runs, in columns: requests' fates and instances' timelines.

A request is a Python object only while it is in flight: when it finishes or is rejected the
cluster hands it to the :class:`RequestLog`, which keeps its times as one packed row
(compacted into column chunks every :data:`~simcluster.serving.rowlog.CHUNK_ROWS` rows) and
lets the object go. Timelines are :class:`~simcluster.serving.rowlog.RowLog` s, one per
instance, in the same form. Memory then grows with the result rows only: 80 bytes per request
row and 72 per timeline row.

With ``stream_to`` (a folder), compacted chunks are written to ``requests.parquet`` and
``timeline.parquet`` there instead of being kept (pyarrow), so a run of tens of millions of
requests holds only the rows of the last chunk; requests are written in the order they end,
timeline rows instance by instance in chunks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simcluster.lazy import lazy_module
from simcluster.serving.rowlog import CHUNK_ROWS, TRIM_CHUNKS, RowLog, release_memory
from simcluster.simulation.results import (Results, request_frame_from_columns,
                                           timeline_frame_from_columns, with_trace_columns)

pd = lazy_module("pandas")     # (imported when a frame is first built)

#: A request's recorded fields, in row order, with their column dtypes.
REQUEST_FIELDS = (("request_id", np.int64), ("arrival_s", np.float64), ("instance", np.int32),
                  ("prefill_start_s", np.float64), ("first_token_s", np.float64),
                  ("finish_s", np.float64), ("preemptions", np.int32),
                  ("cached_tokens", np.int64), ("handoff_start_s", np.float64),
                  ("handoff_end_s", np.float64), ("handoff_bytes", np.float64))
#: What a request that has not ended shows.
_FILL = {"instance": -1, "preemptions": 0, "cached_tokens": 0, "handoff_bytes": 0}
#: Timeline columns (one row per iteration or decode run) and their dtypes.
TIMELINE_FIELDS = (("instance", np.int32), ("start_s", np.float64), ("end_s", np.float64),
                   ("iterations", np.int32), ("prefill_seqs", np.int32),
                   ("prefill_tokens", np.int32), ("prefill_done", np.int32),
                   ("decode_seqs", np.int32), ("kv_blocks_used", np.int32),
                   ("waiting", np.int32), ("prefill_context", np.int64),
                   ("prefill_pairs", np.float64), ("decode_context", np.int64))


class ParquetSink:
    """Appends column chunks to one Parquet file (a row group per chunk)."""

    def __init__(self, path: Path, fields):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:    # pragma: no cover - pyarrow is an optional extra
            raise ImportError("streaming results to Parquet needs pyarrow "
                              "(pip install 'simcluster[parquet]')") from None
        self.pa, self.path = pa, Path(path)
        self.schema = pa.schema([(name, pa.from_numpy_dtype(dt)) for name, dt in fields]
                                + ([("reason", pa.string())] if fields is REQUEST_FIELDS
                                   else []))
        self.writer = pq.ParquetWriter(self.path, self.schema)
        self.rows = 0

    def __call__(self, cols: dict):
        table = self.pa.table({f.name: cols[f.name] for f in self.schema}, schema=self.schema)
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self):
        self.writer.close()


class RequestLog:
    """The rows of requests that ended (see module docstring)."""

    def __init__(self, n_requests: int, sink=None, chunk_rows: int = CHUNK_ROWS):
        self.n = n_requests
        self.log = RowLog([f for f, _ in REQUEST_FIELDS], [d for _, d in REQUEST_FIELDS],
                          sink=self._chunk, chunk_rows=chunk_rows)
        self.rows = self.log.rows          # (rows packed here; compacted in chunks)
        self._pack = self.log.pack
        self.sink = sink
        self.reasons: dict[int, str] = {}     # request id -> why it was rejected
        self.chunks: list[dict] = []
        self.ended = 0
        self.bytes_float = False

    def record(self, req):
        """``req`` finished or was rejected: keep its row."""
        nbytes = req.handoff_bytes
        self.rows += self._pack(req.id, req.arrival_s, req.instance, req.prefill_start_s,
                                req.first_token_s, req.finish_s, req.preemptions,
                                req.cached_tokens, req.handoff_start_s, req.handoff_end_s,
                                nbytes)
        if not self.bytes_float and isinstance(nbytes, (float, np.floating)):
            self.bytes_float = True        # (the frame's column is then float, as pandas infers)
        if req.reason:
            self.reasons[req.id] = req.reason
        self.ended += 1
        if len(self.rows) >= self.log.cap:
            self.log.compact()

    @property
    def chunk_rows(self) -> int:
        """Rows held packed before they are compacted into a column chunk (or streamed)."""
        return self.log.chunk_rows

    @chunk_rows.setter
    def chunk_rows(self, rows: int):
        self.log.chunk_rows = rows

    def _chunk(self, cols: dict):
        if self.sink is None:
            self.chunks.append(cols)
            return
        ids = cols["request_id"].tolist()
        reasons = self.reasons
        cols["reason"] = np.array([reasons.pop(i, "") for i in ids], dtype=object)
        self.sink(cols)

    def close(self):
        """Flush the last rows (to the sink when streaming)."""
        self.log.compact()
        if self.sink is not None:
            self.sink.close()

    def columns(self, release: bool = False) -> dict:
        """Every recorded row by request id (in memory): one array per field, plus
        ``reason``; requests that have not ended have NaN times and instance -1.
        ``release`` drops the rows once copied out."""
        self.log.compact()
        chunks = self.chunks
        if release:                        # (each chunk dropped once copied)
            self.chunks = []
            chunks.reverse()
        out = {}
        for name, dt in REQUEST_FIELDS:
            out[name] = (np.arange(self.n, dtype=np.int64) if name == "request_id"
                         else np.full(self.n, _FILL.get(name, np.nan), dtype=dt))
        ended = np.zeros(self.n, dtype=bool)
        for i in range(len(chunks)):
            c = chunks.pop() if release else chunks[i]
            ids = c["request_id"]
            for name, _ in REQUEST_FIELDS:
                if name != "request_id":
                    out[name][ids] = c[name]
            ended[ids] = True
            del c
            if release and i % TRIM_CHUNKS == TRIM_CHUNKS - 1:
                release_memory()
        if release:
            release_memory()
        if not self.bytes_float:
            out["handoff_bytes"] = out["handoff_bytes"].astype(np.int64)
        reason = np.full(self.n, "", dtype=object)
        for rid, why in self.reasons.items():
            reason[rid] = why
        out["reason"] = reason
        out["ended"] = ended
        return out


class StreamedResults(Results):
    """Results of a run streamed to Parquet (``folder``): the request and timeline frames are
    read from there when first used; otherwise a :class:`~.results.Results`."""

    def __init__(self, folder, trace, devices, instances, *, work=None, bytes_float=True,
                 **fields):
        self.folder, self.instances = Path(folder), instances
        for name, value in Results(None, None, instances, **fields).__dict__.items():
            if name not in ("requests", "timeline", "instances"):
                setattr(self, name, value)
        self._trace, self._devices, self._frames = trace, devices, {}
        self._bytes_float, self._work = bytes_float, work

    @property
    def requests(self) -> pd.DataFrame:
        if "requests" not in self._frames:
            self._frames["requests"] = read_requests(self.folder, self._trace, self._devices,
                                                     self._bytes_float)
        return self._frames["requests"]

    @property
    def timeline(self) -> pd.DataFrame:
        if "timeline" not in self._frames:
            tl = self._frames["timeline"] = read_timeline(self.folder)
            if self._work is not None:
                tl["flops"], tl["bytes"] = self._work(tl)
        return self._frames["timeline"]


def read_requests(folder, trace, devices, bytes_float: bool = True):
    """The request frame of a streamed run (rows by request id; ``handoff_bytes`` as integers
    unless ``bytes_float``, as the in-memory frame has them)."""
    import pyarrow.parquet as pq
    table = pq.read_table(Path(folder) / "requests.parquet")
    n = len(trace)
    ids = table.column("request_id").to_numpy()
    cols = {"request_id": np.arange(n, dtype=np.int64)}
    for name, dt in REQUEST_FIELDS[1:]:
        col = np.full(n, _FILL.get(name, np.nan), dtype=dt)
        col[ids] = table.column(name).to_numpy()
        cols[name] = col
    reason = np.full(n, "", dtype=object)
    reason[ids] = table.column("reason").to_numpy(zero_copy_only=False)
    cols["reason"] = reason
    if not bytes_float:
        cols["handoff_bytes"] = cols["handoff_bytes"].astype(np.int64)
    return with_trace_columns(request_frame_from_columns(
        cols, trace.prompt_tokens, trace.output_tokens, devices), trace)


def read_timeline(folder):
    """The timeline frame of a streamed run (rows instance by instance, in order)."""
    import pyarrow.parquet as pq
    table = pq.read_table(Path(folder) / "timeline.parquet")
    cols = {name: table.column(name).to_numpy() for name, _ in TIMELINE_FIELDS}
    order = np.argsort(cols["instance"], kind="stable")
    return timeline_frame_from_columns({k: v[order] for k, v in cols.items()})
