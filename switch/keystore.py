"""Terminal keys at rest: the master key and sealing live in :mod:`ledger.keys` (the CLI and
the portal seal keys too, and the ledger never imports the switch); the switch's names for them.
"""

from __future__ import annotations

from ledger.keys import (
    MASTER_KEY_BYTES,
    KeyStoreError,
    generate_master_key_hex,
    load_master_key,
    load_previous_master_key,
    seal,
    unseal,
    unseal_any,
)

__all__ = ["MASTER_KEY_BYTES", "KeyStoreError", "generate_master_key_hex", "load_master_key", "load_previous_master_key", "seal",
           "unseal",
           "unseal_any"]
