"""Column checks shared by the trace readers: one table column in, one validated array out.

A reader turns a file into a pandas DataFrame plus a :class:`Rows` record saying which file
and which line each row came from. The functions here check a whole column at once
(vectorised), and only when something is wrong look for the first offending row, so that
the :class:`~simcluster.errors.InputError` names the file, the line and the column, the
value found there and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simcluster.lazy import lazy_module
from simcluster.errors import InputError, value_text

pd = lazy_module("pandas")     # (imported when a frame is first built)

# Token counts (and times) above this cannot be held exactly as float64 and are surely not
# real; an int64 cell near 2**63 would otherwise wrap negative, a uint64 one wrap around.
_MAX_EXACT_INT = 2**53


@dataclass(frozen=True)
class Rows:
    """Where the rows of a table came from.

    ``file`` is the source file (or None for an in-memory table); ``lines`` holds, for each
    row position, its 1-based line number in that file (for CSV the header is line 1, so the
    first data row is line 2; for Parquet it is the 1-based row number). With ``lines=None``
    rows are named by their 0-based position instead ("row 5").
    """

    file: str | None
    lines: np.ndarray | None = None

    def line(self, pos: int) -> int | None:
        """The file line of the row at position ``pos``, or None when unknown."""
        return None if self.lines is None else int(self.lines[pos])

    def error(self, pos: int | None, column: str | None, message: str) -> InputError:
        """An InputError pointing at row position ``pos`` and ``column``."""
        line = None if pos is None else self.line(pos)
        if pos is not None and line is None:
            message = f"row {pos}: {message}"
        return InputError(message, file=self.file, line=line, field=column)

    def take(self, index: np.ndarray) -> Rows:
        """The same record for a subset or reordering of the rows."""
        return Rows(self.file, None if self.lines is None else self.lines[index])


def unique_names(names: Sequence[str], file: str | None, line: int | None = None,
                 where: str = "") -> None:
    """Column ``names`` naming one column twice is an InputError (``where``: where they
    stand, for the message)."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"column {twice[0]!r} appears {names.count(twice[0])} times{where}; "
                         "expected each column once", file=file, line=line, field=twice[0])


def unique_header(header: str, file: str | None, line: int | None = 1) -> None:
    """A CSV header line naming one column twice is an InputError (pandas would read the
    second as ``name.1``, and the file's value would go unread)."""
    import csv
    unique_names([h.strip() for h in next(csv.reader([header]), [])], file, line,
                 " in the header")


def unique_file_header(path) -> None:
    """:func:`unique_header` of a CSV file's header (its ``#`` and blank lines skipped);
    a file that cannot be read is left to the caller's reader to report."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for n, ln in enumerate(f, 1):
                if ln.strip() and not ln.lstrip().startswith("#"):
                    unique_header(ln, str(path), n)
                    return
    except (OSError, UnicodeDecodeError):
        return


def commented_csv(text: str, file: str | None) -> Rows:
    """The rows of a CSV's text whose ``#`` lines and blank lines pandas skips (``comment=
    "#"``): each row's line in the file. The header is checked once-a-column
    (:func:`unique_header`)."""
    lines = [n for n, ln in enumerate(text.splitlines(), 1)
             if ln.strip() and not ln.lstrip().startswith("#")]
    if lines:
        unique_header(text.splitlines()[lines[0] - 1], file, lines[0])
    return Rows(file, np.asarray(lines[1:], dtype=np.int64))


def require_columns(columns: Sequence[str], expected: Sequence[str], rows: Rows, *,
                    line: int | None = None, what: str = "") -> None:
    """Fail naming the first expected column that ``columns`` lacks, listing both sets."""
    missing = [c for c in expected if c not in columns]
    if missing:
        kind = f" for {what}" if what else ""
        raise InputError(
            f"missing column '{missing[0]}'{kind}: expected columns {list(expected)}, "
            f"found {list(columns)}",
            file=rows.file, line=line, field=missing[0])


def _as_float(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, unparsable) for a column: float64 values (NaN where not a number).

    ``unparsable`` marks cells that hold something other than a number: text that is not
    numeric, booleans, lists, objects.
    """
    if series.dtype.kind in "iuf":
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, np.zeros(len(values), dtype=bool)
    if series.dtype.kind == "b":
        return np.full(len(series), np.nan), np.ones(len(series), dtype=bool)
    present = series.notna().to_numpy()
    is_bool = np.fromiter((isinstance(v, (bool, np.bool_)) for v in series),
                          dtype=bool, count=len(series)) if series.dtype == object \
        else np.zeros(len(series), dtype=bool)
    try:
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64,
                                                                 na_value=np.nan)
    except (TypeError, ValueError):  # lists or dicts in a JSON column
        values = np.array([_scalar_float(v) for v in series], dtype=np.float64)
    values = np.where(is_bool, np.nan, values)
    unparsable = present & (np.isnan(values) | is_bool)
    return values, unparsable


