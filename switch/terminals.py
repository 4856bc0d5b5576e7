"""Terminals: the ``switch.terminals`` table, the daemon's cached view of it, and the
operations behind ``switchd terminal add|list|show|disable|enable`` (cli.terminal), which
live in :mod:`ledger.terminals` (the portal provisions terminals too) and are named here too.

A terminal is field 41 (stored without its space padding) and belongs to a
merchant (field 42). Its MAC key is sealed under the master key
(:mod:`ledger.keys`) with the terminal id and algorithm as associated data,
so the database never holds a key in clear and a sealed key cannot be moved
to another terminal. Nothing here prints or logs a key.

>>> key_aad("T0000001", "x919")
b'switchd:terminal:T0000001:x919'
>>> normalize_id("T1      ")
'T1'
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from ledger.errors import first_line
from ledger.terminals import (  # noqa: F401  (the operations, under the names the CLI and tests use)
    _SELECT,
    TerminalError,
    add_terminal,
    check_new,
    describe,
    key_aad,
    list_terminals,
    scheme_aad,
    set_status,
    show_terminal,
)
from switch import keyexchange, keystore
from switch.logs import get_logger

log = get_logger("switchd.terminals")

# Cached lookups keep the hot path (an echo every few ms per terminal) off the
# database. Every change to switch.terminals is announced on CHANGE_CHANNEL
# (migration 0007) and drops the cached copy at once; the lifetime is the bound
# only while that feed is down, and a safety net while it is up.
CACHE_TTL_S = 1.0
CACHE_TTL_WATCHED_S = 30.0
CHANGE_CHANNEL = "switchd_terminals"
# The feed's connection is checked this often: a connection that died without
# closing (no FIN) is noticed within FEED_HEARTBEAT_S + FEED_TIMEOUT_S.
FEED_HEARTBEAT_S = 5.0
FEED_TIMEOUT_S = 5.0
FEED_RETRY_S = 1.0  # the first retry; doubling up to FEED_RETRY_MAX_S while the database is away
FEED_RETRY_MAX_S = 10.0
CACHE_ENTRIES_MAX = 100_000
# While the database is away a known terminal's last copy (at most this old) still
# answers the lookup: nothing can be approved without the database anyway, but the
# decline is MACed with the terminal's key, so the terminal accepts it and
# retransmits or reverses, instead of discarding an unauthenticated answer.
CACHE_STALE_IF_ERROR_S = 300.0
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,8}$")


def normalize_id(value: str) -> str:
    """Field 41/42 as stored: trailing spaces are not significant."""
    return value.rstrip(" ")


def plausible_id(value: str) -> bool:
    """True when ``value`` (field 41, padded or not) could be a terminal id at all.

    >>> plausible_id("T1      "), plausible_id("T1;--"), plausible_id("        ")
    (True, False, False)
    """
    return bool(_ID_RE.match(normalize_id(value)))


@dataclass(frozen=True)
class Terminal:
    """A terminal as the switch sees it. ``mac_key`` is unsealed, in memory only (never logged)."""

    terminal_id: str
    merchant_id: str
    status: str
    signed_on: bool
    mac_alg: str | None
    mac_key: bytes | None
    key_error: str | None = None  # the sealed key could not be unsealed (no/wrong master key)
    # A terminal master key (migration 0026): working keys come with each sign-on. Until the first
    # one (or after `terminal rotate-keys`) it has no MAC key and must sign on (58).
    tmk_alg: str | None = None
    tmk: bytes | None = None
    pin_alg: str | None = None
    pin_key: bytes | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def keyed(self) -> bool:
        """True when the terminal must MAC (it has a MAC algorithm, whether or not we can unseal it)."""
        return self.mac_alg is not None or self.tmk_alg is not None

    @property
    def awaiting_keys(self) -> bool:
        """True for a terminal with a master key that has no working keys yet: it must sign on."""
        return self.tmk_alg is not None and self.mac_alg is None

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return (f"Terminal(terminal_id={self.terminal_id!r}, merchant_id={self.merchant_id!r}, "
                f"status={self.status!r}, signed_on={self.signed_on}, mac_alg={self.mac_alg!r})")


# The wire knows POS terminals only: a merchant's web trading seat (kind 'web', migration 0013) is a
# virtual terminal of the accounting host, and a request naming it is refused as from an unknown one.
_SELECT_ON_WIRE = _SELECT + " WHERE terminal_id = $1 AND kind = 'pos'"


def _unseal(master_keys: tuple[bytes, ...], blob: bytes, aad: bytes, problems: list[str]) -> bytes | None:
    if not master_keys:
        problems.append("terminal has a key but no master key is configured")
        return None
    try:
        return keystore.unseal_any(master_keys, bytes(blob), aad)
    except keystore.KeyStoreError as exc:
        problems.append(str(exc))
        return None


def _from_row(row: asyncpg.Record, master_keys: tuple[bytes, ...]) -> Terminal:
    tid, alg = row["terminal_id"], row["mac_alg"]
    problems: list[str] = []
    key = None if alg is None else _unseal(master_keys, row["mac_key_sealed"], key_aad(tid, alg), problems)
    tmk_alg, pin_alg = row["tmk_alg"], row["pin_alg"]
    tmk = None if tmk_alg is None else _unseal(master_keys, row["tmk_sealed"], scheme_aad(tid, "tmk", tmk_alg), problems)
    pin_key = None if pin_alg is None else _unseal(master_keys, row["pin_key_sealed"],
                                                   scheme_aad(tid, "pin", pin_alg), problems)
    return Terminal(tid, row["merchant_id"], row["status"], row["signed_on"], alg, key,
                    problems[0] if problems else None, tmk_alg, tmk, pin_alg, pin_key)


class TerminalStore:
    """The daemon's access to terminals: cached reads, written-through sign-on state."""

    def __init__(self, pool: asyncpg.Pool, master_key: bytes | None,
                 previous_master_keys: tuple[bytes, ...] = ()) -> None:
        self.pool = pool
        self.master_key = master_key  # seals what the daemon stores (a sign-on's working keys)
        # Unseal with any of these: during a master-key rotation (`keys rewrap`) rows are sealed
        # under the new key or the previous one.
        self.master_keys: tuple[bytes, ...] = (() if master_key is None else (master_key,)) + previous_master_keys
        self._cache: dict[str, tuple[float, Terminal | None]] = {}
        # Which connection (listener/peer) signed each terminal on in this process: only that
        # connection may sign it off (one entry per signed-on terminal; dropped at sign-off).
        self._sign_on_owner: dict[str, str] = {}
        # The last copy read of each known terminal (read at, copy, doubted), for while the
        # database is away (CACHE_STALE_IF_ERROR_S). A wholesale drop (the feed reconnected)
        # keeps it as it is; the terminal's own announced change marks it doubted: then it
        # only MACs a failed request's 96 (last_known), it never decides anything (get).
        self._last_known: dict[str, tuple[float, Terminal, bool]] = {}
        self._changes = 0  # announcements received: a read that overlapped one is not cached
        self.watched = False  # the change feed is connected

    def set_master_keys(self, master_key: bytes | None, previous_master_keys: tuple[bytes, ...] = ()) -> None:
        """Seal with ``master_key`` from now on and unseal with it or the previous ones (SIGHUP)."""
        self.master_key = master_key
        self.master_keys = (() if master_key is None else (master_key,)) + previous_master_keys
        self._cache.clear()  # copies unsealed with the old keys are read again

    @property
    def ttl_s(self) -> float:
        """How long a cached terminal is believed: long while changes are announced to us."""
        return CACHE_TTL_WATCHED_S if self.watched else CACHE_TTL_S

    async def get(self, terminal_id: str, fresh: bool = False) -> Terminal | None:
        """The terminal, or None if unknown; at most ``ttl_s`` old unless ``fresh``
        (or the database is failing: see CACHE_STALE_IF_ERROR_S).

        Callers about to decline because of what they got ask again with
        ``fresh=True``: declining on stale data (another instance just signed
        the terminal on) is worse than one more query.
        """
        tid = normalize_id(terminal_id)
        now = time.monotonic()
        hit = self._cache.get(tid)
        if not fresh and hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        changes = self._changes
        try:
            row = await self.pool.fetchrow(_SELECT_ON_WIRE, tid)
        except Exception:  # noqa: BLE001 - any failure to read (asyncpg's InternalClientError on a
            # connection killed mid-operation is neither a PostgresError nor an InterfaceError)
            known = self._last_known.get(tid)
            if not fresh and known is not None and not known[2] and now - known[0] < CACHE_STALE_IF_ERROR_S:
                return known[1]
            raise
        term = None if row is None else _from_row(row, self.master_keys)
        if changes != self._changes:
            # A change was announced while we read: this row may predate it. Answer with it
            # (it was true a moment ago) but do not keep it.
            self._cache.pop(tid, None)
            return term
        if len(self._cache) >= CACHE_ENTRIES_MAX:
            # Bounded. Unknown ids go first: made-up ids must not evict real terminals.
            self._cache = {k: v for k, v in self._cache.items() if v[1] is not None}
            if len(self._cache) >= CACHE_ENTRIES_MAX:
                self._cache.clear()
        self._cache[tid] = (now, term)
        if term is not None:
            if len(self._last_known) >= CACHE_ENTRIES_MAX:
                self._last_known.clear()
            self._last_known[tid] = (now, term, False)
        else:
            self._last_known.pop(tid, None)
        return term

    def last_known(self, terminal_id: str) -> Terminal | None:
        """The last copy read of a terminal (at most CACHE_STALE_IF_ERROR_S old), even one whose
        change was announced since: only to MAC the 96 of a request that failed. A terminal
        discards an answer it cannot authenticate; one MACed with its previous key is no worse.
        """
        known = self._last_known.get(normalize_id(terminal_id))
        if known is None or time.monotonic() - known[0] >= CACHE_STALE_IF_ERROR_S:
            return None
        return known[1]

    def forget(self, terminal_id: str | None = None) -> None:
        """Drop one terminal's cached copy (all of them when None).

        One terminal's change is known: its last copy is doubted (see last_known). All of
        them (the feed reconnected) is a doubt about none in particular: their last copies
        stay as they are, for outages only.
        """
        self._changes += 1
        if terminal_id is None:
            self._cache.clear()
        else:
            tid = normalize_id(terminal_id)
            self._cache.pop(tid, None)
            known = self._last_known.get(tid)
            if known is not None:
                self._last_known[tid] = (known[0], known[1], True)

    async def follow_changes(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        """Listen on CHANGE_CHANNEL and forget what changes, until cancelled; reconnects.

        While listening, cached terminals live ``CACHE_TTL_WATCHED_S``; whenever
        the feed is down (not yet connected, lost, reconnecting) they live
        ``CACHE_TTL_S`` again, and on every (re)connection the whole cache is
        dropped: what changed while nobody listened is unknown. Retries start at
        FEED_RETRY_S and double up to FEED_RETRY_MAX_S; an outage is logged once
        (``terminal_feed_down``), its end as ``terminal_feed_up``.
        """
        retry_s = FEED_RETRY_S
        failures = 0
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await connect()
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())  # type: ignore[misc]
                await conn.add_listener(CHANGE_CHANNEL, self._announced)
                self.forget()
                self.watched = True
                retry_s, failures = FEED_RETRY_S, 0
                log.info("terminal_feed_up")
                while not lost.is_set():
                    quiet = False
                    try:
                        await asyncio.wait_for(lost.wait(), FEED_HEARTBEAT_S)
                    except TimeoutError:
                        quiet = True
                    if quiet:
                        await conn.fetchval("SELECT 1", timeout=FEED_TIMEOUT_S)
                raise ConnectionError("connection closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the feed is down (`finally` shortens the lifetimes)
                failures += 1
                if failures == 1:  # once per outage, not once per retry
                    log.warning("terminal_feed_down", retry_s=retry_s,
                                reason=first_line(exc))
            finally:
                self.watched = False
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(retry_s)
            retry_s = min(retry_s * 2, FEED_RETRY_MAX_S)

    def _announced(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.forget(payload)

    def signed_on_by(self, terminal_id: str) -> str | None:
        """The connection that signed ``terminal_id`` on in this process, if one did."""
        return self._sign_on_owner.get(normalize_id(terminal_id))

    async def set_signed_on(self, terminal_id: str, signed_on: bool, connection: str | None = None) -> None:
        """Record a sign-on (True, by ``connection``) or sign-off (False)."""
        tid = normalize_id(terminal_id)
        if signed_on and connection is not None:
            self._sign_on_owner[tid] = connection
        elif not signed_on:
            self._sign_on_owner.pop(tid, None)
        column = "signed_on_at" if signed_on else "signed_off_at"
        await self.pool.execute(
            f"UPDATE switch.terminals SET signed_on = $2, {column} = now(), updated_at = now() "
            "WHERE terminal_id = $1", tid, signed_on,
        )
        self._cache.pop(tid, None)

    async def install_working_keys(self, term: Terminal, working: keyexchange.WorkingKeys,
                                   connection: str) -> bool:
        """Seal a sign-on's working keys, install them and sign the terminal on (by ``connection``).

        Through switch.install_working_keys (SECURITY DEFINER): the daemon's role cannot write key
        columns itself, and every change is recorded. False when the terminal has no master key.
        """
        if self.master_key is None:
            raise keystore.KeyStoreError("keystore: no master key configured to seal working keys")
        tid = term.terminal_id
        mac_sealed = keystore.seal(self.master_key, working.mac_key, key_aad(tid, working.mac_alg))
        pin_sealed = keystore.seal(self.master_key, working.pin_key, scheme_aad(tid, "pin", working.scheme))
        done = await self.pool.fetchval("SELECT switch.install_working_keys($1, $2, $3, $4, $5)",
                                        tid, working.mac_alg, mac_sealed, working.scheme, pin_sealed)
        self._cache.pop(tid, None)
        if done:
            self._sign_on_owner[tid] = connection
        return bool(done)
