"""Trace file schemas and the step from a table of rows to validated request arrays.

A *schema* is the way one trace family names and encodes the three request columns
(arrival time, prompt tokens, output tokens). Readers produce a DataFrame; this module
finds the schema from the column names, checks every cell, checks arrival order, and
returns plain numpy arrays ready for :class:`~simcluster.workload.trace.Trace`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from simcluster.lazy import lazy_module
from simcluster.errors import InputError, value_text
from simcluster.workload._columns import (
    Rows,
    first_decrease,
    numbers,
    require_columns,
    timestamps_ns,
    unique_names,
)

pd = lazy_module("pandas")     # (imported when a frame is first built)


@dataclass(frozen=True)
class Schema:
    """How one trace family names its columns and encodes arrival time.

    ``time_unit`` is ``"s"`` (seconds), ``"ms"`` (milliseconds) or ``"datetime"``
    (wall-clock strings; arrivals become seconds after the earliest request).
    """

    name: str
    time: str
    prompt: str
    output: str
    time_unit: str
    description: str

    @property
    def columns(self) -> tuple[str, str, str]:
        """The three required column names, in order."""
        return (self.time, self.prompt, self.output)


SCHEMAS: dict[str, Schema] = {
    s.name: s for s in (
        Schema("canonical", "arrival_s", "prompt_tokens", "output_tokens", "s",
               "simcluster canonical (arrival_s, prompt_tokens, output_tokens)"),
        Schema("azure", "TIMESTAMP", "ContextTokens", "GeneratedTokens", "datetime",
               "Azure LLM inference trace (TIMESTAMP, ContextTokens, GeneratedTokens)"),
        Schema("mooncake", "timestamp", "input_length", "output_length", "ms",
               "Mooncake (timestamp in ms, input_length, output_length, hash_ids)"),
        Schema("vidur", "arrived_at", "num_prefill_tokens", "num_decode_tokens", "s",
               "Vidur (arrived_at in s, num_prefill_tokens, num_decode_tokens)"),
    )
}

#: Name under which a non-trivial ``request_id`` column of a canonical file is kept.
SOURCE_ID = "source_request_id"


def detect_schema(columns: Sequence[str], rows: Rows, *, line: int | None) -> Schema:
    """The schema whose arrival-time column appears in ``columns``.

    Fails listing the columns found and the column sets of every known schema.
    """
    for schema in SCHEMAS.values():
        if schema.time in columns:
            return schema
    known = "; ".join(f"{s.name}: {list(s.columns)}" for s in SCHEMAS.values())
    raise InputError(f"unrecognised trace format: found columns {list(columns)}; expected "
                     f"the columns of one of these formats: {known}",
                     file=rows.file, line=line)


def request_arrays(df: pd.DataFrame, schema: Schema, rows: Rows, *, sort: bool,
                   header_line: int | None = None, allow_empty: bool = False,
                   typed: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(arrival_s, prompt_tokens, output_tokens, extras) from a table in ``schema``.

    Every cell of the three request columns is checked; out-of-order arrivals fail naming
    the first line that goes back in time unless ``sort`` (then rows are stably sorted by
    arrival). Columns beyond the schema's are kept in ``extras``, one array per column.
    A table without rows is an error unless ``allow_empty``. ``typed``: the container types
    its numbers (JSON Lines, Parquet), so a number written as a string is an error.
    """
    require_columns(list(df.columns), schema.columns, rows, line=header_line,
                    what=schema.description)
    if len(df) == 0 and not allow_empty:
        raise InputError("the trace holds no requests (no data rows)", file=rows.file,
                         line=header_line)
    times = _arrival_times(df[schema.time], schema, rows, typed)
    prompt = numbers(df[schema.prompt], rows, schema.prompt, integer=True, minimum=1,
                     expected="a whole number of prompt tokens >= 1", typed=typed)
    output = numbers(df[schema.output], rows, schema.output, integer=True, minimum=1,
                     expected="a whole number of output tokens >= 1", typed=typed)
    extras = _extras(df, schema, rows)
    back = first_decrease(times)
    if back is not None and not sort:
        shown = df[schema.time]
        raise rows.error(back, schema.time,
                         f"arrival times must not decrease: {value_text(shown.iloc[back])} "
                         f"comes after {value_text(shown.iloc[back - 1])}"
                         + (f" on line {rows.line(back - 1)}" if rows.lines is not None else "")
                         + "; pass sort=True to sort the requests by arrival")
    if back is not None:
        order = np.argsort(times, kind="stable")
        times, prompt, output = times[order], prompt[order], output[order]
        extras = {k: v[order] for k, v in extras.items()}
    if schema.time_unit == "datetime" and len(times) > 0:
        arrival_s = (times - times[0]).astype(np.float64) / 1e9
    elif schema.time_unit == "datetime":
        arrival_s = np.zeros(0)
    elif schema.time_unit == "ms":
        arrival_s = times / 1e3
    else:
        arrival_s = times
    return arrival_s, prompt, output, extras


def _arrival_times(series: pd.Series, schema: Schema, rows: Rows, typed: bool) -> np.ndarray:
    """Arrival column as comparable numbers: int64 ns for datetimes, float otherwise."""
    if schema.time_unit == "datetime":
        return timestamps_ns(series, rows, schema.time)
    unit = "milliseconds" if schema.time_unit == "ms" else "seconds"
    if series.dtype.kind == "m":   # a duration column (Parquet): explicit in its own unit
        seconds = series.dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
        series = pd.Series(seconds * (1e3 if schema.time_unit == "ms" else 1.0))
    return numbers(series, rows, schema.time, integer=False, minimum=0.0,
                   expected=f"an arrival time in {unit} >= 0", typed=typed)


def _extras(df: pd.DataFrame, schema: Schema, rows: Rows) -> dict[str, np.ndarray]:
    """Columns beyond the schema's, as per-request arrays (a trivial request_id dropped)."""
    extras: dict[str, np.ndarray] = {}
    for name in df.columns:
        if name in schema.columns:
            continue
        values = df[name].to_numpy()
        if name == "request_id" and schema.name == "canonical":
            if values.dtype.kind in "iu" and np.array_equal(values, np.arange(len(values))):
                continue  # 0..n-1 in file order: exactly the ids to_frame() regenerates
            name = SOURCE_ID
        extras[str(name)] = values
    return extras


def frame_arrays(df: pd.DataFrame, source: object | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """request_arrays() for an in-memory table in canonical columns (rows named by position)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    # (a column twice: df[name] would be a frame, not a column)
    unique_names([str(c) for c in df.columns], None if source is None else str(source))
    rows = Rows(None if source is None else str(source))
    return request_arrays(df.reset_index(drop=True), SCHEMAS["canonical"], rows, sort=False,
                          allow_empty=True)


def subset_extras(extras: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The per-request extras for a subset (index array or boolean mask) of requests."""
    return {k: v[index] for k, v in extras.items()}
