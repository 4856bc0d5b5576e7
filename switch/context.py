"""What a handler receives: one request's context, and how to build its response.

Handlers are plain ``async def handler(ctx: RequestContext) -> Fields``; they
read ``ctx.fields``, may post through ``ctx.ledger`` (attaching
``ctx.receipt(...)`` so the response is stored with the posting), and return
``ctx.reply(code, ...)``. Echoing the request's keys is done here, once, so no
handler can forget it.

>>> req = {"t": "0200", "3": "000000", "4": "000000000100", "7": "0101120000", "11": "000001",
...        "41": "T1      ", "42": "M1             ", "2": "4111111111111111"}
>>> sorted(response_to(req, "40").items())  # doctest: +NORMALIZE_WHITESPACE
[('11', '000001'), ('3', '000000'), ('39', '40'), ('4', '000000000100'), ('41', 'T1      '),
 ('42', 'M1             '), ('7', '0101120000'), ('t', '0210')]
>>> response_mti("0800"), response_mti("0421"), response_mti("0210")
('0810', '0430', '0210')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ledger.engine import Ledger
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.pins import PinChecker
from ledger.loyalty.vouchers import Desk
from specs.vocabulary import Fields, response_mti
from switch.config import ListenerConfig
from switch.dedup import DedupKey, ResponseReceipt
from switch.terminals import Terminal, TerminalStore

# What a handler returns for a request that gets no response: its outcome is unknown (sent to the
# database, the connection lost, not learned within the bound). A 91/96 would say "nothing was
# posted", which may be false; silence makes the terminal retransmit, and the retransmission is
# answered with the truth (specs/HOST-INTERFACE.md, responses 91 and 96).
NO_RESPONSE: Fields = {}

# specs/HOST-INTERFACE.md §5.2: every response echoes these of its request where present; 0810 its own set.
ECHO_FIELDS = ("3", "4", "7", "11", "41", "42")
ECHO_FIELDS_NETMGMT = ("7", "11", "41", "70")


def response_to(request: Fields, code: str, **extra: str) -> Fields:
    """A response to ``request`` with response code ``code``, echoing what it must."""
    mti = request["t"]
    echo = ECHO_FIELDS_NETMGMT if mti[:2] == "08" else ECHO_FIELDS
    out: Fields = {"t": response_mti(mti)}
    for name in echo:
        if name in request:
            out[name] = request[name]
    out["39"] = code
    out.update(extra)
    return out


@dataclass(init=False)  # an __init__ of its own: see ledger.commands
class RequestContext:
    """One request as a handler sees it (the terminal is known, active and authenticated)."""

    fields: Fields
    mti: str
    processing_code: str | None
    listener: ListenerConfig
    peer: str
    terminal: Terminal | None
    terminals: TerminalStore
    ledger: Ledger
    pool: asyncpg.Pool
    log: Any
    rrn: str | None = None  # switch-assigned retrieval reference number (field 37), financial only
    dedup_key: DedupKey | None = None
    response_receipt: ResponseReceipt | None = field(default=None, repr=False)
    loyalty: Loyalty | None = None
    # Set by a handler whose answer is an earlier identical request's (for the request log; see
    # switch.routing.CHECKS_DUPLICATES). Whether the pipeline stores it is the receipt's `stored`.
    replayed: bool = False
    # Top-up cards' master key and guessing bounds (None: no master key, cards cannot be redeemed).
    vouchers: Desk | None = None
    pins: PinChecker | None = None  # PIN checks (field 52/110): the PIN key and the tries bound
    chip_data_kept: bool = True  # [security] chip_data_keep_days > 0: what a dispute needs is kept

    def __init__(self, fields: Fields, mti: str, processing_code: str | None, listener: ListenerConfig, peer: str,
                 terminal: Terminal | None, terminals: TerminalStore, ledger: Ledger, pool: asyncpg.Pool,
                 log: Any, rrn: str | None = None, dedup_key: DedupKey | None = None,
                 response_receipt: ResponseReceipt | None = None, loyalty: Loyalty | None = None,
                 replayed: bool = False, vouchers: Desk | None = None, pins: PinChecker | None = None,
                 chip_data_kept: bool = True) -> None:
        self.fields = fields
        self.mti = mti
        self.processing_code = processing_code
        self.listener = listener
        self.peer = peer
        self.terminal = terminal
        self.terminals = terminals
        self.ledger = ledger
        self.pool = pool
        self.log = log
        self.rrn = rrn
        self.dedup_key = dedup_key
        self.response_receipt = response_receipt
        self.loyalty = loyalty
        self.replayed = replayed
        self.vouchers = vouchers
        self.pins = pins
        self.chip_data_kept = chip_data_kept

    def reply(self, code: str, **extra: str) -> Fields:
        """The response with ``code``: echoed keys, the RRN when assigned, and ``extra`` fields."""
        out = response_to(self.fields, code)
        if self.rrn is not None:
            out["37"] = self.rrn
        out.update(extra)
        return out

    def receipt(self, build: Callable[[Any], Fields]) -> ResponseReceipt:
        """A receipt function for ``ledger.post(cmd, receipt=...)`` storing the response with the posting."""
        assert self.dedup_key is not None, "only deduplicated (financial) requests store receipts"
        self.response_receipt = ResponseReceipt(self.dedup_key, build)
        return self.response_receipt
