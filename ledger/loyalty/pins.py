"""Members' PINs: kept as keyed one-way values, verified per card with a bounded number of tries.

A card's PIN value is HMAC-SHA-256 under the PIN key over the card's id and the PIN: it cannot be
reversed, a value copied onto another card does not match there, and without the PIN key (32
random bytes in ``loyalty.pin_keys``, sealed under the master key like every key at rest, so a
master-key rotation re-seals it, see ledger.sealed) nobody can even try PINs against it offline.

Who sets a PIN: the issuing merchant's operator with the member present (``switchd card pin set``,
the card's page), or the member (the member pages). A wrong PIN adds one to the card's count of
failed tries; a right one resets it; at the maximum the card takes no PIN (75) until an operator
unlocks it or sets a new PIN.

Which transactions need one: a programme's ``pin_required_for_redeem`` (redemptions and the
lottery, which spends points) and ``pin_required_for_sv`` (stored-value purchases, on by default),
for cards that have a PIN. A card without a PIN is not asked for one: it keeps working as it did
before PINs existed, until a PIN is set for it.

>>> value = pin_value(bytes(32), 7, "1234")
>>> len(value), value == pin_value(bytes(32), 8, "1234"), value == pin_value(bytes(32), 7, "1234")
(32, False, True)
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import asyncpg

from ledger import keys
from ledger.coalesce import Coalescer
from ledger.errors import SwitchdError
from ledger.loyalty import card_numbers
from ledger.sealed import PIN_KEY_AAD

PIN_KEY_BYTES = 32
PIN_DIGITS_MIN = 4
PIN_DIGITS_MAX = 12
SET_BY_LENGTH_MAX = 80
PIN_TRIES_MAX_DEFAULT = 3


class PinError(SwitchdError):
    """A PIN that cannot be set or checked; ``str()`` is one line and never holds the PIN."""


class Verdict(enum.Enum):
    """What a PIN try came to."""

    RIGHT = "right"
    WRONG = "wrong"
    LOCKED = "locked"  # tries exceeded: this one (the last allowed) or earlier ones


def check_pin(pin: str) -> None:
    """PinError unless ``pin`` is 4 to 12 decimal digits.

    >>> check_pin("12")
    Traceback (most recent call last):
    ...
    ledger.loyalty.pins.PinError: a PIN is 4 to 12 digits
    """
    if not (pin.isascii() and pin.isdigit() and PIN_DIGITS_MIN <= len(pin) <= PIN_DIGITS_MAX):
        raise PinError(f"a PIN is {PIN_DIGITS_MIN} to {PIN_DIGITS_MAX} digits")


def pin_value(pin_key: bytes, card_id: int, pin: str) -> bytes:
    """The keyed one-way value of ``pin`` for card ``card_id``."""
    return hmac.new(pin_key, f"switchd:pin:{card_id}:{pin}".encode(), hashlib.sha256).digest()


async def load_pin_key(conn: asyncpg.Connection | asyncpg.Pool, master_keys: tuple[bytes, ...],
                       create: bool = False) -> bytes | None:
    """The PIN key, unsealed; created (sealed under ``master_keys[0]``) when ``create`` and none exists."""
    sealed = await conn.fetchval("SELECT key_sealed FROM loyalty.pin_keys WHERE id = 1")
    if sealed is None and create:
        if not master_keys:
            raise PinError("cannot keep PINs: no master key configured "
                           "(set [security] master_key_file or the variable named by master_key_env)")
        fresh = keys.seal(master_keys[0], secrets.token_bytes(PIN_KEY_BYTES), PIN_KEY_AAD)
        await conn.execute("INSERT INTO loyalty.pin_keys(id, key_sealed) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                           fresh)
        sealed = await conn.fetchval("SELECT key_sealed FROM loyalty.pin_keys WHERE id = 1")
    if sealed is None:
        return None
    if not master_keys:
        raise PinError("cannot check PINs: no master key configured")
    try:
        return keys.unseal_any(master_keys, bytes(sealed), PIN_KEY_AAD)
    except keys.KeyStoreError:
        raise PinError("cannot open the PIN key: wrong master key") from None


async def card_id_of(conn: asyncpg.Connection | asyncpg.Pool, pan: str) -> int | None:
    """The card's id for a PAN (None when unknown)."""
    return await card_numbers.card_id_by_number(conn, pan)


async def set_pin(conn: asyncpg.Connection | asyncpg.Pool, master_keys: tuple[bytes, ...], card_id: int,
                  pin: str, set_by: str) -> None:
    """Set (or replace) a card's PIN; the count of failed tries starts again at 0."""
    check_pin(pin)
    if not 1 <= len(set_by) <= SET_BY_LENGTH_MAX:
        raise PinError(f"who sets a PIN is named in 1 to {SET_BY_LENGTH_MAX} characters")
    pin_key = await load_pin_key(conn, master_keys, create=True)
    assert pin_key is not None
    await conn.execute(
        "INSERT INTO loyalty.card_pins(card_id, pin_hash, set_by) VALUES ($1, $2, $3) "
        "ON CONFLICT (card_id) DO UPDATE SET pin_hash = EXCLUDED.pin_hash, failed_tries = 0, "
        "set_by = EXCLUDED.set_by, set_at = now()", card_id, pin_value(pin_key, card_id, pin), set_by)


async def clear_pin(conn: asyncpg.Connection | asyncpg.Pool, card_id: int) -> bool:
    """Remove a card's PIN; False when it had none."""
    return not (await conn.execute("DELETE FROM loyalty.card_pins WHERE card_id = $1", card_id)).endswith(" 0")


