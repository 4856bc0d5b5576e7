"""The audit log, as the portal's pages write it: :mod:`ledger.audit_log` (the CLI writes it too)."""

from __future__ import annotations

from ledger.audit_log import SECRET_KEYS, record

__all__ = ["SECRET_KEYS", "record"]
