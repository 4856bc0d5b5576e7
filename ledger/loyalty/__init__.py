"""Loyalty points and stored value on the ledger: programs, merchants, cards, and the transactions.

ISO-free: the switch's handlers translate messages into :class:`Request` and
:class:`Outcome` back into responses (switch/handlers/responses.py).
"""

from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType

__all__ = ["Loyalty", "Outcome", "Reason", "Request", "TxnType"]
