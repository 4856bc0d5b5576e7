"""Duplicate detection for financial requests, persistent in ``ledger.receipts``.

The idempotency key of a financial request (0100, 0200, 0220/0221, 0400, 0420/0421, 0500) is
(terminal id 41 without padding, STAN 11, transmission date-time 7). Its
content hash is SHA-256 over the request's fields, MAC and bitmaps excluded
(a repeat advice 0421 counts as its 0420). The stored payload is the response's
fields as JSON, without MAC or bitmaps: a replay is encoded again with the
listener's spec and MACed with the terminal's current key, so it is the
original byte for byte apart from the MAC.

- same key, same content: the stored response is replayed, nothing is posted;
- same key, other content: 94 (duplicate transmission), nothing stored.

Handlers that post give the ledger a :class:`ResponseReceipt`, which builds
the response from the posting's result and stores it in the same transaction.
The loyalty handlers instead store the key and content hash *by reference* to
the journal they post (no payload): the journal records everything their
response says, and a retransmission is answered from it (same content) or 94.
Everything else the switch answers after the duplicate check (declines, 40)
is stored by the server with :func:`store`.

>>> req = {"t": "0200", "p": "7234", "3": "000000", "7": "0101120000", "11": "000042", "41": "T1      ",
...        "64": "00FF00FF00FF00FF"}
>>> key_for(req).idempotency_key
'iso:T1:000042:0101120000'
>>> key_for({**req, "64": "1111111111111111"}) == key_for(req)
True
>>> key_for({**req, "t": "0800"}) is None
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.accounts import StoredReceipt, put_receipt, read_receipt
from ledger.coalesce import Coalescer
from ledger.commands import Result  # noqa: F401  (the doctests use it)
from ledger.engine import Receipt
from specs.vocabulary import Fields, duplicate_key, receipt_key
from switch.codec import MAC_FIELDS, STRUCTURAL

_json_str = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str (C)
FINANCIAL_MTIS = frozenset({"0100", "0200", "0220", "0400", "0420", "0500"})
_PAYLOAD_VERSION = 1


@dataclass(init=False, unsafe_hash=True)  # own __init__, not frozen: see ledger.commands
class DedupKey:
    """Where a request's response is stored, and what identifies its content."""

    idempotency_key: str
    content_hash: bytes

    def __init__(self, idempotency_key: str, content_hash: bytes) -> None:
        self.idempotency_key = idempotency_key
        self.content_hash = content_hash


def content_hash(fields: Fields) -> bytes:
    """SHA-256 over the request's fields (MTI normalised), MAC and bitmaps excluded.

    The hashed text is ``json.dumps(sorted(items), separators=(",", ":"))`` (stored
    hashes depend on it), written out with the json module's own string encoder.
    """
    # (The pipeline has already made a repeat 0421 into its 0420: they hash alike.)
    canon = sorted((k, v) for k, v in fields.items() if k not in STRUCTURAL and k not in MAC_FIELDS)
    if all(type(k) is str and type(v) is str for k, v in canon):
        blob = "[" + ",".join(f"[{_json_str(k)},{_json_str(v)}]" for k, v in canon) + "]"
    else:
        blob = json.dumps(canon, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).digest()


def key_for(fields: Fields) -> DedupKey | None:
    """The request's key, or None when it is not deduplicated (not financial, or no 41/11/7)."""
    if fields.get("t") not in FINANCIAL_MTIS:
        return None
    key = duplicate_key(fields)
    return None if key is None else DedupKey(receipt_key(*key), content_hash(fields))


def encode_payload(response: Fields) -> bytes:
    """The stored form of a response: its fields as JSON, without MAC or bitmaps.

    >>> decode_payload(encode_payload({"t": "0210", "39": "40", "64": "AB" * 8}))
    {'39': '40', 't': '0210'}
    """
    body = {k: v for k, v in response.items() if k not in STRUCTURAL and k not in MAC_FIELDS}
    if all(type(k) is str and type(v) is str for k, v in body.items()):
        # json.dumps(..., sort_keys=True) written out with the json module's string encoder.
        inner = ",".join(f"{_json_str(k)}:{_json_str(v)}" for k, v in sorted(body.items()))
        return f'{{"fields":{{{inner}}},"v":{_PAYLOAD_VERSION}}}'.encode()
    return json.dumps({"v": _PAYLOAD_VERSION, "fields": body}, separators=(",", ":"), sort_keys=True).encode()