def _scalar_float(value: object) -> float:
    """One JSON cell as a float, NaN when it is not a plain number."""
    if isinstance(value, (bool, np.bool_)):
        return np.nan
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return np.nan
    return np.nan


def numbers(series: pd.Series, rows: Rows, column: str, *, integer: bool,
            minimum: float, expected: str, typed: bool = False) -> np.ndarray:
    """The column as float64 (or int64 when ``integer``), every cell checked.

    Every cell must be present, a finite number no larger than 2**53, integral when
    ``integer``, and ``>= minimum``; otherwise InputError names the first offending row and
    says that ``expected`` was expected. Date-time and duration columns (Parquet timestamps)
    are refused: they are not numbers of anything until a unit is chosen. ``typed`` (JSON
    Lines, Parquet: containers whose numbers carry their type) also refuses numbers written
    as strings (``"100"``), which a CSV cannot tell apart.
    """
    if series.dtype.kind in "mM":
        raise rows.error(0 if len(series) else None, column,
                         f"expected {expected}, found a column of "
                         f"{'durations' if series.dtype.kind == 'm' else 'date-times'} "
                         f"({series.dtype}); convert it to numbers explicitly")
    if typed and series.dtype.kind not in "iufb":
        is_str = np.fromiter((isinstance(v, str) for v in series), dtype=bool,
                             count=len(series))
        if is_str.any():
            pos = int(np.argmax(is_str))
            raise rows.error(pos, column, f"expected {expected}, found the string "
                                          f"{value_text(series.iloc[pos])} (a number "
                                          "here is written without quotes)")
    if series.dtype.kind in "iu":  # fast path: a clean integer column (checked before any cast)
        raw = series.to_numpy()
        bad = (raw < minimum) | (raw > _MAX_EXACT_INT)
        if bad.any():
            pos = int(np.argmax(bad))
            raise rows.error(pos, column, f"expected {expected} (at most 2**53), found "
                                          f"{raw[pos]}")
        values = raw.astype(np.int64)
        return values if integer else values.astype(np.float64)
    values, unparsable = _as_float(series)
    missing = series.isna().to_numpy()
    finite = np.isfinite(values)
    bad = (missing | unparsable | (~finite & ~np.isnan(values)) | (values < minimum)
           | (finite & (np.abs(values) > _MAX_EXACT_INT)))
    if integer:
        bad |= finite & (values != np.floor(values))
    if bad.any():
        pos = int(np.argmax(bad))
        found = "an empty or missing value" if missing[pos] else value_text(series.iloc[pos])
        raise rows.error(pos, column, f"expected {expected}, found {found}")
    return values.astype(np.int64) if integer else values


def timestamps_ns(series: pd.Series, rows: Rows, column: str) -> np.ndarray:
    """Wall-clock timestamp strings as int64 nanoseconds since the epoch (UTC).

    Accepts ISO-8601 date-times with any number of fractional digits up to 9 (the Azure 2023
    traces have 7: ``2023-11-16 18:17:03.9799600``) and an optional timezone suffix (the 2024
    traces: ``+00:00``); times without a timezone are taken as UTC. Precision is kept to the
    nanosecond.
    """
    missing = series.isna().to_numpy()
    if series.dtype.kind in "iufbm":   # numbers are not date-times: no epoch guessed
        raise rows.error(0 if len(series) else None, column,
                         f"expected date-time strings like '2023-11-16 18:17:03.9799600', "
                         f"found a column of {series.dtype} values")
    if series.dtype.kind == "M":       # already date-times (a Parquet timestamp column)
        parsed = pd.to_datetime(series, utc=True)
    else:
        parsed = pd.to_datetime(series, format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna().to_numpy() | missing
    if bad.any():
        pos = int(np.argmax(bad))
        found = "an empty or missing value" if missing[pos] else value_text(series.iloc[pos])
        raise rows.error(pos, column, "expected a date-time like '2023-11-16 18:17:03.9799600'"
                         f" (optionally with a timezone such as '+00:00'), found {found}")
    naive_utc = parsed.dt.tz_localize(None).to_numpy()
    return naive_utc.astype("datetime64[ns]").view(np.int64)


def first_decrease(values: np.ndarray) -> int | None:
    """Position of the first value smaller than the one before it, or None if sorted."""
    if len(values) < 2:
        return None
    down = values[1:] < values[:-1]
    return int(np.argmax(down)) + 1 if down.any() else None
