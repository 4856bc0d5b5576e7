"""The ledger engine's settings for tests: the configuration's defaults (switch/config.py), changed at will."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from ledger.engine import LedgerSettings
from switch.config import load_config
from switch.daemon import ledger_settings as _from_config


@functools.cache
def _defaults() -> LedgerSettings:
    return _from_config(load_config(None, env={}))


def ledger_settings(**changes: Any) -> LedgerSettings:
    """The default ``[ledger]`` settings with ``changes`` (e.g. ``batch_size_max=16``)."""
    return replace(_defaults(), **changes)
