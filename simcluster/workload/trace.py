"""The request trace: when each request arrives and how many tokens it reads and writes.

A :class:`Trace` is the workload a simulation replays: one entry per request, sorted by
arrival time. It is immutable (its arrays are read-only) and validated on construction, so
every other module can rely on its invariants without checking them again.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from simcluster.lazy import lazy_module
from simcluster.errors import InputError, value_text
from simcluster.workload._columns import _MAX_EXACT_INT, first_decrease
from simcluster.workload._table import frame_arrays
from simcluster.workload.hashes import (BLOCK_COLUMN, HASH_COLUMN, block_tokens_column,
                                        encode_csv, normalise_hash_ids)

pd = lazy_module("pandas")     # (imported when a frame is first built)

#: Columns of the canonical table form of a trace (``to_frame``, ``save``), in order.
CANONICAL_COLUMNS = ("request_id", "arrival_s", "prompt_tokens", "output_tokens")

PARQUET_HINT = "Parquet support needs pyarrow: pip install simcluster[parquet]"


@dataclass(frozen=True, eq=False)
class Trace:
    """A request trace: arrival times and token counts, one entry per request, sorted by arrival.

    - ``arrival_s``: float64 seconds, non-decreasing and >= 0; the first request need not
      arrive at 0 (a window cut from a longer trace keeps its offset).
    - ``prompt_tokens``: int64 >= 1, tokens the request brings (prefill work).
    - ``output_tokens``: int64 >= 1, tokens it generates, the first one included.
    - ``name``: a label for plots and reports.
    - ``extras``: optional per-request columns carried along from the source file, each a
      1-D array with one entry per request (e.g. Mooncake's ``hash_ids``, the prefix-block
      hashes of each prompt). Transforms select and reorder them with the requests.
    - ``hash_block_tokens``: the block size of the ``hash_ids`` extra (one id per that many
      prompt tokens; Mooncake: 512) (:mod:`.hashes`). The simulator's prefix caches key KV
      blocks by these ids; ``hash_ids`` without a block size stay an opaque extra.

    The arrays are copied and made read-only. Bad values raise
    :class:`~simcluster.errors.InputError` naming the field and the request's position.
    The position of a request is its id (``to_frame()['request_id']``).
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    name: str = ""
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)
    hash_block_tokens: int | None = None

    def __post_init__(self) -> None:
        arrival = _arrival_array(self.arrival_s)
        prompt = _token_array(self.prompt_tokens, "prompt_tokens")
        output = _token_array(self.output_tokens, "output_tokens")
        n = len(arrival)
        for name, arr in (("prompt_tokens", prompt), ("output_tokens", output)):
            if len(arr) != n:
                raise InputError(f"has {len(arr)} entries but arrival_s has {n}; "
                                 "expected one entry per request", field=name)
        if not isinstance(self.extras, Mapping):
            raise InputError(f"expected a mapping of column name to per-request array, got "
                             f"{type(self.extras).__name__}", field="extras")
        extras = {str(k): _extra_array(v, n, str(k)) for k, v in self.extras.items()}
        clash = set(extras) & set(CANONICAL_COLUMNS)
        if clash:
            raise InputError(f"extra column names {sorted(clash)} clash with the canonical "
                             f"columns {list(CANONICAL_COLUMNS)}", field="extras")
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "output_tokens", output)
        object.__setattr__(self, "name", str(self.name))
        self._block_hashes(extras, prompt)
        object.__setattr__(self, "extras", MappingProxyType(extras))

    def _block_hashes(self, extras: dict, prompt: np.ndarray) -> None:
        """Move a ``hash_block_tokens`` column into the attribute; check ``hash_ids``."""
        bt = self.hash_block_tokens
        if BLOCK_COLUMN in extras:
            col = block_tokens_column(extras.pop(BLOCK_COLUMN)) if len(prompt) else bt
            if bt is not None and col != bt:
                raise InputError(f"the {BLOCK_COLUMN} column says {col}, the argument {bt}",
                                 field=BLOCK_COLUMN)
            bt = col
        if HASH_COLUMN in extras and bt is not None:   # (without a block size: opaque)
            arr = normalise_hash_ids(extras[HASH_COLUMN], prompt, bt)
            arr.flags.writeable = False
            extras[HASH_COLUMN] = arr
        elif bt is not None and (isinstance(bt, bool) or not isinstance(bt, int) or bt < 1):
            raise InputError(f"expected a whole number of tokens >= 1, got {bt!r}",
                             field=BLOCK_COLUMN)
        object.__setattr__(self, "hash_block_tokens", bt)

    @property
    def has_block_hashes(self) -> bool:
        """Whether the requests carry prefix-block hashes (``hash_ids`` with a block size)."""
        return HASH_COLUMN in self.extras and self.hash_block_tokens is not None

    def scalar_extras(self) -> dict[str, np.ndarray]:
        """The extra per-request columns whose entries are single values (a source file's
        own ids as ``source_request_id``, a tenant, a priority): what a run's request frame
        carries beside each request. ``hash_ids`` and other list-valued extras are left out."""
        return {k: v for k, v in self.extras.items()
                if k != HASH_COLUMN and _is_scalar_column(v)}

    def __len__(self) -> int:
        return len(self.arrival_s)

    def __repr__(self) -> str:
        return (f"Trace(name={self.name!r}, requests={len(self)}, span_s={self.span_s:.6g}, "
                f"rate_per_s={self.rate_per_s:.6g}"
                + (f", extras={list(self.extras)}" if self.extras else "") + ")")

    @property
    def span_s(self) -> float:
        """Seconds from the first arrival to the last (0 for fewer than two requests)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    @property
    def rate_per_s(self) -> float:
        """Mean arrival rate: requests / span_s.

        NaN with fewer than two requests; infinite when all requests arrive at once.
        """
        if len(self) < 2:
            return math.nan
        span = self.span_s
        return len(self) / span if span > 0 else math.inf

    def to_frame(self, *, extras: bool = False) -> pd.DataFrame:
        """One row per request: request_id (0-based position), arrival_s, prompt_tokens,
        output_tokens; with ``extras=True`` the extra columns follow."""
        data: dict[str, np.ndarray] = {
            "request_id": np.arange(len(self), dtype=np.int64),
            "arrival_s": self.arrival_s.copy(),
            "prompt_tokens": self.prompt_tokens.copy(),
            "output_tokens": self.output_tokens.copy(),
        }
        if extras:
            data.update({k: v.copy() for k, v in self.extras.items()})
            if self.has_block_hashes:
                data[BLOCK_COLUMN] = np.full(len(self), self.hash_block_tokens, dtype=np.int64)
        return pd.DataFrame(data)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, name: str = "", *,
                   source: str | Path | None = None) -> Trace:
        """A trace from a table with columns arrival_s, prompt_tokens, output_tokens.

        An optional ``request_id`` column equal to 0..n-1 (what ``to_frame`` writes) is
        dropped; any other ``request_id`` is kept as extra ``source_request_id``; other
        columns become extras. Rows must already be sorted by arrival. Errors name
        ``source`` (when given), the row position and the column.
        """
        arrival, prompt, output, extras = frame_arrays(df, source)
        return cls(arrival, prompt, output, name=name, extras=extras)

    def with_block_hashes(self, hash_ids, block_tokens: int) -> Trace:
        """The same requests with prefix-block hashes (one list of ids per request)."""
        extras = {**self.extras, HASH_COLUMN: list(hash_ids)}
        return Trace(self.arrival_s, self.prompt_tokens, self.output_tokens, name=self.name,
                     extras=extras, hash_block_tokens=block_tokens)

    def save(self, path: str | Path) -> Path:
        """Write the trace in canonical columns; the format follows the suffix.

        ``.csv``: request_id, arrival_s, prompt_tokens, output_tokens and the extras whose
        entries are scalars; ``hash_ids`` as space-separated ids with its
        ``hash_block_tokens`` column (other list-valued extras do not fit a CSV cell; they are
        left out with a warning: use ``.jsonl`` or ``.parquet`` to keep them).
        ``.jsonl``: one JSON object per request, all extras included.
        ``.parquet``: needs pyarrow. Floats are written so that they read back exactly.
        Returns the path written.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if HASH_COLUMN in self.extras and self.hash_block_tokens is None \
                and suffix in (".jsonl", ".ndjson", ".parquet", ".pq"):
            raise InputError(f"{HASH_COLUMN} without its block size would not read back "
                             "(load_trace needs hash_block_tokens beside it): give it with "
                             "with_block_hashes(ids, block_tokens), or name the extra "
                             "otherwise", file=str(path), field=HASH_COLUMN)
        if suffix == ".csv":
            _write_csv(self, path)
        elif suffix in (".jsonl", ".ndjson"):
            _write_jsonl(self, path)
        elif suffix in (".parquet", ".pq"):
            if importlib.util.find_spec("pyarrow") is None:
                raise ImportError(PARQUET_HINT)
            self.to_frame(extras=True).to_parquet(path, index=False)
        else:
            raise ValueError(f"cannot tell the format of {str(path)!r} from its suffix "
                             f"{path.suffix!r}: expected .csv, .jsonl or .parquet")
        return path


