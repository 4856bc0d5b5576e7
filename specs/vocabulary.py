"""The ISO 8583 words the switch, its handlers and the tools share, each defined once.

The field-dictionary type, the response codes (field 39) with one name each and
what each means (specs/HOST-INTERFACE.md §8 says the same, and a test checks it),
network management codes (field 70), the response MTI of a request, and the
duplicate key of a request: terminal id (41), STAN (11), transmission date-time (7).

Plain data and functions, no imports from ``switch/`` or ``ledger/``: the tools
talk to the daemon over TCP only and may import ``specs/``.

>>> response_mti("0200"), response_mti("0421"), MEANINGS[SYSTEM_MALFUNCTION]
('0210', '0430', 'system malfunction: nothing was posted')
>>> duplicate_key({"t": "0200", "7": "0101120000", "11": "000042", "41": "T1      "})
('T1', '000042', '0101120000')
>>> request_key("T1", "000042", "0101120000"), receipt_key("T1", "000042", "0101120000")
('T1|000042|0101120000', 'iso:T1:000042:0101120000')
"""

from __future__ import annotations

from collections.abc import Mapping

# A message as decoded: field number (and "t" for the MTI, "p"/"1" for bitmaps) -> value.
# Binary fields are carried as hexadecimal text.
Fields = dict[str, str]

# ---------------------------------------------------------------- response codes (field 39)

APPROVED = "00"
INVALID_MERCHANT = "03"  # also: terminal unknown or inactive
DO_NOT_HONOUR = "05"
INVALID_TRANSACTION = "12"
INVALID_AMOUNT = "13"
INVALID_CARD = "14"
ORIGINAL_NOT_FOUND = "25"
FORMAT_ERROR = "30"
FUNCTION_NOT_SUPPORTED = "40"
INSUFFICIENT_FUNDS = "51"
EXPIRED_CARD = "54"
INCORRECT_PIN = "55"
NOT_PERMITTED = "58"  # also: a financial request before sign-on
EXCEEDS_LIMIT = "61"
RESTRICTED_CARD = "62"
SECURITY_VIOLATION = "63"
PIN_TRIES_EXCEEDED = "75"
CUTOFF_IN_PROGRESS = "90"
SYSTEM_UNAVAILABLE = "91"
DUPLICATE_TRANSMISSION = "94"
RECONCILE_ERROR = "95"  # a terminal batch out of balance
SYSTEM_MALFUNCTION = "96"

# Response code -> what it means, as specs/HOST-INTERFACE.md §8 says it.
MEANINGS: dict[str, str] = {
    APPROVED: "approved",
    INVALID_MERCHANT: "invalid merchant (also: terminal unknown or inactive)",
    DO_NOT_HONOUR: "do not honour",
    INVALID_TRANSACTION: "invalid transaction",
    INVALID_AMOUNT: "invalid amount",
    INVALID_CARD: "invalid card",
    ORIGINAL_NOT_FOUND: "original not found",
    FORMAT_ERROR: "format error",
    FUNCTION_NOT_SUPPORTED: "function not supported",
    INSUFFICIENT_FUNDS: "insufficient points or funds",
    EXPIRED_CARD: "expired card",
    INCORRECT_PIN: "incorrect PIN",
    NOT_PERMITTED: "not permitted on terminal (also: financial request before sign-on)",
    EXCEEDS_LIMIT: "exceeds limit",
    RESTRICTED_CARD: "restricted (blocked) card",
    SECURITY_VIOLATION: "security violation (bad or missing MAC; a terminal without a MAC key, which the platform "
                        "refuses by default; a sign-off from a connection that did not sign the terminal on)",
    PIN_TRIES_EXCEEDED: "PIN tries exceeded",
    CUTOFF_IN_PROGRESS: "cut-off in progress",
    SYSTEM_UNAVAILABLE: "system unavailable: nothing was posted",
    DUPLICATE_TRANSMISSION: "duplicate transmission (same key, different content)",
    RECONCILE_ERROR: "reconcile error (batch out of balance)",
    SYSTEM_MALFUNCTION: "system malfunction: nothing was posted",
}

# ---------------------------------------------------------------- network management (field 70)

SIGN_ON = "001"
SIGN_OFF = "002"
ECHO = "301"

# ---------------------------------------------------------------- fields and MTIs

TRANSMITTED = "7"  # transmission date-time, MMDDhhmmss
STAN = "11"
TERMINAL_ID = "41"  # 8 characters, space-padded: trailing spaces are not significant
MAC_FIELDS = ("64", "128")  # 128 when a secondary bitmap is present, else 64


def response_mti(mti: str) -> str:
    """Request MTI -> response MTI: function digit made odd, a repeat (xx21) answered as the original."""
    assert len(mti) == 4 and mti.isdigit(), "MTI is 4 digits"
    origin = "0" if mti[3] == "1" else mti[3]
    return mti[:2] + str(int(mti[2]) | 1) + origin


# ---------------------------------------------------------------- the duplicate key

# A request is the same request when its terminal id (trailing spaces dropped), STAN and
# transmission date-time are. Two spellings of that key are on record: the loyalty
# transaction's (journals, loyalty.transactions) and the switch's stored response's
# (ledger.receipts). Both are made here and nowhere else.
DUPLICATE_KEY_FIELDS = (TERMINAL_ID, STAN, TRANSMITTED)
RECEIPT_KEY_PREFIX = "iso:"


def duplicate_key(fields: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(terminal id without padding, STAN, transmission date-time), or None when one is absent."""
    try:
        return fields[TERMINAL_ID].rstrip(" "), fields[STAN], fields[TRANSMITTED]
    except KeyError:
        return None


def request_key(terminal_id: str, stan: str, transmitted: str) -> str:
    """The loyalty transaction's idempotency key: ``TID|STAN|F7``."""
    return f"{terminal_id}|{stan}|{transmitted}"


def receipt_key(terminal_id: str, stan: str, transmitted: str) -> str:
    """Where the switch stores a request's response: ``iso:TID:STAN:F7``."""
    return f"{RECEIPT_KEY_PREFIX}{terminal_id}:{stan}:{transmitted}"


def receipt_key_of(key: str) -> str | None:
    """The receipt key of the request whose loyalty transaction key is ``key`` (None if not one).

    >>> receipt_key_of("T0000001|000042|0101120000"), receipt_key_of("other")
    ('iso:T0000001:000042:0101120000', None)
    """
    parts = key.split("|")
    return receipt_key(*parts) if len(parts) == 3 else None
