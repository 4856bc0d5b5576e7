"""Imports every module that adds command groups to the CLI (kept in one place)."""

from switch import backoffice  # noqa: E402,F401  (ledger export, recon)
