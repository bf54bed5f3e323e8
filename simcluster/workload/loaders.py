"""Reading request traces from files: Azure, Mooncake, Vidur and simcluster's own format.

:func:`load_trace` is the one entry point. It picks a *container* (CSV, JSON Lines or
Parquet) from the suffix and a *schema* (which columns mean what, see
:mod:`simcluster.workload._table`) from the header, parses every column vectorised, and
only on the error path looks for the offending line, so that a bad file fails with an
:class:`~simcluster.errors.InputError` naming file, line and column.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from simcluster.lazy import lazy_module
from simcluster.errors import InputError, did_you_mean, path_like, unique_keys, unknown_name
from simcluster.workload._columns import Rows, unique_header
from simcluster.workload._table import SCHEMAS, Schema, detect_schema, request_arrays
from simcluster.workload.bundled import BUNDLED, bundled_trace_path
from simcluster.workload.hashes import BLOCK_COLUMN, HASH_COLUMN, MOONCAKE_BLOCK_TOKENS
from simcluster.workload.trace import PARQUET_HINT, Trace

pd = lazy_module("pandas")     # (imported when a frame is first built)

#: Accepted values of ``load_trace(format=...)`` and the container each implies.
#: csv/jsonl/parquet name the container only (columns detected from the header);
#: azure/vidur/mooncake also fix the schema.
FORMATS: dict[str, str] = {
    "csv": "csv", "jsonl": "jsonl", "parquet": "parquet",
    "azure": "csv", "vidur": "csv", "mooncake": "jsonl",
}

#: A trace file's suffix -> its container format (what :func:`load_trace` detects).
SUFFIXES: dict[str, str] = {
    ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}


def load_trace(path_or_name: str | Path, *, format: str | None = None,
               sort: bool = False) -> Trace:
    """Read a request trace from a file, or a bundled trace by name.

    ``path_or_name``: a file path, or one of the bundled names ``"azure-conv"``,
    ``"azure-code"``, ``"mooncake-conv"`` (see :func:`bundled_traces`); an existing file of
    that name takes precedence. The trace is named after the bundled name or the file stem.

    ``format``: None (from suffix and header), or one of ``csv``, ``jsonl``, ``parquet``
    (the container; columns still detected) or ``azure``, ``vidur``, ``mooncake``.
    Recognised columns:

    - Azure CSV: ``TIMESTAMP`` (wall clock, any fractional digits, optional timezone),
      ``ContextTokens``, ``GeneratedTokens``; arrival_s counts from the earliest request.
    - Mooncake JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``; ``hash_ids``
      (block hashes of 512-token blocks: ``Trace.hash_block_tokens = 512``) and any other key
      is kept in ``Trace.extras``.
    - Vidur CSV: ``arrived_at`` (s), ``num_prefill_tokens``, ``num_decode_tokens`` (Vidur
      counts the token produced by prefill among the decode tokens, as ``output_tokens``
      does here).
    - canonical CSV / JSONL / Parquet: ``arrival_s``, ``prompt_tokens``, ``output_tokens``,
      optional ``request_id`` (see :meth:`Trace.from_frame`), optional block hashes
      ``hash_ids`` with their block size ``hash_block_tokens`` (:mod:`.hashes`).

    Arrival times must not decrease; with ``sort=True`` requests are stably sorted by
    arrival instead. Blank lines are skipped. Every other problem (missing column, empty
    cell, non-numeric or non-integer or non-positive token count, bad timestamp, malformed
    JSON line, file without requests) raises InputError naming file, line and column.
    """
    if not isinstance(sort, bool):
        raise InputError(f"expected true or false, got {sort!r}", field="sort")
    path, name = _resolve(path_like(path_or_name, "trace"))
    if name in BUNDLED and path == bundled_trace_path(name):   # parsed once per user
        from simcluster.workload.cache import load_cached
        return load_cached(path, name, format, sort, lambda: _load(path, name, format, sort))
    return _load(path, name, format, sort)


def _load(path: Path, name: str, format: str | None, sort: bool) -> Trace:
    container, schema = _container_and_schema(path, format)
    if container == "csv":
        df, rows, header_line = _read_csv(path)
    elif container == "jsonl":
        df, rows, header_line = _read_jsonl(path)
    else:
        df, rows, header_line = _read_parquet(path)
    if schema is None:
        schema = detect_schema(list(df.columns), rows, line=header_line)
    arrival, prompt, output, extras = request_arrays(df, schema, rows, sort=sort,
                                                     header_line=header_line,
                                                     typed=container != "csv")
    block = (MOONCAKE_BLOCK_TOKENS if schema.name == "mooncake" and HASH_COLUMN in extras
             else None)
    if HASH_COLUMN in extras and block is None and BLOCK_COLUMN not in extras:
        # (a Trace keeps such a column as an opaque extra; from a file it is a forgotten
        # block size, and prefix caching would silently see no hashes)
        raise InputError(f"a {HASH_COLUMN} column needs a {BLOCK_COLUMN} column: the prompt "
                         "tokens each block hash covers (e.g. 16, vLLM's block size; 512 for "
                         "Mooncake's traces)", file=rows.file, line=header_line,
                         field=BLOCK_COLUMN)
    try:
        return Trace(arrival, prompt, output, name=name, extras=extras,
                     hash_block_tokens=block)
    except InputError as err:      # block hashes: name the file and the request's line
        if err.file is not None or err.field not in (HASH_COLUMN, BLOCK_COLUMN):
            raise
        line = None
        if err.reason.startswith("request "):
            pos = int(err.reason.split(":")[0].split()[1])
            line = rows.line(pos)
        raise InputError(err.reason, file=rows.file, line=line, field=err.field) from None


def _resolve(path_or_name: str | Path) -> tuple[Path, str]:
    """(file path, trace name) for a path or a bundled trace name."""
    path = Path(path_or_name)
    if isinstance(path_or_name, str) and path_or_name in BUNDLED and not path.exists():
        return bundled_trace_path(path_or_name), path_or_name
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        hint = did_you_mean(path.name, BUNDLED) if not path.suffix else ""
        raise InputError(f"{what}{hint}; expected a trace file or one of the bundled names "
                         f"{sorted(BUNDLED)}", file=str(path_or_name))
    return path, path.stem


def _container_and_schema(path: Path, format: str | None) -> tuple[str, Schema | None]:
    """The container to read and, when ``format`` fixes it, the schema."""
    if format is not None:
        if format not in FORMATS:
            raise unknown_name("trace format", format, FORMATS, field="format",
                               hint=" (or none: detected from the suffix and header)")
        return FORMATS[format], SCHEMAS.get(format)
    container = SUFFIXES.get(path.suffix.lower())
    if container is None:
        raise InputError(f"cannot tell the trace format from the suffix {path.suffix!r}: "
                         f"expected one of {sorted(SUFFIXES)}, or pass format= (one of "
                         f"{sorted(FORMATS)})", file=str(path))
    return container, None


def _read_csv(path: Path) -> tuple[pd.DataFrame, Rows, int]:
    """A CSV file as a table (cells as pandas infers them) and the line of each row.

    Line numbers assume one row per line (no line breaks inside quoted cells), as in every
    trace format read here.
    """
    try:
        df = pd.read_csv(path, index_col=False, skip_blank_lines=False, na_values=[""],
                         keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise InputError("the file is empty; expected a header line and one row per request",
                         file=str(path), line=1) from None
    except pd.errors.ParserError as err:
        raise _csv_parser_error(path, err) from None
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text ({err.reason})", file=str(path)) from None
    _no_duplicate_columns(path)
    df.columns = [str(c).strip() for c in df.columns]
    rows = Rows(str(path), np.arange(len(df), dtype=np.int64) + 2)
    blank = _blank_rows(df, path)
    if blank is not None:
        keep = ~blank
        df = df.loc[keep].reset_index(drop=True)
        rows = rows.take(np.flatnonzero(keep))
    return df, rows, 1


def _no_duplicate_columns(path: Path) -> None:
    """A header naming one column twice is an error (pandas would rename the second)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        unique_header(f.readline(), str(path))


