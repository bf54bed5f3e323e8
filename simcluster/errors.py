"""Errors that name where bad input came from.

Every user-facing input problem (a trace row, a spec field, an experiment key) raises
:class:`InputError`, whose message names the file, the line or field, and what was expected,
so that a user can fix the input without reading simcluster's source. An unknown name (a
device, a model, a policy) raises :class:`UnknownNameError`, which lists the known names and
suggests the closest one.

A shell that reads a file (the experiment loader, the command line) *relocates* an error
raised deeper down with :func:`relocate`: the file and the key it came from are prefixed, so
``field 'mem_bytes'`` from a spec becomes ``exp.toml: field 'instances[0].device': ...``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SimclusterError(Exception):
    """Base class of simcluster's own errors."""


class InputError(SimclusterError, ValueError):
    """Bad input: a file, a line or field in it, and what was expected there.

    ``str(err)`` reads ``FILE:LINE: field 'F': MESSAGE`` with the parts that are known.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file = None if file is None else str(file)
        self.line = line
        self.field = field
        self.reason = message
        where = ""
        if self.file is not None:
            where = self.file + (f":{line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message)

    def __str__(self) -> str:   # (a KeyError subclass would quote its message)
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):       # pickles across process pools with its parts
        return (_rebuild, (type(self), self.reason, self.file, self.line, self.field))


def _rebuild(cls, reason, file, line, field):
    return cls(reason, file=file, line=line, field=field)


class SettingError(InputError):
    """An environment variable's value (``SIMCLUSTER_HWSPECS``, ...) is wrong: the mistake is
    in the environment, so no file or key that reached it through a loader claims it
    (:func:`relocate` leaves it as it is)."""


class UnknownNameError(InputError, KeyError):
    """An unknown name (device, link, model, policy, trace, calibration, engine).

    Also a KeyError, which is what a registry lookup raised before names were checked."""


def value_text(value: object) -> str:
    """A short repr of a cell or array value for an error message: a numpy scalar as the
    Python number it holds (numpy 2 spells ``np.int64(-1)``), cut at 40 characters."""
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "shape", None) == ():
        value = item()
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def toml_text(value: object) -> str:
    """``value`` as an error message shows it to the author of a TOML file or a ``--set``:
    ``true``/``false``, ``[...]`` and ``{key = ...}`` as TOML writes them (Python's ``True``
    and ``{'key': ...}`` are not what they typed); anything else as ``repr``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` for the closest of ``choices`` (ignoring case), else ''."""
    choices = [str(c) for c in choices]
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def unknown_name(what: str, name: object, known: Iterable[str], *, hint: str = "",
                 field: str | None = None, file: str | None = None) -> UnknownNameError:
    """The error for an unknown ``what`` called ``name``: the known ones, the closest one."""
    known = sorted({str(k) for k in known}, key=str.lower)
    return UnknownNameError(f"unknown {what} {name!r}{did_you_mean(name, known)}; known: "
                            f"{', '.join(known) or '(none)'}{hint}", field=field, file=file)


def relocate(err: InputError, file: str | None = None, field: str | None = None,
             ) -> InputError:
    """``err`` as raised by a loader of ``file`` at key ``field``.

    The deeper error's own file (a spec or config file named by the experiment) is kept in
    the message; its field is appended to ``field`` (``instances[0].device`` +
    ``mem_bytes`` -> ``instances[0].device: mem_bytes``) unless it repeats it. A
    :class:`SettingError` stays as it is.
    """
    if isinstance(err, SettingError):
        return err
    reason = err.reason
    if err.file is not None and err.file != file:
        inner = err.file + (f":{err.line}" if err.line is not None else "")
        inner += f": field '{err.field}'" if err.field else ""
        reason = f"{inner}: {reason}"
        line = None
    else:
        line = err.line
        if err.field and field and err.field != field and not field.endswith(
                "." + err.field):
            reason = f"{err.field}: {reason}"
        elif err.field and not field:
            field = err.field
    return type(err)(reason, file=file if file is not None else err.file, line=line,
                     field=field)


def unique_keys(pairs: list) -> dict:
    """``json.loads``'s ``object_pairs_hook``: the object as a dict, or an InputError (field:
    the key) for a key given twice, where json would keep the last value without a word."""
    out = dict(pairs)
    if len(out) != len(pairs):
        keys = [k for k, _ in pairs]
        twice = next(k for k in keys if keys.count(k) > 1)
        raise InputError(f"key {twice!r} appears twice in one object; expected each key once "
                         "(JSON keeps only the last)", field=twice)
    return out


def whole_number(value, field: str, minimum: int = 1) -> int:
    """``value`` if it is a whole number >= ``minimum`` (an int or numpy integer, not a bool or
    a float such as 2.0), else an InputError on ``field``."""
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"expected a whole number >= {minimum}, got {value!r}", field=field)
    return int(value)


def path_like(value, what: str):
    """``value`` if it is a name or a file's path (a str or os.PathLike), else a TypeError
    naming ``what`` (os.fspath's "expected str, bytes or os.PathLike object, not int" named no
    argument)."""
    import os
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what}: expected a name or a file's path; got "
                        f"{type(value).__name__} {value!r}")
    return value
