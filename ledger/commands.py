"""Ledger commands and results: plain data, validated before they reach SQL.

A command is one idempotent unit of work. Its identity is the idempotency
key; its content (what :func:`content_hash` covers) is its kind, legs,
reference, amount and hold timeout. Metadata is carried along but is not part
of the content: a retransmission may differ in free-form annotations without
being a conflict.

>>> cmd = transfer("k1", [Leg(debit_account_id=1, credit_account_id=2, amount=500)])
>>> validate(cmd, legs_max=16) is None
True
>>> validate(transfer("k2", [Leg(1, 2, 0)]), legs_max=16)
'leg 1: amount must be a positive integer, got 0'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

IDEMPOTENCY_KEY_MAX = 128
AMOUNT_MAX = 2**62  # far below bigint overflow even after summing a batch of legs


class Kind(StrEnum):
    TRANSFER = "transfer"
    HOLD = "hold"
    CAPTURE = "capture"
    VOID = "void"
    EXPIRE = "expire"
    REVERSE = "reverse"


class Status(StrEnum):
    POSTED = "posted"  # written now
    EXISTS = "exists"  # written before under this key (or: the first reversal of this journal)
    CONFLICT = "conflict"  # key reused with different content, or guard taken (reason "guard"); nothing written
    DECLINED = "declined"  # a business rule said no (limit, frozen account, expired hold)
    INVALID = "invalid"  # the command itself is wrong (unknown account, asset mismatch, ...)
    ERROR = "error"  # the system failed (database down, timeout); outcome not written

    @property
    def ok(self) -> bool:
        return self in (Status.POSTED, Status.EXISTS)


# The value classes built for every request (here, in ledger.engine, ledger.loyalty and
# switch) are dataclasses with an __init__ of their own, not frozen=True: a frozen
# dataclass's __init__ sets each field through object.__setattr__, several times the cost of
# a plain assignment, and ~15 such objects are made per request. They are values all the
# same: nothing assigns to them after __init__, and unsafe_hash keeps frozen's hash of the
# fields. __init__'s parameters are the fields, in order, with their defaults
# (tests/test_value_classes.py checks it).
@dataclass(init=False, unsafe_hash=True)
class Leg:
    """Move ``amount`` (> 0, integer minor units or points) from debit to credit."""

    debit_account_id: int
    credit_account_id: int
    amount: int

    def __init__(self, debit_account_id: int, credit_account_id: int, amount: int) -> None:
        self.debit_account_id = debit_account_id
        self.credit_account_id = credit_account_id
        self.amount = amount


@dataclass(init=False, unsafe_hash=True)
class Command:
    idempotency_key: str
    kind: Kind
    legs: tuple[Leg, ...]
    ref: int | None  # reverse: journal id; capture/void/expire: hold id
    amount: int | None  # capture: amount to capture (None = whole hold)
    timeout_s: int | None  # hold: seconds until it may expire
    force: bool  # may take `guarded` accounts below zero (claw-backs only)
    metadata: dict[str, Any]
    # Optimistic concurrency: unique across journals like the key, but a command whose guard
    # is taken is a CONFLICT with reason "guard" (its writer decided on state that has since
    # changed: read again, decide again). Not part of the content: a retransmission posted
    # under its key is EXISTS whatever guard it names.
    guard: str | None

    def __init__(self, idempotency_key: str, kind: Kind, legs: tuple[Leg, ...] = (), ref: int | None = None,
                 amount: int | None = None, timeout_s: int | None = None, force: bool = False,
                 metadata: dict[str, Any] | None = None, guard: str | None = None) -> None:
        self.idempotency_key = idempotency_key
        self.kind = kind
        self.legs = legs
        self.ref = ref
        self.amount = amount
        self.timeout_s = timeout_s
        self.force = force
        self.metadata = {} if metadata is None else metadata
        self.guard = guard


@dataclass(init=False, unsafe_hash=True)
class Result:
    """What happened to one command. ``balances`` maps account id -> posted balance after."""

    status: Status
    journal_id: int | None
    detail: str | None  # for people
    reason: str | None  # for code: a decline's "limit", "inactive" or "expired"; a conflict's "guard"
    business_date: str | None
    balances: dict[int, int]

    def __init__(self, status: Status, journal_id: int | None = None, detail: str | None = None,
                 reason: str | None = None, business_date: str | None = None,
                 balances: dict[int, int] | None = None) -> None:
        self.status = status
        self.journal_id = journal_id
        self.detail = detail
        self.reason = reason
        self.business_date = business_date
        self.balances = {} if balances is None else balances

    @property
    def ok(self) -> bool:
        return self.status.ok


def transfer(key: str, legs: list[Leg] | tuple[Leg, ...], metadata: dict[str, Any] | None = None,
             force: bool = False, guard: str | None = None) -> Command:
    """A balanced posting of one or more legs; ``force`` lets it take guarded accounts below zero;
    ``guard`` (see :class:`Command`) makes it post only if no journal holds that guard yet."""
    return Command(key, Kind.TRANSFER, tuple(legs), force=force, metadata=metadata or {}, guard=guard)


def hold(key: str, leg: Leg, timeout_s: int, metadata: dict[str, Any] | None = None) -> Command:
    """Reserve ``leg.amount`` on the debit side until captured, voided or expired."""
    return Command(key, Kind.HOLD, (leg,), timeout_s=timeout_s, metadata=metadata or {})


def capture(key: str, hold_id: int, amount: int | None = None, metadata: dict[str, Any] | None = None,
            legs: list[Leg] | tuple[Leg, ...] = ()) -> Command:
    """Post ``amount`` (default: all) of a pending hold and release the rest.

    ``legs``: more transfers posted in the same journal after the captured leg (a fee), as a
    transfer's legs: the capture posts all of them or nothing.
    """
    return Command(key, Kind.CAPTURE, tuple(legs), ref=hold_id, amount=amount, metadata=metadata or {})


def void(key: str, hold_id: int, metadata: dict[str, Any] | None = None) -> Command:
    """Release a pending hold without posting."""
    return Command(key, Kind.VOID, ref=hold_id, metadata=metadata or {})


def expire(key: str, hold_id: int) -> Command:
    """Release a pending hold whose time is up."""
    return Command(key, Kind.EXPIRE, ref=hold_id)


def reverse(key: str, journal_id: int, metadata: dict[str, Any] | None = None) -> Command:
    """Post the exact opposite of a journal, at most once."""
    return Command(key, Kind.REVERSE, ref=journal_id, metadata=metadata or {})


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= AMOUNT_MAX


def validate(cmd: Command, legs_max: int, hold_timeout_max_s: int = 365 * 86_400,
             check_metadata: bool = True) -> str | None:
    """Return a one-line reason the command is malformed, or None when it is well formed.

    ``check_metadata=False`` leaves the metadata to the caller (who serialises it anyway).
    """
    key = cmd.idempotency_key
    if not isinstance(key, str) or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        return f"idempotency key must be 1..{IDEMPOTENCY_KEY_MAX} characters"
    try:
        kind = Kind(cmd.kind)
    except ValueError:
        return f"unknown command kind {cmd.kind!r}"
    if cmd.force and kind is not Kind.TRANSFER:
        return "only a transfer may be forced"
    if cmd.guard is not None and (not isinstance(cmd.guard, str) or not 1 <= len(cmd.guard) <= IDEMPOTENCY_KEY_MAX):
        return f"a guard must be 1..{IDEMPOTENCY_KEY_MAX} characters"
    if kind in (Kind.TRANSFER, Kind.HOLD) or (kind is Kind.CAPTURE and cmd.legs):
        if not cmd.legs:
            return "a transfer needs at least one leg"
        # A capture's own leg counts: it is posted in the same journal.
        if len(cmd.legs) + (kind is Kind.CAPTURE) > legs_max:
            return f"too many legs: {len(cmd.legs) + 1} > {legs_max}"
        if len(cmd.legs) > legs_max:
            return f"too many legs: {len(cmd.legs)} > {legs_max}"
        if kind is Kind.HOLD and len(cmd.legs) != 1:
            return "a hold has exactly one leg"
        for n, leg in enumerate(cmd.legs, start=1):
            for name in ("debit_account_id", "credit_account_id"):
                v = getattr(leg, name)
                if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                    return f"leg {n}: {name} must be a positive integer, got {v!r}"
            if not _positive_int(leg.amount):
                return f"leg {n}: amount must be a positive integer, got {leg.amount!r}"
            if leg.debit_account_id == leg.credit_account_id:
                return f"leg {n}: debit and credit are the same account {leg.debit_account_id}"
        if kind is Kind.CAPTURE:
            problem = _reference_problem(cmd, kind)
            if problem is not None:
                return problem
        if kind is Kind.HOLD:
            t = cmd.timeout_s
            if not isinstance(t, int) or isinstance(t, bool) or not 0 < t <= hold_timeout_max_s:
                return f"hold timeout must be 1..{hold_timeout_max_s} seconds, got {t!r}"
    else:
        if cmd.legs:
            return f"a {kind.value} takes no legs"
        problem = _reference_problem(cmd, kind)
        if problem is not None:
            return problem
    if check_metadata and metadata_json(cmd) is None:
        return METADATA_NOT_JSON
    return None


def _reference_problem(cmd: Command, kind: Kind) -> str | None:
    if not isinstance(cmd.ref, int) or isinstance(cmd.ref, bool) or cmd.ref <= 0:
        return f"a {kind.value} needs a positive reference id, got {cmd.ref!r}"
    if cmd.amount is not None and (kind is not Kind.CAPTURE or not _positive_int(cmd.amount)):
        return f"amount must be a positive integer on a capture only, got {cmd.amount!r}"
    return None


METADATA_NOT_JSON = "metadata must be JSON-serialisable"


# json.dumps(x, separators=(",", ":")) builds this encoder on every call; the text is the same.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def metadata_json(cmd: Command) -> str | None:
    """The command's metadata as compact JSON, or None when it cannot be serialised."""
    try:
        return _COMPACT_JSON.encode(cmd.metadata)
    except (TypeError, ValueError):
        return None


def content_hash(cmd: Command) -> bytes:
    """SHA-256 over the command's content (not its key, not its metadata)."""
    body = [
        str(cmd.kind),
        [[leg.debit_account_id, leg.credit_account_id, leg.amount] for leg in cmd.legs],
        cmd.ref,
        cmd.amount,
        cmd.timeout_s,
        cmd.force,
    ]
    return hashlib.sha256(_COMPACT_JSON.encode(body).encode()).digest()