def _csv_parser_error(path: Path, err: Exception) -> InputError:
    """An InputError for a row pandas could not split (wrong number of fields)."""
    text = str(err)
    line = None
    marker = " in line "
    if marker in text:
        digits = text.split(marker, 1)[1].split(",", 1)[0].strip()
        line = int(digits) if digits.isdigit() else None
    reason = text.split("C error: ", 1)[-1].strip()
    return InputError(f"malformed CSV row: {reason}", file=str(path), line=line)


def _blank_rows(df: pd.DataFrame, path: Path) -> np.ndarray | None:
    """Mask of rows that come from blank lines, or None when there are none.

    A blank line reads as a row of empty cells; so does a line like ``,,``, which is not
    blank but a request with every cell missing. The raw text tells them apart, and is
    read only when such rows exist.
    """
    if len(df) == 0 or len(df.columns) == 0:
        return None
    first = df.iloc[:, 0]
    first_empty = first.isna().to_numpy().copy()
    if pd.api.types.is_string_dtype(first.dtype) or first.dtype == object:
        first_empty |= first.astype(str).str.strip().eq("").to_numpy() & first.notna().to_numpy()
    candidate = first_empty & df.iloc[:, 1:].isna().all(axis=1).to_numpy()
    if not candidate.any():
        return None
    with open(path, encoding="utf-8-sig", newline=None) as f:
        lines = f.read().split("\n")
    blank = np.zeros(len(df), dtype=bool)
    for pos in np.flatnonzero(candidate):
        line_no = pos + 2  # header is line 1
        blank[pos] = line_no - 1 < len(lines) and lines[line_no - 1].strip() == ""
    return blank


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, Rows, int | None]:
    """A JSON Lines file (one object per line) as a table and the line of each row."""
    records: list[dict] = []
    lines: list[int] = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            for line_no, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                    keys = text.count('":') + text.count('" :')
                    if isinstance(record, dict) and keys > len(record):
                        # (maybe a key given twice, maybe a nested object or a '":' inside a
                        # string: parsed again, checking; the plain parse costs 35% less)
                        record = json.loads(text, object_pairs_hook=unique_keys)
                except json.JSONDecodeError as err:
                    raise InputError(f"malformed JSON at column {err.colno}: {err.msg}; "
                                     "expected one JSON object per line",
                                     file=str(path), line=line_no) from None
                except InputError as err:      # (a key given twice)
                    raise InputError(err.reason, file=str(path), line=line_no,
                                     field=err.field) from None
                if not isinstance(record, dict):
                    raise InputError("expected a JSON object ({...}) per line, found "
                                     f"{type(record).__name__}", file=str(path), line=line_no)
                records.append(record)
                lines.append(line_no)
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text ({err.reason})", file=str(path)) from None
    if not records:
        raise InputError("the file holds no requests; expected one JSON object per line",
                         file=str(path), line=1)
    df = pd.DataFrame.from_records(records)
    return df, Rows(str(path), np.asarray(lines, dtype=np.int64)), lines[0]


def _read_parquet(path: Path) -> tuple[pd.DataFrame, Rows, int | None]:
    """A Parquet file as a table; rows are numbered from 1 in place of lines."""
    if importlib.util.find_spec("pyarrow") is None:
        raise InputError(f"cannot read Parquet: {PARQUET_HINT}", file=str(path))
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises its own error types for a corrupt file
        raise InputError(f"not a readable Parquet file ({err})", file=str(path)) from None
    return df.reset_index(drop=True), Rows(str(path), np.arange(1, len(df) + 1)), None
