"""Message kinds the load generator can mix, one table entry each (specs/HOST-INTERFACE.md §6 table).

A kind says which MTI and processing code to send, whether it needs a card
(field 2) and which amount range to draw from. Adding a kind is adding a row
to ``KINDS``; ``build_fields`` turns a kind plus per-request values into the
decoded field dict.

>>> parse_mix("purchase=60,redeem=15")
[('purchase', 60), ('redeem', 15)]
>>> sorted(build_fields(KINDS["echo"], stan="000042", tid="T0000001", mid="M1", now="0309140507"))
['11', '41', '7', '70', 't']

Void and refund (``compensates``) name an earlier approved original: the
caller passes its RRN (field 37), the account it concerned (``xx`` of
02xx00 / 20xx00, see ``ORIGINAL_ACCOUNT``) and the amount.

>>> f = build_fields(KINDS["void"], stan="000043", tid="T1", mid="M1", now="0309140507",
...                  pan="6212345678901232", amount=250, account="65", rrn="000000000123")
>>> f["3"], f["4"], f["37"]
('026500', '000000000250', '000000000123')
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from specs.vocabulary import ECHO, Fields
from tools._msg import pad_mid, pad_tid

EXCHANGE_TARGET = "XCHG"  # the program exchanges go into: whoever mixes them provisions it and a rate


@dataclass(frozen=True)
class Kind:
    mti: str
    proc: str = ""  # field 3; empty for network management
    card: bool = False  # needs field 2 (a PAN from --pans)
    amount_min: int = 0  # field 4 drawn uniformly from [min, max]; absent when max == 0
    amount_max: int = 0
    currency: str = ""  # field 49 when non-empty
    extra: dict[str, str] = field(default_factory=dict)  # fixed fields, e.g. 70
    # Void/refund: needs an approved original (its RRN, account and amount); xx of field 3
    # (02xx00, 20xx00) is the original's account.
    compensates: bool = False
    # A top-up card redemption: field 48 names a card (serial, code) from --vouchers, each sent once;
    # field 4 is the card's points.
    voucher: bool = False

    @property
    def financial(self) -> bool:
        return not self.mti.startswith("08")


KINDS: dict[str, Kind] = {
    "echo": Kind("0800", extra={"70": ECHO}),
    "purchase": Kind("0200", "000000", card=True, amount_min=100, amount_max=50_000, currency="156"),
    "redeem": Kind("0200", "006500", card=True, amount_min=1, amount_max=100),
    "sv-purchase": Kind("0200", "006000", card=True, amount_min=100, amount_max=5_000, currency="156"),
    "topup": Kind("0200", "210065", card=True, amount_min=100, amount_max=1_000),
    "load": Kind("0200", "210060", card=True, amount_min=1_000, amount_max=10_000, currency="156"),
    "inquiry": Kind("0200", "310000", card=True, currency="156"),
    "lottery": Kind("0200", "906500", card=True, amount_min=1, amount_max=10),
    "voucher": Kind("0200", "210065", card=True, voucher=True),
    # Points of the merchant's program into program EXCHANGE_TARGET's (field 48 tag XP).
    "exchange": Kind("0200", "406565", card=True, amount_min=1, amount_max=100, extra={"48": "XP004XCHG"}),
    # Amounts come from the original: the full amount for a void, part of it for a refund.
    "void": Kind("0200", "020000", card=True, compensates=True),
    "refund": Kind("0200", "200000", card=True, compensates=True),
}

# Kinds whose approvals can be voided, with the account (xx) a void/refund of them names
# (specs/HOST-INTERFACE.md §6: 00 purchase-earn, 65 redeem or top-up, 60 stored-value purchase or load).
ORIGINAL_ACCOUNT: dict[str, str] = {
    "purchase": "00", "redeem": "65", "topup": "65", "sv-purchase": "60", "load": "60",
}
VOIDABLE = frozenset(ORIGINAL_ACCOUNT)
# Top-ups and loads can be voided, not refunded; lottery draws neither.
REFUNDABLE = frozenset({"purchase", "redeem", "sv-purchase"})


def parse_mix(text: str) -> list[tuple[str, int]]:
    """Parse ``name=weight,...`` (a bare ``name`` weighs 1); ValueError on unknown names.

    >>> parse_mix("echo")
    [('echo', 1)]
    """
    mix: list[tuple[str, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, weight_text = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise ValueError(f"unknown message kind {name!r}; known: {', '.join(KINDS)}")
        try:
            weight = int(weight_text) if weight_text else 1
        except ValueError:
            raise ValueError(f"weight of {name!r} must be an integer, got {weight_text!r}") from None
        if weight < 0:
            raise ValueError(f"weight of {name!r} must be >= 0")
        mix.append((name, weight))
    if not mix or sum(w for _, w in mix) == 0:
        raise ValueError("the mix needs at least one kind with a positive weight")
    return mix


class Chooser:
    """Weighted choice of a kind name from a parsed mix, with its own seeded RNG."""

    def __init__(self, mix: list[tuple[str, int]], rng: random.Random) -> None:
        self._names = [n for n, w in mix if w > 0]
        self._weights = [w for _n, w in mix if w > 0]
        self._rng = rng

    def __call__(self) -> str:
        if len(self._names) == 1:
            return self._names[0]
        return self._rng.choices(self._names, self._weights)[0]


def build_fields(
    kind: Kind,
    *,
    stan: str,
    tid: str,
    mid: str,
    now: str,
    pan: str = "",
    amount: int = 0,
    account: str = "00",
    rrn: str = "",
    currency: str = "",
    voucher: tuple[str, str] | None = None,
) -> Fields:
    """Decoded fields for one request of ``kind`` (no MAC; that is added at encoding).

    ``account``, ``rrn`` and ``currency`` are for void/refund only: xx of field 3, field 37
    and field 49 (the original's, if it had one). ``voucher``: a top-up card's (serial, code), in
    field 48's tags VS and VC.
    """
    fields: Fields = {"t": kind.mti, "7": now, "11": stan, "41": pad_tid(tid)}
    if kind.financial:
        if kind.card:
            if not pan:
                raise ValueError(f"message kind for {kind.mti}/{kind.proc} needs a PAN (--pans)")
            fields["2"] = pan
        fields["3"] = kind.proc
        fields["4"] = f"{amount:012d}"
        fields["42"] = pad_mid(mid)
        if kind.currency:
            fields["49"] = kind.currency
        if kind.compensates:
            fields["3"] = kind.proc[:2] + account + kind.proc[4:]
            if rrn:
                fields["37"] = rrn
            if currency:
                fields["49"] = currency
        if voucher is not None:
            serial, code = voucher
            fields["48"] = f"VS{len(serial):03d}{serial}VC{len(code):03d}{code}"
    fields.update(kind.extra)
    return fields
