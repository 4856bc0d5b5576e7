"""Card numbers at rest: sealed, found by a keyed hash, shown masked.

A card's number (PAN) is stored three ways, none of them clear:

- ``pan_hash``: HMAC-SHA-256 of the digits under the *lookup key*: the card is found by it
  (an index probe, as the clear number was); without the key a stolen table cannot be
  searched by guessing numbers of a known BIN.
- ``pan_sealed``: AES-256-GCM of the digits under the *card data key*, bound to the row's
  hash (a blob copied onto another card fails to open). Only what must send the number on
  (the web seat voiding a transaction it took, the mall capturing an order) opens it.
- ``pan_masked``: first 6 and last 4 (all hidden below 13 digits): what every page, list and
  export shows.

Both keys are random, made once per database and stored in ``loyalty.card_keys`` sealed under
the master key (:mod:`ledger.keys`), which never enters the database. A process that touches
cards is given the master key once at start (:func:`set_master_key`: the daemon, the portal,
the CLI); :func:`vault` then opens the keys of the database it is asked about, once per
database.

>>> v = CardVault(bytes(32), bytes(range(32)))
>>> h = v.lookup_hash("6212340000000019")
>>> len(h), v.open(v.seal("6212340000000019", h), h)
(32, '6212340000000019')
>>> masked("6212340000000019")
'621234******0019'
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger import keys
from ledger.errors import SwitchdError
from ledger.loyalty.rules import mask_pan

_KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = b"\x01"
# The associated data the two keys are sealed with (ledger.sealed re-seals them on rotation).
AAD_DATA_KEY = b"loyalty.card_keys:data"
AAD_LOOKUP_KEY = b"loyalty.card_keys:lookup"
# Rows sealed per statement when converting clear numbers: bounded memory, short locks.
SEAL_CHUNK_ROWS = 1000

NO_MASTER_KEY = ("card numbers are sealed under the master key and none is configured: "
                 "set [security] master_key_file or the SWITCHD_MASTER_KEY environment variable")


class CardVaultError(SwitchdError):
    """A card-number key problem; ``str()`` is one line and never holds a number or a key."""


def masked(pan: str) -> str:
    """The display form kept beside the sealed number (ledger.loyalty.rules.mask_pan)."""
    return mask_pan(pan)


@dataclass(frozen=True, repr=False)
class CardVault:
    """The two card-number keys of one database, open. ``repr`` shows no key."""

    data_key: bytes
    lookup_key: bytes

    def __repr__(self) -> str:
        return "CardVault(<keys hidden>)"

    def lookup_hash(self, pan: str) -> bytes:
        """The keyed hash a card is found by."""
        return hmac.digest(self.lookup_key, pan.encode("ascii", "replace"), hashlib.sha256)

    def seal(self, pan: str, pan_hash: bytes) -> bytes:
        """The number encrypted, bound to its hash: version || nonce || ciphertext || tag."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _VERSION + nonce + AESGCM(self.data_key).encrypt(nonce, pan.encode("ascii"), pan_hash)

    def open(self, blob: bytes, pan_hash: bytes) -> str:
        """The number back from :meth:`seal`; CardVaultError when it does not open."""
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _VERSION:
            raise CardVaultError("card number: sealed value malformed")
        try:
            clear = AESGCM(self.data_key).decrypt(blob[1:1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES:], pan_hash)
        except InvalidTag:
            raise CardVaultError("card number: sealed value does not open (wrong key, or moved to another row)") \
                from None
        return clear.decode("ascii")

    def columns(self, pan: str) -> tuple[bytes, bytes, str]:
        """(pan_hash, pan_sealed, pan_masked) for a new card row."""
        h = self.lookup_hash(pan)
        return h, self.seal(pan, h), masked(pan)


class _Keyring:
    """The process's master key and the vaults it opened, by their sealed form."""

    def __init__(self) -> None:
        self.master_key: bytes | None = None
        self.previous_keys: tuple[bytes, ...] = ()  # during a master-key rotation
        self.opened: dict[tuple[bytes, bytes], CardVault] = {}


_KEYRING = _Keyring()


def set_master_key(master_key: bytes | None, previous_keys: tuple[bytes, ...] = ()) -> None:
    """Give this process the master key (None forgets it), and during a rotation the previous
    ones the card-number keys may still be sealed under. Called at start (and on a reload) by
    the daemon, the portal and the CLI, with the keys their configuration names."""
    for key in (master_key, *previous_keys):
        if key is not None and len(key) != keys.MASTER_KEY_BYTES:
            raise CardVaultError(f"master key must be {keys.MASTER_KEY_BYTES} bytes")
    _KEYRING.master_key = master_key
    _KEYRING.previous_keys = tuple(previous_keys)


def has_master_key() -> bool:
    """True when this process was given a master key."""
    return _KEYRING.master_key is not None


