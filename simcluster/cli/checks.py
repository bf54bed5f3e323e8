"""Checks every command shares: argument types, output paths checked before the work, and
input files whose parse errors name the file.

- :class:`Parser` — argparse that suggests the closest choice ("did you mean").
- :func:`positive_int`, :func:`non_negative_int`, :func:`positive_float`, :func:`fraction` —
  argument types.
- :func:`out_dir`, :func:`out_file` (from :mod:`simcluster.paths`) — an ``--out`` path checked
  *before* a long run, so that a finished simulation is never lost to a path that cannot be
  written.
- :func:`reading` — a context in which a parser's ValueError / KeyError / CSV error about a
  user's file becomes an InputError naming that file (for readers below the shell that raise
  plain exceptions).
"""

from __future__ import annotations

import argparse
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from simcluster.errors import InputError, did_you_mean
from simcluster.paths import out_dir, out_file  # noqa: F401  (checks of the commands)

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose "invalid choice" error suggests the closest choice."""

    def error(self, message):
        m = _INVALID_CHOICE.search(message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            message += did_you_mean(m.group(1), choices)
        super().error(message)


def _dest(parser, flag: str) -> str:
    for action in parser._actions:          # (argparse keeps its options here)
        if flag in action.option_strings:
            return action.dest
    raise ValueError(f"{parser.prog} has no option {flag}")


@dataclass(frozen=True)
class _FlagRule:
    """``flag`` does nothing without (``needs``) or with ``other``; a flag is given when its
    value differs from its default."""
    flag: str
    other: str
    needs: bool
    why: str
    dests: tuple          # (flag's dest, its default, other's dest, its default)

    def broken(self, args) -> bool:
        dest, default, odest, odefault = self.dests
        given, other = getattr(args, dest) != default, getattr(args, odest) != odefault
        return given and other != self.needs


def _declare(parser, flag: str, other: str, needs: bool, why: str) -> None:
    dests = (_dest(parser, flag), _dest(parser, other))
    rule = _FlagRule(flag, other, needs, why, (dests[0], parser.get_default(dests[0]),
                                               dests[1], parser.get_default(dests[1])))
    parser.set_defaults(_flag_rules=[*(parser.get_default("_flag_rules") or []), rule])


def unused_without(parser, flag: str, other: str, why: str = "") -> None:
    """Declare that ``flag`` does something only with ``other`` given: :func:`check_flags`
    refuses it alone (a flag that silently did nothing)."""
    _declare(parser, flag, other, True, why)


def unused_with(parser, flag: str, others: tuple[str, ...], why: str = "") -> None:
    """Declare that ``flag`` does nothing when one of ``others`` is given (that one decides
    instead): :func:`check_flags` refuses the two together."""
    for other in others:
        _declare(parser, flag, other, False, why)


def check_flags(args) -> None:
    """An InputError for a flag given where it does nothing (the rules declared with
    :func:`unused_without` and :func:`unused_with`)."""
    for rule in getattr(args, "_flag_rules", None) or ():
        if rule.broken(args):
            raise InputError(f"does nothing {'without' if rule.needs else 'with'} {rule.other}"
                             + (f": {rule.why}" if rule.why else ""), field=rule.flag)


def each_once(given, paths, field: str, noun: str, why: str = "") -> None:
    """An InputError when two of ``paths`` (the files the arguments ``given`` named) are one
    file: it would be read twice (``noun``: what a file is, ``why``: what that would do)."""
    seen: dict = {}
    for text, path in zip(given, paths):
        key = Path(path).resolve()
        if key in seen:
            what = "is given twice" if text == seen[key] else f"is the {noun} {seen[key]} again"
            raise InputError(f"{text} {what}" + (f": {why}" if why else ""), field=field)
        seen[key] = text


def _int(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a whole number {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int(text, 1, ">= 1")


def non_negative_int(text: str) -> int:
    return _int(text, 0, ">= 0")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def in_file(path: str, flag: str = "") -> Path:
    """An input file that exists and is a file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError("no such file", file=str(p), field=flag or None)
    if p.is_dir():
        raise InputError("is a folder; expected a file", file=str(p), field=flag or None)
    return p


@contextmanager
def reading(path):
    """Errors of a parser reading ``path`` (a user's file) as InputError naming it."""
    import pandas as pd
    try:
        yield
    except InputError:
        raise
    except (ValueError, KeyError, IndexError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as err:
        what = f"missing column or key {err}" if isinstance(err, KeyError) else str(err)
        raise InputError(f"cannot read it: {what or type(err).__name__}", file=str(path)) \
            from None
