"""The project's own errors, and exceptions said in one line, for logs, declines and CLI errors.

Every error class of ours derives from :class:`SwitchdError`; a driver's
exception class (asyncpg's) is never raised for a fault of ours, so that a
caller can tell the database's failures from ours.

Database errors can carry several lines (DETAIL, HINT, a query); logs are one
event per line, and a decline's detail is read by people. Only the first line
is kept.

>>> first_line(ValueError("bad\\nsecond")), first_line(ValueError())
('bad', 'ValueError')
>>> one_line(KeyError("k")), one_line(TimeoutError())
("KeyError: 'k'", 'TimeoutError')
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class SwitchdError(Exception):
    """The base of the project's own errors; ``str()`` is one line.

    >>> str(SwitchdError("first\\nsecond")), str(SwitchdError())
    ('first', '')
    """

    def __str__(self) -> str:
        text = super().__str__()
        return text.splitlines()[0] if text else ""


class Unavailable(SwitchdError):
    """The platform cannot do it now (a queue is full, the work was cancelled); nothing was done.

    Callers answer it as they answer a database failure: the request may be retried.
    """


@contextlib.contextmanager
def timeout_named(what: str) -> Iterator[None]:
    """Re-raise a TimeoutError from the block as one that says what was waited for.

    A bare TimeoutError tells an operator nothing; wrap each bounded wait in its own.

    >>> try:
    ...     with timeout_named("no connection within 2s"):
    ...         raise TimeoutError()
    ... except TimeoutError as exc:
    ...     print(exc)
    no connection within 2s
    """
    try:
        yield
    except TimeoutError:
        raise TimeoutError(what) from None


def first_line(exc: BaseException) -> str:
    """The exception's first line of text, or its type's name when it has none."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """``Type: first line`` (just ``Type`` when the exception has no text)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