async def vault(conn: asyncpg.Connection | asyncpg.Pool) -> CardVault:
    """The open card-number keys of ``conn``'s database; made on first use.

    Costs one small read (the sealed keys' row); the keys are opened once per process.
    """
    master = _KEYRING.master_key
    if master is None:
        raise CardVaultError(NO_MASTER_KEY)
    row = await conn.fetchrow("SELECT sealed_data_key, sealed_lookup_key FROM loyalty.card_keys WHERE id = 1")
    if row is None:
        row = await _make_keys(conn, master)
    sealed = (bytes(row["sealed_data_key"]), bytes(row["sealed_lookup_key"]))
    found = _KEYRING.opened.get(sealed)
    if found is None:
        # Opened once per process and sealed form: a rotation re-seals the same two keys.
        every = (master, *_KEYRING.previous_keys)
        try:
            found = CardVault(keys.unseal_any(every, sealed[0], AAD_DATA_KEY),
                              keys.unseal_any(every, sealed[1], AAD_LOOKUP_KEY))
        except keys.KeyStoreError:
            raise CardVaultError("card number keys: the master key given is not the one they are sealed under") \
                from None
        _KEYRING.opened[sealed] = found
    return found


async def _make_keys(conn: asyncpg.Connection | asyncpg.Pool, master: bytes) -> asyncpg.Record:
    data = keys.seal(master, secrets.token_bytes(_KEY_BYTES), AAD_DATA_KEY)
    lookup = keys.seal(master, secrets.token_bytes(_KEY_BYTES), AAD_LOOKUP_KEY)
    try:
        # Two processes making them at once: one row wins, both then use it.
        await conn.execute("INSERT INTO loyalty.card_keys(id, sealed_data_key, sealed_lookup_key) "
                           "VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING", data, lookup)
    except asyncpg.InsufficientPrivilegeError:
        raise CardVaultError("card number keys are not made yet, and this role may not make them: "
                             "run switchd db upgrade (with the master key) as the owner first") from None
    row = await conn.fetchrow("SELECT sealed_data_key, sealed_lookup_key FROM loyalty.card_keys WHERE id = 1")
    assert row is not None
    return row


async def check_ready(conn: asyncpg.Connection | asyncpg.Pool) -> CardVault:
    """What the daemon and the portal check at start: the master key opens this database's
    card-number keys (made now when there are none), and no card number is left in clear."""
    found = await vault(conn)
    left = await clear_numbers_left(conn)
    if left:
        raise CardVaultError(f"{left} card number(s) are still stored in clear: run switchd db upgrade "
                             "with the master key to seal them")
    return found


async def card_id_by_number(conn: asyncpg.Connection | asyncpg.Pool, pan: str) -> int | None:
    """The row id of the card with this number, or None."""
    if not (pan.isascii() and pan.isdigit()):
        return None
    v = await vault(conn)
    value = await conn.fetchval("SELECT id FROM loyalty.cards WHERE pan_hash = $1", v.lookup_hash(pan))
    return None if value is None else int(value)


async def number_of(conn: asyncpg.Connection | asyncpg.Pool, card_id: int) -> str | None:
    """The clear number of card ``card_id`` (to send on, never to show), or None."""
    row = await conn.fetchrow("SELECT pan_hash, pan_sealed FROM loyalty.cards WHERE id = $1", card_id)
    if row is None:
        return None
    return (await vault(conn)).open(bytes(row["pan_sealed"]), bytes(row["pan_hash"]))


async def clear_numbers_left(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """How many cards still hold their number in clear (rows from before sealing)."""
    return int(await conn.fetchval("SELECT count(*) FROM loyalty.cards WHERE pan IS NOT NULL"))


async def seal_clear_numbers(conn: asyncpg.Connection) -> int:
    """Seal every card number still held in clear; returns how many were sealed.

    Resumable: each chunk is its own transaction, and a row once sealed holds no clear
    number, so an interrupted run is finished by running it again.
    """
    v = await vault(conn)
    done = 0
    while True:
        async with conn.transaction():
            rows = await conn.fetch("SELECT id, pan FROM loyalty.cards WHERE pan IS NOT NULL ORDER BY id "
                                    f"LIMIT {SEAL_CHUNK_ROWS} FOR UPDATE")
            if not rows:
                return done
            sealed = [(r["id"], *v.columns(r["pan"])) for r in rows]
            await conn.execute(
                "UPDATE loyalty.cards c SET pan = NULL, pan_hash = s.h, pan_sealed = s.b, pan_masked = s.m "
                "FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::text[]) AS s(id, h, b, m) "
                "WHERE c.id = s.id",
                [s[0] for s in sealed], [s[1] for s in sealed], [s[2] for s in sealed], [s[3] for s in sealed])
            done += len(rows)
