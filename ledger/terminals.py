"""Terminal provisioning: the ``switch.terminals`` rows the CLI and the portal add, list and change.

A terminal is field 41 (stored without its space padding) and belongs to a
merchant (field 42). Its MAC key is sealed under the master key
(:mod:`ledger.keys`) with the terminal id and algorithm as associated data, so
the database never holds a key in clear and a sealed key cannot be moved to
another terminal. Nothing here returns, prints or logs a key: a terminal is
described by whether it has one and, given the master key, the key's check value.
The switch reads the same rows (switch.terminals) and unseals the keys.

>>> key_aad("T0000001", "x919")
b'switchd:terminal:T0000001:x919'
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from ledger import keys
from ledger.errors import SwitchdError

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,8}$")
_MERCHANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,15}$")
_WEB_ID_RE = re.compile(r"^W[0-9]{7}$")  # reserved (migration 0013)
_SELECT = ("SELECT terminal_id, merchant_id, status, signed_on, signed_on_at, mac_alg, mac_key_sealed, "
           "created_at, updated_at, kind, tmk_alg, tmk_sealed, pin_alg, pin_key_sealed FROM switch.terminals")
LIST_LIMIT_MAX = 1000
STATUSES = ("active", "disabled")


def key_aad(terminal_id: str, alg: str) -> bytes:
    """Associated data binding a sealed key to its terminal and algorithm."""
    return f"switchd:terminal:{terminal_id}:{alg}".encode()


def scheme_aad(terminal_id: str, role: str, scheme: str) -> bytes:
    """Associated data binding a sealed TMK (``role`` 'tmk') or working PIN key ('pin') to its terminal.

    >>> scheme_aad("T0000001", "tmk", "aes")
    b'switchd:terminal:T0000001:tmk:aes'
    """
    return f"switchd:terminal:{terminal_id}:{role}:{scheme}".encode()


class TerminalError(SwitchdError):
    """An operator mistake; ``str()`` is one line."""


def check_id(terminal_id: str, merchant_id: str) -> None:
    """TerminalError unless both ids are well formed and the terminal id is not a web seat's."""
    if not _ID_RE.match(terminal_id):
        raise TerminalError(f"terminal id {terminal_id!r}: 1..8 letters, digits, _ or -")
    if _WEB_ID_RE.match(terminal_id):
        raise TerminalError(f"terminal id {terminal_id!r}: W and 7 digits are merchants' web trading seats")
    if not _MERCHANT_RE.match(merchant_id):
        raise TerminalError(f"merchant id {merchant_id!r}: 1..15 letters, digits, _ or -")


def seal_key(terminal_id: str, mac_alg: str, key: bytes, master_key: bytes | None) -> bytes:
    """``key`` sealed for ``terminal_id``; TerminalError for a wrong algorithm, length or no master key."""
    if mac_alg not in keys.MAC_ALGORITHMS:
        raise TerminalError(f"--mac-alg must be one of {', '.join(keys.MAC_ALGORITHMS)}")
    if not keys.mac_key_length_ok(mac_alg, key):
        raise TerminalError(f"--mac-key has the wrong length for {mac_alg}")
    if master_key is None:
        raise TerminalError("cannot store a MAC key: no master key configured "
                            "(set [security] master_key_file or the variable named by master_key_env)")
    return keys.seal(master_key, key, key_aad(terminal_id, mac_alg))


def check_new(terminal_id: str, merchant_id: str, mac_alg: str | None, mac_key_hex: str | None,
              master_key: bytes | None) -> bytes | None:
    """Validate ``terminal add`` arguments; return the sealed key (or None). Raises TerminalError."""
    check_id(terminal_id, merchant_id)
    if (mac_alg is None) != (mac_key_hex is None):
        raise TerminalError("--mac-alg and --mac-key go together")
    if mac_alg is None or mac_key_hex is None:
        return None
    if mac_alg not in keys.MAC_ALGORITHMS:
        raise TerminalError(f"--mac-alg must be one of {', '.join(keys.MAC_ALGORITHMS)}")
    try:
        key = bytes.fromhex(mac_key_hex)
    except ValueError:
        raise TerminalError("--mac-key must be hexadecimal") from None
    return seal_key(terminal_id, mac_alg, key, master_key)


