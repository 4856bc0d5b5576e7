"""ISO 8583 field specifications, kept as plain data (JSON) beside this file.

The POS spec has binary bitmaps and binary fields 52/64/128 (pyiso8583's
``specs.default`` layout); the MIS spec is the same with hexadecimal ASCII
bitmaps, PIN block and MAC (``specs.default_ascii``).

>>> spec = load("pos")
>>> spec["p"]["data_enc"], load("mis")["p"]["data_enc"]
('b', 'ascii')
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

SPEC_DIR = Path(__file__).resolve().parent
SPEC_NAMES = ("pos", "mis")


@cache
def _load_frozen(name: str) -> dict[str, dict[str, Any]]:
    path = SPEC_DIR / f"{name}.json"
    with path.open(encoding="utf-8") as fh:
        data: dict[str, dict[str, Any]] = json.load(fh)
    return data


def load(name: str) -> dict[str, dict[str, Any]]:
    """Return a fresh copy of the named spec (``pos`` or ``mis``).

    A copy, because pyiso8583 specs are mutable dicts and callers must never
    change what another listener sees.
    """
    if name not in SPEC_NAMES:
        raise ValueError(f"unknown spec {name!r}; known: {', '.join(SPEC_NAMES)}")
    return copy.deepcopy(_load_frozen(name))