def _arrival_array(value: object) -> np.ndarray:
    """arrival_s as a read-only float64 copy, checked finite, >= 0 and non-decreasing."""
    arr = np.array(value, copy=True)
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        raise InputError(f"expected a 1-D array of real numbers (seconds), got "
                         f"{arr.ndim}-D {arr.dtype}", field="arrival_s")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > _MAX_EXACT_INT)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"request {i}: expected a finite time >= 0 s (at most 2**53), found "
                         f"{value_text(arr[i])}",
                         field="arrival_s")
    back = first_decrease(arr)
    if back is not None:
        raise InputError(f"request {back}: arrival {value_text(arr[back])} s is earlier than "
                         f"request {back - 1}'s {value_text(arr[back - 1])} s; expected "
                         f"non-decreasing times",
                         field="arrival_s")
    arr.flags.writeable = False
    return arr


def _token_array(value: object, name: str) -> np.ndarray:
    """A token-count field as a read-only int64 copy, checked whole and >= 1."""
    arr = np.array(value, copy=True)
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        raise InputError(f"expected a 1-D array of whole numbers, got {arr.ndim}-D {arr.dtype}",
                         field=name)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.floor(arr)) | (arr < 1) | (arr > _MAX_EXACT_INT)
    else:    # (compared in the array's own dtype: no wrap of uint64 or near-2**63 values)
        bad = (arr < 1) | (arr > _MAX_EXACT_INT)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"request {i}: expected a whole number of tokens >= 1 (at most 2**53), "
                         f"found {value_text(arr[i])}", field=name)
    arr = arr.astype(np.int64)
    arr.flags.writeable = False
    return arr


