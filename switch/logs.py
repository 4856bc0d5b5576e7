"""Structured logs: JSON lines on stdout, one event per line.

Nothing secret may reach a log: callers pass PANs through ``mask_pan`` and
never pass track data, PIN blocks or keys at all. ``scrub`` is the last line of
defence for field dicts.

>>> mask_optional_pan("6212345678901234")
'621234******1234'
>>> mask_optional_pan("1234"), mask_optional_pan(None)
('****', None)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from ledger.loyalty.rules import mask_pan

_SECRET_KEYS = {"pan", "track2", "track_2", "pin", "pin_block", "key", "mac_key", "master_key", "35", "45", "52"}


def mask_optional_pan(pan: str | None) -> str | None:
    """:func:`ledger.loyalty.rules.mask_pan` for a field that may be absent."""
    return None if pan is None else mask_pan(pan)


def scrub(fields: dict[str, Any]) -> dict[str, Any]:
    """Drop secrets from a dict of fields before it is logged.

    >>> scrub({"event": "x", "pan": "6212345678901234", "52": "..", "pan_masked": "621234******1234"})
    {'event': 'x', 'pan_masked': '621234******1234'}
    """
    return {k: v for k, v in fields.items() if str(k).lower() not in _SECRET_KEYS}


def _drop_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    # The last line of defence: whatever a caller passes under a secret's name is dropped.
    return scrub(dict(event))


_level = logging.INFO


def enabled(level: int = logging.INFO) -> bool:
    """Whether lines at ``level`` are written: hot paths skip building lines nobody reads."""
    return level >= _level


def configure(level: str = "info", stream: Any = None) -> None:
    """JSON lines to stdout (or ``stream``), at ``level``."""
    global _level
    lvl = getattr(logging, level.upper(), logging.INFO)
    _level = lvl
    structlog.configure(
        processors=[
            _drop_secrets,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        # One write per line (WriteLogger), not print's two: worker processes share stdout, and
        # two writes per line let their lines run into each other.
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
