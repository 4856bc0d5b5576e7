"""What commands print: plain aligned tables, key/value pairs, or ``--json``; never a Python repr.

>>> plain(None), plain(Decimal("1.50")), plain(dt.date(2026, 3, 9)), plain({"default": 50, "redeem": 20})
('-', '1.50', '2026-03-09', 'default=50 redeem=20')
>>> plain(dt.datetime(2026, 3, 9, 8, 30, 1, 5)), plain(True), plain(["a", 1])
('2026-03-09 08:30:01', 'yes', 'a, 1')
>>> plain({"credit": {"count": 1, "amount": -5}, "debit": None})
'credit=(count=1 amount=-5) debit=-'

"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import click


def plain(value: Any) -> str:
    """A value as an operator reads it: ``-`` for nothing, ISO dates, ``k=v`` for a mapping."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return " ".join(f"{k}=({plain(v)})" if isinstance(v, Mapping) else f"{k}={plain(v)}"
                        for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"({len(value)} bytes)"  # keys and PIN blocks are never printed
    return str(value)


def _json_default(value: Any) -> str:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    """``data`` as indented JSON with ``--json``, else whatever ``human`` prints."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=_json_default))
    else:
        human()


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """A header row (the column names, upper case), then one aligned line per row (numbers right)."""
    cells = [[plain(r.get(c)) for c in columns] for r in rows]
    numeric = [any(r.get(c) is not None for r in rows)
               and all(r.get(c) is None or (isinstance(r.get(c), int | Decimal) and not isinstance(r.get(c), bool))
                       for r in rows) for c in columns]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    click.echo(line([c.upper() for c in columns]))
    for values in cells:
        click.echo(line(values))


def pairs(data: Mapping[str, Any], indent: str = "") -> None:
    """One ``key  value`` line per item, keys aligned."""
    width = max((len(k) for k in data), default=0)
    for k, v in data.items():
        click.echo(f"{indent}{k.ljust(width)}  {plain(v)}".rstrip())