def _extra_array(value: object, n: int, name: str) -> np.ndarray:
    """One extras column as a read-only 1-D array of length n (lists become object arrays)."""
    if isinstance(value, np.ndarray):
        arr = value.copy()
    else:
        items = list(value)  # type: ignore[call-overload]
        arr = np.empty(len(items), dtype=object)
        for i, item in enumerate(items):
            arr[i] = item
    if arr.ndim != 1 or len(arr) != n:
        raise InputError(f"expected a 1-D array with one entry per request ({n}), got shape "
                         f"{arr.shape}", field=f"extras[{name!r}]")
    arr.flags.writeable = False
    return arr


def _is_scalar_column(arr: np.ndarray) -> bool:
    """Whether every entry of an extras column fits one CSV cell."""
    if arr.dtype != object:
        return True
    return all(not isinstance(v, (list, tuple, dict, set, np.ndarray)) for v in arr)


def _write_csv(trace: Trace, path: Path) -> None:
    frame = trace.to_frame()
    left_out = []
    for key, values in trace.extras.items():
        if key == HASH_COLUMN and trace.has_block_hashes:
            frame[key] = [encode_csv(ids) for ids in values]
            frame[BLOCK_COLUMN] = trace.hash_block_tokens
        elif _is_scalar_column(values):
            frame[key] = values
        else:
            left_out.append(key)
    if left_out:
        warnings.warn(f"{path}: extra columns {left_out} hold lists, which CSV cannot store; "
                      "they are not written (save as .jsonl or .parquet to keep them)",
                      stacklevel=3)
    frame.to_csv(path, index=False)


def _json_value(value: object) -> object:
    """A numpy or Python value as plain JSON data (NaN as null)."""
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_jsonl(trace: Trace, path: Path) -> None:
    names = list(trace.extras)
    columns = [trace.extras[k] for k in names]
    arrival = trace.arrival_s.tolist()
    prompt = trace.prompt_tokens.tolist()
    output = trace.output_tokens.tolist()
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i in range(len(trace)):
            record = {"request_id": i, "arrival_s": arrival[i], "prompt_tokens": prompt[i],
                      "output_tokens": output[i]}
            for key, col in zip(names, columns):
                record[key] = _json_value(col[i])
            if trace.has_block_hashes:
                record[BLOCK_COLUMN] = trace.hash_block_tokens
            f.write(json.dumps(record, allow_nan=False) + "\n")
