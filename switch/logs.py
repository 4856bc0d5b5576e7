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

from ledger.errors import one_line
from ledger.loyalty.rules import mask_pan

_SECRET_KEYS = {"pan", "track2", "track_2", "pin", "pin_block", "key", "mac_key", "master_key", "pin_key", "tmk",
                "chip_data", "35", "45", "52", "55", "110"}


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
    capture_library_logs()


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class _LibraryLogs(logging.Handler):
    """Libraries' stdlib log records (asyncpg's pool, for one) as our JSON lines.

    One line each: the message, the library's logger, and for an exception its type
    and first line, never a traceback (which could quote a value, and breaks the
    one-event-per-line stream).
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info and record.exc_info[1] is not None:
                fields["error"] = one_line(record.exc_info[1])
            get_logger(record.name).log(record.levelno, record.getMessage(), **fields)
        except Exception:  # a log line must never take the process down
            self.handleError(record)


def capture_library_logs() -> None:
    """Route the stdlib root logger (warnings and up) through :class:`_LibraryLogs`."""
    root = logging.getLogger()
    root.handlers = [_LibraryLogs()]
    root.setLevel(max(_level, logging.WARNING))