def seal_tmk(terminal_id: str, tmk_alg: str, tmk: bytes, master_key: bytes | None) -> bytes:
    """A terminal master key sealed for ``terminal_id``; TerminalError for a wrong scheme, length or no master key."""
    if tmk_alg not in keys.KEY_SCHEMES:
        raise TerminalError(f"--tmk-alg must be one of {', '.join(keys.KEY_SCHEMES)}")
    if len(tmk) != keys.SCHEME_KEY_BYTES:
        raise TerminalError(f"a terminal master key is {keys.SCHEME_KEY_BYTES} bytes")
    if master_key is None:
        raise TerminalError("cannot store a terminal master key: no master key configured "
                            "(set [security] master_key_file or the variable named by master_key_env)")
    return keys.seal(master_key, tmk, scheme_aad(terminal_id, "tmk", tmk_alg))


async def _insert(conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str, merchant_id: str,
                  mac_alg: str | None, sealed: bytes | None, tmk_alg: str | None = None,
                  tmk_sealed: bytes | None = None) -> None:
    status = await conn.execute(
        "INSERT INTO switch.terminals(terminal_id, merchant_id, mac_alg, mac_key_sealed, tmk_alg, tmk_sealed) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (terminal_id) DO NOTHING",
        terminal_id, merchant_id, mac_alg if sealed else None, sealed, tmk_alg if tmk_sealed else None, tmk_sealed,
    )
    if status.endswith(" 0"):
        raise TerminalError(f"terminal {terminal_id} already exists")


async def add_terminal(conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str, merchant_id: str,
                       mac_alg: str | None = None, mac_key_hex: str | None = None,
                       master_key: bytes | None = None, tmk_alg: str | None = None,
                       tmk: bytes | None = None) -> None:
    """Create a terminal; TerminalError if it exists or an argument is wrong.

    With a terminal master key (``tmk_alg``, ``tmk``) the terminal receives working keys at each
    sign-on; it then has no static MAC key (the sign-on's MAC key is its MAC key).
    """
    sealed = check_new(terminal_id, merchant_id, mac_alg, mac_key_hex, master_key)
    tmk_sealed = None
    if tmk is not None:
        if sealed is not None:
            raise TerminalError("a terminal with a master key gets its MAC key at sign-on: no --mac-key")
        tmk_sealed = seal_tmk(terminal_id, tmk_alg or "tdes", tmk, master_key)
    await _insert(conn, terminal_id, merchant_id, mac_alg, sealed, tmk_alg or "tdes", tmk_sealed)


async def rotate_keys(conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str) -> bool:
    """Force a new sign-on of a terminal with a master key: its working keys are dropped and it is
    signed off, so its next request other than an 0800 is answered 58 (not signed on) and it signs
    on again, receiving fresh keys. False when no such terminal (or it has no master key)."""
    result = await conn.execute(
        "UPDATE switch.terminals SET mac_alg = NULL, mac_key_sealed = NULL, pin_alg = NULL, pin_key_sealed = NULL, "
        "signed_on = false, signed_off_at = now(), updated_at = now() "
        "WHERE terminal_id = $1 AND kind = 'pos' AND tmk_sealed IS NOT NULL", terminal_id.rstrip(" "))
    return not result.endswith(" 0")


async def add_keyed_terminal(conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str, merchant_id: str,
                             mac_alg: str | None, key: bytes | None, master_key: bytes | None) -> None:
    """Create a terminal with a MAC key given as bytes (or none when ``mac_alg`` is None)."""
    check_id(terminal_id, merchant_id)
    sealed = None
    if mac_alg is not None:
        if key is None:
            raise TerminalError("a MAC algorithm needs a key")
        sealed = seal_key(terminal_id, mac_alg, key, master_key)
    await _insert(conn, terminal_id, merchant_id, mac_alg, sealed)


