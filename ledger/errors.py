"""Exceptions said in one line, for logs, declines and CLI errors.

Database errors can carry several lines (DETAIL, HINT, a query); logs are one
event per line, and a decline's detail is read by people. Only the first line
is kept.

>>> first_line(ValueError("bad\\nsecond")), first_line(ValueError())
('bad', 'ValueError')
>>> one_line(KeyError("k")), one_line(TimeoutError())
("KeyError: 'k'", 'TimeoutError')
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The exception's first line of text, or its type's name when it has none."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """``Type: first line`` (just ``Type`` when the exception has no text)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
