"""Imports every module that adds command groups to the CLI (kept in one place)."""

from switch import (
    backoffice,  # noqa: E402,F401  (ledger export, recon)
    eod_cli,  # noqa: E402,F401  (eod run, batch show, txn search/show, stats)
    provisioning,  # noqa: E402,F401  (program, merchant, card, demo seed)
    terminals,  # noqa: E402,F401  (terminal add/list/show/disable)
)
