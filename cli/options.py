"""Options and parameter types shared by several commands."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON).")


class IsoDate(click.ParamType):
    """A YYYY-MM-DD date; anything else is click's usage error (exit 2)."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"expected YYYY-MM-DD, got {value!r}", param, ctx)


DATE = IsoDate()
