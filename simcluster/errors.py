"""Errors that name where bad input came from.

Every user-facing input problem (a trace row, a spec field, an experiment key) raises
:class:`InputError`, whose message names the file, the line or field, and what was expected,
so that a user can fix the input without reading simcluster's source.
"""

from __future__ import annotations


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