def decode_payload(payload: bytes) -> Fields:
    """A stored response's fields (ValueError if the payload is not one of ours)."""
    data = json.loads(payload)
    if not isinstance(data, dict) or data.get("v") != _PAYLOAD_VERSION or not isinstance(data.get("fields"), dict):
        raise ValueError("receipt payload is not a stored switch response")
    return {str(k): str(v) for k, v in data["fields"].items()}


@dataclass(frozen=True)
class Replay:
    """Answer with this stored response."""

    response: Fields


@dataclass(frozen=True)
class Conflict:
    """Same key, different content: answer 94."""


Outcome = Replay | Conflict | None


def judge(key: DedupKey, stored: StoredReceipt) -> Replay | Conflict | None:
    """What a receipt stored under the key says of this request: a Replay of the stored answer, a
    Conflict (other content), or None when it was stored by reference to its journal."""
    stored_hash, payload = stored
    if stored_hash != key.content_hash:
        return Conflict()
    if payload is None:  # stored with its journal: the handler answers from the journal
        return None
    return Replay(decode_payload(payload))


async def lookup(receipts: Coalescer, key: DedupKey) -> Outcome:
    """None for a new request; a Replay or a Conflict for one seen before.

    ``receipts``: a :func:`ledger.accounts.receipt_reader` (concurrent lookups share one statement).
    """
    stored = await read_receipt(receipts, key.idempotency_key)
    return None if stored is None else judge(key, stored)


async def store(conn: asyncpg.Pool | asyncpg.Connection, key: DedupKey, response: Fields) -> Replay | Conflict:
    """Store a response that posted nothing; first writer wins.

    Returns what is stored now: normally our own response; another's when a
    concurrent retransmission got there first (send that, so both answers
    agree); a Conflict when the key was taken by different content.
    """
    stored = await put_receipt(conn, key.idempotency_key, key.content_hash, encode_payload(response))
    # A receipt stored with a journal by a concurrent identical request: our response was
    # rebuilt from that same journal, so it is the answer.
    return judge(key, stored) or Replay(response)


class ResponseReceipt:
    """A ledger receipt function that builds the response from the posting's result.

    >>> rr = ResponseReceipt(DedupKey("iso:T1:1:2", b"h"), lambda res: {"t": "0210", "39": "00"})
    >>> from ledger.commands import Status
    >>> rr(Result(Status.POSTED, journal_id=7)).payload == encode_payload({"t": "0210", "39": "00"})
    True
    >>> rr.finish(Result(Status.POSTED, journal_id=7)), rr.stored
    ({'t': '0210', '39': '00'}, True)

    Usage in a handler::

        rr = ctx.receipt(lambda res: build_response(ctx, res))
        result = await ctx.ledger.post(command, receipt=rr)
        return rr.finish(result)

    ``finish`` returns the response that was stored with the posting when the
    final result is the one it was built from (a batch may be retried, or fail
    after the receipt was built); otherwise it builds a fresh response and
    ``stored`` stays False, so the server stores it. ``stored`` tells the
    server the response is already in the receipts table.
    """

    def __init__(self, key: DedupKey, build: Callable[[Any], Fields]) -> None:
        self.key = key
        self.build = build
        self.stored = False
        # Any result type with equality: a ledger Result, or a loyalty Outcome.
        self._built: tuple[Any, Fields] | None = None

    def __call__(self, result: Any) -> Receipt | None:
        response = self.build(result)
        self._built = (result, response)
        return Receipt(self.key.idempotency_key, self.key.content_hash, encode_payload(response))

    def finish(self, result: Any) -> Fields:
        """The response to send for the posting's final ``result``."""
        if self._built is not None and self._built[0] == result:
            self.stored = True
            return self._built[1]
        self.stored = False
        return self.build(result)