async def unlock(conn: asyncpg.Connection | asyncpg.Pool, card_id: int) -> bool:
    """Reset a card's failed tries; False when it has no PIN."""
    status = await conn.execute("UPDATE loyalty.card_pins SET failed_tries = 0 WHERE card_id = $1", card_id)
    return not status.endswith(" 0")


async def pin_status(conn: asyncpg.Connection | asyncpg.Pool, card_id: int) -> dict[str, object]:
    """Whether a card has a PIN, its failed tries, who set it and when (never the value)."""
    row = await conn.fetchrow("SELECT failed_tries, set_by, set_at FROM loyalty.card_pins WHERE card_id = $1",
                              card_id)
    if row is None:
        return {"pin": None}
    return {"pin": "set", "failed_tries": row["failed_tries"], "set_by": row["set_by"],
            "set_at": row["set_at"].isoformat()}


async def verify_pin(conn: asyncpg.Connection | asyncpg.Pool, pin_key: bytes, card_id: int, pin: str,
                     tries_max: int) -> Verdict:
    """Try ``pin`` on the card (which has a PIN): one statement counts the try, atomically."""
    row = await conn.fetchrow(
        "UPDATE loyalty.card_pins SET failed_tries = CASE WHEN pin_hash = $2 THEN 0 ELSE failed_tries + 1 END, "
        "tried_at = now() WHERE card_id = $1 AND failed_tries < $3 RETURNING pin_hash = $2 AS right, failed_tries",
        card_id, pin_value(pin_key, card_id, pin), tries_max)
    if row is None:
        return Verdict.LOCKED
    if row["right"]:
        return Verdict.RIGHT
    return Verdict.LOCKED if row["failed_tries"] >= tries_max else Verdict.WRONG


@dataclass(frozen=True)
class PinNeed:
    """A card as a PIN check sees it, for one merchant's programme."""

    card_id: int
    has_pin: bool
    required_for_redeem: bool
    required_for_sv: bool


# What PinChecker.need reads, for many requests at once (ledger.coalesce): the card by its
# number's keyed hash ($1), whether it has a PIN, and the PIN rules of merchant $2's programme.
_NEED_SQL = """
SELECT q.n, c.id, cp.card_id IS NOT NULL AS has_pin, coalesce(p.pin_required_for_redeem, false) AS r,
       coalesce(p.pin_required_for_sv, true) AS s
  FROM unnest($1::bytea[], $2::text[]) WITH ORDINALITY AS q(pan_hash, merchant_id, n)
  JOIN loyalty.cards c ON c.pan_hash = q.pan_hash
  LEFT JOIN loyalty.card_pins cp ON cp.card_id = c.id
  LEFT JOIN loyalty.merchants m ON m.merchant_id = q.merchant_id
  LEFT JOIN loyalty.programs p ON p.code = m.program
"""


async def pin_need(conn: asyncpg.Connection | asyncpg.Pool, pan: str, merchant_id: str,
                   vault: card_numbers.CardVault | None = None) -> PinNeed | None:
    """The card's PIN and the merchant's programme's PIN rules (None for an unknown card).
    ``vault``: the card-number keys when the caller holds them (else read: one more round trip)."""
    row = await conn.fetchrow(
        "SELECT c.id, cp.card_id IS NOT NULL AS has_pin, coalesce(p.pin_required_for_redeem, false) AS r, "
        "coalesce(p.pin_required_for_sv, true) AS s FROM loyalty.cards c "
        "LEFT JOIN loyalty.card_pins cp ON cp.card_id = c.id "
        "LEFT JOIN loyalty.merchants m ON m.merchant_id = $2 LEFT JOIN loyalty.programs p ON p.code = m.program "
        "WHERE c.pan_hash = $1", (vault or await card_numbers.vault(conn)).lookup_hash(pan), merchant_id)
    if row is None:
        return None
    return PinNeed(row["id"], row["has_pin"], row["r"], row["s"])


class PinChecker:
    """The daemon's PIN checks: the PIN key (unsealed once, kept in memory) and the tries bound."""

    def __init__(self, pool: asyncpg.Pool, master_keys: tuple[bytes, ...],
                 tries_max: int = PIN_TRIES_MAX_DEFAULT) -> None:
        self.pool = pool
        self.master_keys = master_keys
        self.tries_max = tries_max
        self._pin_key: bytes | None = None
        # The card-number keys, opened once: a PIN check is on the request path.
        self._vault: card_numbers.CardVault | None = None
        # Concurrent requests' PIN rules read together: every redemption and stored-value
        # purchase asks, most of them for cards without a PIN.
        self._needs = Coalescer(pool, _NEED_SQL)

    def __repr__(self) -> str:  # never the key
        return f"PinChecker(tries_max={self.tries_max})"

    async def need(self, pan: str, merchant_id: str) -> PinNeed | None:
        """See :func:`pin_need`."""
        if self._vault is None:
            self._vault = await card_numbers.vault(self.pool)
        row = await self._needs.fetch(self._vault.lookup_hash(pan), merchant_id)
        return None if row is None else PinNeed(row["id"], row["has_pin"], row["r"], row["s"])

    def coalescers(self) -> dict[str, Coalescer]:
        """The coalesced statements this uses, by name (for metrics)."""
        return {"pin_need": self._needs}

    async def verify(self, card_id: int, pin: str) -> Verdict:
        """See :func:`verify_pin`; PinError when the PIN key cannot be opened."""
        if self._pin_key is None:
            self._pin_key = await load_pin_key(self.pool, self.master_keys)
            if self._pin_key is None:
                raise PinError("no PIN key: no PIN was ever set")
        return await verify_pin(self.pool, self._pin_key, card_id, pin, self.tries_max)