async def set_key(conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str, mac_alg: str | None,
                  key: bytes | None, master_key: bytes | None) -> bool:
    """Replace a POS terminal's MAC key (remove it when ``mac_alg`` is None); False when no such terminal.

    The terminal is signed off: it signs on again to use the new key.
    """
    sealed = None
    if mac_alg is not None:
        if key is None:
            raise TerminalError("a MAC algorithm needs a key")
        sealed = seal_key(terminal_id, mac_alg, key, master_key)
    result = await conn.execute(
        "UPDATE switch.terminals SET mac_alg = $2, mac_key_sealed = $3, signed_on = false, updated_at = now() "
        "WHERE terminal_id = $1 AND kind = 'pos'", terminal_id, mac_alg, sealed)
    return not result.endswith(" 0")


def describe(row: asyncpg.Record, master_key: bytes | None = None) -> dict[str, Any]:
    """A terminal row for output: never the key, only whether there is one (and, given the master
    key, its check value: ``key_check_value``, None when it cannot be unsealed)."""
    out = {
        "terminal_id": row["terminal_id"], "merchant_id": row["merchant_id"], "kind": row["kind"],
        "status": row["status"],
        "signed_on": row["signed_on"],
        "signed_on_at": row["signed_on_at"].isoformat() if row["signed_on_at"] else None,
        "mac_alg": row["mac_alg"], "mac_key": "sealed" if row["mac_key_sealed"] is not None else None,
        "tmk_alg": row["tmk_alg"], "pin_key": "sealed" if row["pin_key_sealed"] is not None else None,
        "created_at": row["created_at"].isoformat(), "updated_at": row["updated_at"].isoformat(),
    }
    if master_key is not None and row["tmk_alg"] is not None and row["tmk_sealed"] is not None:
        try:
            tmk = keys.unseal(master_key, bytes(row["tmk_sealed"]), scheme_aad(row["terminal_id"], "tmk", row["tmk_alg"]))
            out["tmk_check_value"] = keys.scheme_kcv(row["tmk_alg"], tmk)
        except keys.KeyStoreError:
            out["tmk_check_value"] = None
    if master_key is not None and row["mac_alg"] is not None and row["mac_key_sealed"] is not None:
        try:
            key = keys.unseal(master_key, bytes(row["mac_key_sealed"]), key_aad(row["terminal_id"], row["mac_alg"]))
            out["key_check_value"] = keys.kcv(row["mac_alg"], key)
        except keys.KeyStoreError:
            out["key_check_value"] = None
    return out


async def list_terminals(conn: asyncpg.Connection | asyncpg.Pool, limit: int, merchant_id: str | None = None,
                         after_id: str | None = None) -> list[dict[str, Any]]:
    """Terminals in id order, at most ``limit``; of one merchant, after an id (keyset pages) if given."""
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    rows = await conn.fetch(
        _SELECT + " WHERE ($2::text IS NULL OR merchant_id = $2) AND ($3::text IS NULL OR terminal_id > $3) "
        "ORDER BY terminal_id LIMIT $1", limit, merchant_id, after_id)
    return [describe(r) for r in rows]


async def show_terminal(conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str,
                        master_key: bytes | None = None) -> dict[str, Any] | None:
    """One terminal, or None."""
    row = await conn.fetchrow(_SELECT + " WHERE terminal_id = $1", terminal_id.rstrip(" "))
    return None if row is None else describe(row, master_key)


async def set_status(conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str, status: str) -> bool:
    """Set active/disabled; False when the terminal does not exist. Disabling also signs it off."""
    result = await conn.execute(
        "UPDATE switch.terminals SET status = $2, signed_on = signed_on AND $2 = 'active', updated_at = now() "
        "WHERE terminal_id = $1", terminal_id.rstrip(" "), status,
    )
    return not result.endswith(" 0")
