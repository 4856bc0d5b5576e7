"""How hard the stateful property tests search, from the environment.

The suite's defaults keep `make test` within minutes. `SWITCHD_SOAK=N` (a whole number,
1 by default) runs N times as many random sequences, each twice as long when N > 1:
``SWITCHD_SOAK=20 .venv/bin/pytest tests/test_loyalty_model.py`` is a soak of the loyalty
model. A failure prints the shrunk sequence as usual.

>>> examples(12, soak=1), steps(25, soak=1), examples(12, soak=10), steps(25, soak=10)
(12, 25, 120, 50)
"""

from __future__ import annotations

import os


def soak_factor() -> int:
    """``$SWITCHD_SOAK`` as a whole number of at least 1; anything else is an error, not a default."""
    raw = os.environ.get("SWITCHD_SOAK", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"SWITCHD_SOAK must be a whole number >= 1, got {raw!r}")
    return int(raw)


def examples(default: int, soak: int | None = None) -> int:
    """How many sequences: the test's default times the soak factor."""
    return default * (soak_factor() if soak is None else soak)


def steps(default: int, soak: int | None = None) -> int:
    """How many steps per sequence: the default, doubled when soaking."""
    return default * (2 if (soak_factor() if soak is None else soak) > 1 else 1)
