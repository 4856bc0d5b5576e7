"""The posting engine: ``await ledger.post(command) -> Result``.

Concurrent ``post`` calls are queued and a writer loop sends them to
PostgreSQL in batches: one call of ``ledger.post_batch`` (one round trip, one
commit) per batch. Up to ``batches_inflight_max`` batches are in flight at once,
each on its own connection, so the next batch is on its way while the last one
commits; commands that share a key, journal or hold with a batch in flight wait
for it, and the database's row locks (taken in account-id order) order the
rest. Every caller waits on its own future with a bound; a batch that fails
tells every waiter promptly with ``Status.ERROR``. Nobody is told "posted"
before the commit has returned.

An ERROR means nothing was posted, with one exception that says so itself:
``reason == "unknown"``. When the connection is lost (or the statement's bound
passes) after a batch was sent, its COMMIT may have happened: the engine finds
out before it answers. On a new connection it ends the old backend (if it still
runs, so the batch can no longer commit), waits until it is gone, and runs the
same batch again: every command is idempotent, so what committed comes back
EXISTS (with its journal) and what did not is posted now. Only when that cannot
be done within another ``timeout_post_s`` is the answer ERROR with reason
"unknown" (the command may have posted: ask again with the same key). A caller's
bound ends a command's wait only while it has not been sent; once sent, the
batch answers it, definitively, within those two bounds. ``SENT_MARK`` tells a
caller whether any command of its context reached the database.

A caller may attach a *receipt* function: given the command's result it
returns bytes to store under the idempotency key, in the same transaction as
the posting (a transaction of four round trips: BEGIN, post, receipts, COMMIT).
A caller that can rebuild its answer from the journal attaches a
:class:`ReceiptRef` instead: its key and content hash are stored with the
journal's id, and no payload, by the posting's own statement (one round trip;
the switch's loyalty handlers do this).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any, Protocol

import asyncpg

from ledger.commands import (
    METADATA_NOT_JSON,
    Command,
    Kind,
    Result,
    Status,
    content_hash,
    expire,
    metadata_json,
    validate,
)
from ledger.db import connection_lost
from ledger.deadlines import Deadlines
from ledger.errors import one_line


@dataclass(frozen=True)
class LedgerSettings:
    """Bounds on the engine; config/switchd.toml [ledger] says what each means.

    No defaults here: the daemon's configuration schema (switch/config.py) holds them, and
    the daemon, the CLI and the tests build the settings from its ``[ledger]`` section.
    """

    batch_size_max: int
    batch_linger_ms: float
    batches_inflight_max: int
    queue_depth_max: int
    timeout_post_s: float
    retries_max: int
    legs_per_command_max: int
    hold_timeout_max_s: int
    # The writer keeps a connection between batches, and gives it back to the pool after this
    # many: asyncpg replaces a connection released after its max_queries (50,000), so the
    # statements' cached plans are made again on time, and a backend's memory stays bounded
    # (docs/operating.md, PostgreSQL: a plan made while a table was small reads it whole).
    batches_per_connection_max: int

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> LedgerSettings:
        """The settings from a mapping with an entry for each of them (others are ignored).

        >>> LedgerSettings.from_mapping({f.name: 1 for f in fields(LedgerSettings)} | {"x": 0}).retries_max
        1
        """
        return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Receipt:
    """Opaque bytes stored under ``idempotency_key`` in the posting's transaction."""

    idempotency_key: str
    content_hash: bytes
    payload: bytes


ReceiptFn = Callable[[Result], Receipt | None]


@dataclass(init=False, unsafe_hash=True)  # own __init__, not frozen: see ledger.commands
class ReceiptRef:
    """A receipt that names the journal instead of carrying a payload (stored when the command posts)."""

    idempotency_key: str
    content_hash: bytes

    def __init__(self, idempotency_key: str, content_hash: bytes) -> None:
        self.idempotency_key = idempotency_key
        self.content_hash = content_hash


# One batch, one statement: post it, and store the receipts by reference of the commands that
# posted (a receipt already under a key stays: first writer wins, as for payload receipts).
# The CTE is scanned twice, so it is materialised: post_batch runs once. Receipts are stored
# only through ledger.store_receipts (one call for the batch; the runtime roles may not insert
# them), which accepts a receipt naming a journal only in the transaction that posted it; r is
# joined to the result (one row) so that it runs.
_POST_SQL = """
WITH p AS MATERIALIZED (
    SELECT * FROM ledger.post_batch($1, $2, $3, $4, $5, $6, $7::jsonb[], $8, $9, $10, $11, $12, $13)
), refs AS (
    SELECT array_agg(q.key ORDER BY q.idx) AS keys, array_agg(q.hash ORDER BY q.idx) AS hashes,
           array_agg(p.journal_id ORDER BY q.idx) AS journals
      FROM p JOIN unnest($14::text[], $15::bytea[]) WITH ORDINALITY AS q(key, hash, idx) ON q.idx = p.idx
     WHERE p.status = 'posted' AND q.key IS NOT NULL
), r AS MATERIALIZED (
    SELECT count(*) AS stored
      FROM refs CROSS JOIN LATERAL ledger.store_receipts(refs.keys, refs.hashes, NULL, refs.journals) AS s(key)
     WHERE refs.keys IS NOT NULL
)
SELECT p.* FROM p CROSS JOIN r ORDER BY p.idx
"""

# What a batch sent on a lost connection committed: its keys' journals, each with its entries'
# accounts and balances after, in leg order (a hold has none).
_COMMITTED_SQL = """
SELECT j.idempotency_key, j.id, j.content_hash, j.business_date,
       array_agg(e.account_id ORDER BY e.leg) FILTER (WHERE e.account_id IS NOT NULL) AS accounts,
       array_agg(e.balance_after ORDER BY e.leg) FILTER (WHERE e.account_id IS NOT NULL) AS balances
  FROM ledger.journals j LEFT JOIN ledger.entries e ON e.journal_id = j.id
 WHERE j.idempotency_key = ANY($1::text[])
 GROUP BY j.id
"""

# SQLSTATEs worth retrying the whole batch for: nothing of it was committed.
_RETRYABLE = {"40001", "40P01", "23505"}
# Posts' bounds are checked this often at most (and ten times per timeout_post_s).
DEADLINE_SWEEP_INTERVAL_MAX_S = 0.1
# Errors that say nothing about one command (the database is slow, locked or going
# away): splitting the batch would only repeat them.
# (A lost connection, see ledger.db.connection_lost, is never bisected either.)
_NOT_BISECTED = _RETRYABLE | {"57014", "55P03", "53300", "25006"}
# A trigger's refusal of one command for a reason of its own (a top-up card no longer redeemable:
# loyalty.mark_voucher_redeemed): that command alone is DECLINED, reason "refused", with the
# trigger's message; nothing was posted, and no batch failed.
REFUSED_SQLSTATE = "SW001"
REFUSED = "refused"
# The server no longer accepts writes (a primary demoted or fenced in a failover): nothing was
# committed, and the connection is not one to post on again; the pool's next connections go
# through the DSN's host list to whichever server accepts writes now.
_READ_ONLY = "25006"


# A caller that must know whether a command it posts reached the database (the switch, to
# tell "nothing was posted" from "may have posted" when it gives up on a request) sets a
# fresh one-element list here before posting; the engine sets its element True when it
# sends one of that context's commands.
SENT_MARK: ContextVar[list[bool] | None] = ContextVar("ledger_sent_mark", default=None)
# Polls for an ended backend's disappearance while finding out a batch's outcome.
BACKEND_GONE_POLL_S = 0.01
BACKEND_GONE_POLL_MAX_S = 0.1
UNKNOWN = "unknown"


@dataclass(init=False)  # an __init__ of its own: see ledger.commands
class _Pending:
    cmd: Command
    hash: bytes
    metadata_json: str
    receipt: ReceiptFn | None
    future: asyncio.Future[Result]
    enqueued_s: float
    receipt_ref: ReceiptRef | None = None
    sent_mark: list[bool] | None = None

    def __init__(self, cmd: Command, hash: bytes, metadata_json: str, receipt: ReceiptFn | None,  # noqa: A002
                 future: asyncio.Future[Result], enqueued_s: float, receipt_ref: ReceiptRef | None = None,
                 sent_mark: list[bool] | None = None) -> None:
        self.cmd = cmd
        self.hash = hash
        self.metadata_json = metadata_json
        self.receipt = receipt
        self.future = future
        self.enqueued_s = enqueued_s
        self.receipt_ref = receipt_ref
        self.sent_mark = sent_mark


class BatchObserver(Protocol):
    """Hook for metrics; the engine calls it as each batch starts and ends.

    A protocol, not a base class: the metrics side implements it without importing the engine.
    """

    def batch_queued(self, seconds: float) -> None:
        """A batch is taken from the queue: ``seconds`` is how long its oldest command waited
        for it (for a free slot, and the linger)."""

    def batch_done(self, size: int, seconds: float, retries: int, failed: bool) -> None:
        """A batch ended: its size, its seconds, its retries, and whether it failed."""


class _Unobserved:
    def batch_queued(self, seconds: float) -> None:
        pass

    def batch_done(self, size: int, seconds: float, retries: int, failed: bool) -> None:
        pass


class Ledger:
    """The ledger's write path and its read side, over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, settings: LedgerSettings, observer: BatchObserver | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.observer: BatchObserver = observer or _Unobserved()
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Writer connections between batches, each with the batches it has posted since acquired.
        self._idle_conns: list[tuple[asyncpg.Connection, int]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_keys: set[str] = set()
        self._inflight_refs: set[tuple[str, int]] = set()
        self._closing = False
        self.batches_total = 0
        # Each waiting post's bound (no timer per post: see ledger.deadlines).
        timeout_s = self.settings.timeout_post_s
        # The futures of commands sent to the database: their batch answers them, not their bound.
        self._sent: set[asyncio.Future[Result]] = set()
        self._deadlines: Deadlines[asyncio.Future[Result]] = Deadlines(
            min(DEADLINE_SWEEP_INTERVAL_MAX_S, timeout_s / 10), self._expire)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._writer(), name="ledger-writer")

    async def stop(self) -> None:
        """Drain queued commands (each bounded by its own timeout), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._deadlines.close()  # every post is answered by now (the writer drained them)
        await self._release_conns()

    async def __aenter__(self) -> Ledger:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _expire(self, future: asyncio.Future[Result]) -> None:
        # The caller's bound, for a command not yet sent: answer now (nothing was posted: the
        # writer skips a command whose future is done). A sent one is its batch's to answer.
        if not future.done() and future not in self._sent:
            future.set_result(Result(Status.ERROR, detail=f"no outcome within {self.settings.timeout_post_s}s; "
                                                          "nothing was posted"))

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # ---------------------------------------------------------------- write path

    async def post(self, cmd: Command, receipt: ReceiptFn | None = None,
                   receipt_ref: ReceiptRef | None = None) -> Result:
        """Post one command; returns its Result. Never raises for business outcomes.

        ``receipt`` (a function of the result) or ``receipt_ref`` (stored as is) is
        kept with the posting, atomically, if the command posts now.

        >>> # await ledger.post(transfer("order-1", [Leg(member, merchant, 300)]))
        """
        problem = validate(cmd, self.settings.legs_per_command_max, self.settings.hold_timeout_max_s,
                           check_metadata=False)
        meta = metadata_json(cmd) if problem is None else None
        if problem is None and meta is None:
            problem = METADATA_NOT_JSON
        if problem is not None or meta is None:
            return Result(Status.INVALID, detail=problem)
        if self._task is None or self._closing:
            return Result(Status.ERROR, detail="ledger is not running")
        if len(self._queue) >= self.settings.queue_depth_max:
            return Result(Status.ERROR, detail=f"ledger queue full ({self.settings.queue_depth_max})")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append(_Pending(cmd, content_hash(cmd), meta, receipt, future, loop.time(), receipt_ref,
                                    SENT_MARK.get()))
        self._wakeup.set()
        # No shield: a caller that gives up (or is cancelled) leaves a done future, and the
        # writer skips commands it has not yet sent. One already in a batch in flight may
        # still post: the caller knows it from SENT_MARK.
        self._deadlines.set(future, loop.time() + self.settings.timeout_post_s)
        try:
            return await future
        finally:
            self._deadlines.discard(future)

    async def post_many(self, cmds: Sequence[Command]) -> list[Result]:
        """Post several commands concurrently; results in the same order."""
        return list(await asyncio.gather(*[self.post(c) for c in cmds]))

    async def expire_due_holds(self, limit: int = 1000) -> int:
        """Expire pending holds whose time is up; returns how many were expired.

        The daemon calls this periodically so that no hold outlives its bound.
        Keys are derived from the hold id, so two daemons sweeping at once post
        each expiry once.
        """
        rows = await self.pool.fetch(
            "SELECT id FROM ledger.holds WHERE state = 'pending' AND expires_at <= now() ORDER BY id LIMIT $1",
            limit,
        )
        results = await asyncio.gather(*[self.post(expire(f"expire:{r['id']}", r["id"])) for r in rows])
        return sum(1 for r in results if r.status is Status.POSTED)

    @staticmethod
    def _ref_of(cmd: Command) -> tuple[str, int] | None:
        if cmd.ref is None:
            return None
        return ("journal" if cmd.kind is Kind.REVERSE else "hold", cmd.ref)

    def _take_batch(self) -> list[_Pending]:
        """Up to batch_size_max items, never two touching the same key, journal or hold.

        Commands that would race inside one batch, or with a batch in flight,
        are left for a later one, so that batches behave exactly as if their
        commands ran one after another.
        """
        batch: list[_Pending] = []
        carry: list[_Pending] = []
        keys: set[str] = set()
        refs: set[tuple[str, int]] = set()
        busy_keys, busy_refs = self._inflight_keys, self._inflight_refs
        limit = self.settings.batch_size_max
        while self._queue and len(batch) < limit:
            item = self._queue.popleft()
            if item.future.done():  # the caller gave up; do not post for nobody
                continue
            key = item.cmd.idempotency_key
            ref_key = self._ref_of(item.cmd)
            if key in keys or key in busy_keys or (ref_key is not None and (ref_key in refs or ref_key in busy_refs)):
                carry.append(item)
                continue
            keys.add(key)
            if ref_key is not None:
                refs.add(ref_key)
            batch.append(item)
        self._queue.extendleft(reversed(carry))
        return batch

    async def _writer(self) -> None:
        linger_s = self.settings.batch_linger_ms / 1000.0
        slots = max(1, self.settings.batches_inflight_max)
        while True:
            if not self._queue or len(self._inflight) >= slots:
                if self._closing and not self._queue and not self._inflight:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if linger_s > 0 and len(self._queue) < self.settings.batch_size_max and not self._closing:
                await asyncio.sleep(linger_s)
            batch = self._take_batch()
            if not batch:
                if self._inflight:  # everything queued waits on a batch in flight
                    self._wakeup.clear()
                    await self._wakeup.wait()
                continue
            self._claim(batch, True)
            loop = asyncio.get_running_loop()
            self.observer.batch_queued(loop.time() - min(item.enqueued_s for item in batch))
            task = loop.create_task(self._flight(batch))
            self._inflight.add(task)

    async def _flight(self, batch: list[_Pending]) -> None:
        """One batch on its own connection; frees its keys and slot, and wakes the writer."""
        conn: asyncpg.Connection | None = None
        used = 0
        if self._idle_conns:
            conn, used = self._idle_conns.pop()
        if conn is not None and not _usable(conn):
            await self._discard(conn)  # it died between batches: the pool gives us another
            conn = None
        posted_on = conn
        broken: asyncpg.Connection | None = None
        give_back: asyncpg.Connection | None = None
        finished = False
        # What must wait (closing a broken connection, giving one back) is done after the
        # except and finally blocks, not in them: a cancellation then cannot interrupt the
        # bookkeeping, which must run whatever happens.
        try:
            try:
                conn = await self._run_batch(batch, conn)
            except Exception as exc:  # a bug: answer now, not at the timeout
                detail = f"batch failed: {one_line(exc)}"
                for item in batch:
                    if not item.future.done():
                        item.future.set_result(Result(Status.ERROR, detail=detail))
                # Whatever state the connection is in, it is not one to post the next batch on.
                broken, conn = conn, None
            finished = True
        finally:
            if conn is not None:
                used = used + 1 if conn is posted_on else 1  # a replacement starts afresh
                if used >= self.settings.batches_per_connection_max:
                    give_back = conn
                else:
                    self._idle_conns.append((conn, used))
            self._claim(batch, False)
            for item in batch:
                self._sent.discard(item.future)
            task = asyncio.current_task()
            if task is not None:
                self._inflight.discard(task)  # type: ignore[arg-type]
            self._wakeup.set()
            if not finished and give_back is not None:  # cancelled (the ledger closing): no wait
                with contextlib.suppress(Exception):
                    give_back.terminate()
        if broken is not None:
            await self._discard(broken)
        if give_back is not None:  # after the slot is free: the next batch need not wait for it
            await self._give_back(give_back)

    def _claim(self, batch: list[_Pending], claimed: bool) -> None:
        """Mark (or unmark) the keys, journals and holds of a batch in flight."""
        for item in batch:
            ref_key = self._ref_of(item.cmd)
            if claimed:
                self._inflight_keys.add(item.cmd.idempotency_key)
                if ref_key is not None:
                    self._inflight_refs.add(ref_key)
            else:
                self._inflight_keys.discard(item.cmd.idempotency_key)
                if ref_key is not None:
                    self._inflight_refs.discard(ref_key)

    async def _release_conns(self) -> None:
        conns, self._idle_conns = self._idle_conns, []
        for conn, _ in conns:
            await self._give_back(conn)

    async def _give_back(self, conn: asyncpg.Connection) -> None:
        """Release a writer connection to the pool (closed instead when that fails). Never raises."""
        released = False
        try:
            await self.pool.release(conn, timeout=2)
            released = True
        except Exception:
            pass  # closed below
        if not released:
            await self._discard(conn)

    async def _discard(self, conn: asyncpg.Connection) -> None:
        """Close a connection whose state is unknown and give its slot back to the pool.

        Never raises: a connection the pool has already taken back (or one that died)
        refuses terminate() and release(), and a failure here must not stop the writer.
        """
        with contextlib.suppress(Exception):
            conn.terminate()
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    async def _run_batch(self, batch: list[_Pending],
                         conn: asyncpg.Connection | None) -> asyncpg.Connection | None:
        """Post a batch on ``conn`` (acquired when None); returns the connection, if still usable."""
        started = time.perf_counter()
        results, retries, error, conn = await self._attempt(batch, conn)
        if (error is not None and len(batch) > 1 and isinstance(error, asyncpg.PostgresError)
                and getattr(error, "sqlstate", None) not in _NOT_BISECTED and not connection_lost(error)):
            # A statement error caused by one command (a receipt that breaks a constraint,
            # a trigger that rejects one row) must not fail its neighbours: nothing was
            # committed, so run each half on its own until the offender is alone
            # (at most log2(batch_size_max) levels). Not a failed batch: its commands run again.
            self.observer.batch_done(len(batch), time.perf_counter() - started, retries, False)
            middle = len(batch) // 2
            conn = await self._run_batch(batch[:middle], conn)
            return await self._run_batch(batch[middle:], conn)
        if (error is not None and len(batch) == 1 and isinstance(error, asyncpg.PostgresError)
                and getattr(error, "sqlstate", None) == REFUSED_SQLSTATE):
            results = [Result(Status.DECLINED, reason=REFUSED, detail=one_line(error))]
            error = None
        for item, res in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(res)
        self.batches_total += 1
        self.observer.batch_done(len(batch), time.perf_counter() - started, retries, error is not None)
        return conn

    async def _attempt(self, batch: list[_Pending], conn: asyncpg.Connection | None
                       ) -> tuple[list[Result], int, BaseException | None, asyncpg.Connection | None]:
        """Post one batch, retrying what is worth retrying: (results, retries, the final error, conn).

        A batch whose connection is lost after it was sent is resolved before anyone is answered
        (see :meth:`_resolve`).
        """
        retries = 0
        loop = asyncio.get_running_loop()
        while True:
            failure: BaseException | None = None
            sent_at_s: float | None = None
            try:
                if conn is None:
                    conn = await self.pool.acquire(timeout=self.settings.timeout_post_s)
                sent_at_s = loop.time()
                self._mark_sent(batch)
                async with asyncio.timeout(self.settings.timeout_post_s):
                    results = await self._execute(conn, batch)
                return results, retries, None, conn
            except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError,
                    asyncpg.InternalClientError) as exc:
                failure = exc
            except Exception as exc:  # a bug (a receipt function that raises), not the database:
                # the transaction was rolled back and the connection is fine; answer now.
                detail = f"batch failed: {one_line(exc)}"
                return [Result(Status.ERROR, detail=detail) for _ in batch], retries, exc, conn
            assert failure is not None  # the try returns otherwise
            code = getattr(failure, "sqlstate", None)
            if connection_lost(failure):
                old_pid = _server_pid(conn) if sent_at_s is not None else None
                if conn is not None:
                    await self._discard(conn)
                    conn = None
                if sent_at_s is not None:
                    # Sent: it may have committed. Find out before answering anyone.
                    resolved, conn = await self._resolve(batch, old_pid, sent_at_s, failure)
                    return resolved, retries, failure, conn
            if code == _READ_ONLY and conn is not None:
                await self._discard(conn)
                conn = None
                await self.pool.expire_connections()
            if code in _RETRYABLE and retries < self.settings.retries_max:
                retries += 1
                await asyncio.sleep(0.001 * (2**retries))
                continue
            detail = f"batch failed: {one_line(failure)}"
            return [Result(Status.ERROR, detail=detail) for _ in batch], retries, failure, conn

    def _mark_sent(self, batch: list[_Pending]) -> None:
        """From here on the batch's commands may commit: their bound no longer answers them."""
        for item in batch:
            self._sent.add(item.future)
            if item.sent_mark is not None:
                item.sent_mark[0] = True

    async def _resolve(self, batch: list[_Pending], old_pid: int | None, sent_at_s: float,
                       failure: BaseException) -> tuple[list[Result], asyncpg.Connection | None]:
        """The truth about a batch sent on a connection that was lost: for each command, EXISTS
        (its journal committed) or ERROR (provably not posted, and never will be); all ERROR with
        reason "unknown" when it cannot be learned within ``timeout_post_s``.

        The old backend may still be running the batch (the network failed, not the server):
        on a new connection it is ended, and waited for until gone; only then can a key
        without a journal never get one. A pid the server has given since to another backend
        is told apart by its start: the old one started before the batch was sent (the
        server's clock now, less the time since it was sent by ours).
        """
        loop = asyncio.get_running_loop()
        # After a failover the new connection is on another server, where the old pid may be
        # one of its own processes: only a client backend of ours is ever ended and waited for.
        old = ("FROM pg_stat_activity WHERE pid = $1 AND pid <> pg_backend_pid() "
               "AND backend_type = 'client backend' AND application_name = current_setting('application_name') "
               "AND backend_start < clock_timestamp() - make_interval(secs => $2)")
        keys = [item.cmd.idempotency_key for item in batch]
        conn: asyncpg.Connection | None = None
        last: BaseException = failure
        pause_s = BACKEND_GONE_POLL_S / 2
        try:
            async with asyncio.timeout(self.settings.timeout_post_s):
                while True:  # a server that restarts hands out dead connections for a moment
                    try:
                        conn = await self.pool.acquire()
                        if old_pid is not None:
                            await conn.execute(f"SELECT pg_terminate_backend(pid) {old}", old_pid,
                                               loop.time() - sent_at_s)
                            while await conn.fetchval(  # noqa: ASYNC110 - polling the server's state
                                    f"SELECT 1 {old}", old_pid, loop.time() - sent_at_s):
                                await asyncio.sleep(BACKEND_GONE_POLL_S)
                        rows = await conn.fetch(_COMMITTED_SQL, keys)
                        break
                    except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError,
                            asyncpg.InternalClientError) as exc:
                        last = exc
                        if conn is not None:
                            await self._discard(conn)
                            conn = None
                        if not connection_lost(exc):
                            raise
                        # No server to ask (a failover: none accepts writes yet): each try connects
                        # to every host of the DSN, so back off, up to a tenth of a second.
                        pause_s = min(pause_s * 2, BACKEND_GONE_POLL_MAX_S)
                        await asyncio.sleep(pause_s)
        except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError,
                asyncpg.InternalClientError) as exc:
            if conn is not None:
                await self._discard(conn)
            detail = (f"outcome unknown: the connection was lost after the batch was sent ({one_line(failure)}) "
                      f"and could not be learned since ({one_line(last if isinstance(exc, TimeoutError) else exc)}); "
                      "ask again with the same key")
            return [Result(Status.ERROR, detail=detail, reason=UNKNOWN) for _ in batch], None
        found = {r["idempotency_key"]: r for r in rows}
        results: list[Result] = []
        for item in batch:
            row = found.get(item.cmd.idempotency_key)
            if row is None:
                results.append(Result(Status.ERROR, detail=f"the connection was lost ({one_line(failure)}); "
                                                           "nothing was posted"))
            elif bytes(row["content_hash"]) != item.hash:
                results.append(Result(Status.CONFLICT, journal_id=row["id"],
                                      detail=f"key {item.cmd.idempotency_key} holds other content"))
            else:
                balances = dict(zip(row["accounts"] or [], row["balances"] or [], strict=True))
                results.append(Result(Status.EXISTS, journal_id=row["id"], business_date=str(row["business_date"]),
                                      balances=balances,
                                      detail="committed before the connection was lost"))
        return results, conn

    async def _execute(self, conn: asyncpg.Connection, batch: list[_Pending]) -> list[Result]:
        keys: list[str] = []
        hashes: list[bytes] = []
        kinds: list[str] = []
        refs: list[int | None] = []
        amounts: list[int | None] = []
        timeouts: list[int | None] = []
        metas: list[str] = []
        forces: list[bool] = []
        guards: list[str | None] = []
        leg_cmd: list[int] = []
        leg_debit: list[int] = []
        leg_credit: list[int] = []
        leg_amount: list[int] = []
        ref_keys: list[str | None] = []
        ref_hashes: list[bytes | None] = []
        for i, item in enumerate(batch, start=1):
            c = item.cmd
            ref = item.receipt_ref
            ref_keys.append(ref.idempotency_key if ref is not None else None)
            ref_hashes.append(ref.content_hash if ref is not None else None)
            keys.append(c.idempotency_key)
            hashes.append(item.hash)
            kinds.append(str(c.kind))
            refs.append(c.ref)
            amounts.append(c.amount)
            timeouts.append(c.timeout_s)
            metas.append(item.metadata_json)
            forces.append(c.force)
            guards.append(c.guard)
            for leg in c.legs:
                leg_cmd.append(i)
                leg_debit.append(leg.debit_account_id)
                leg_credit.append(leg.credit_account_id)
                leg_amount.append(leg.amount)
        # NULL when nothing in the batch is guarded: post_batch skips the guard look-up.
        guarded = guards if any(g is not None for g in guards) else None
        args = (keys, hashes, kinds, refs, amounts, timeouts, metas, forces,
                leg_cmd, leg_debit, leg_credit, leg_amount, guarded, ref_keys, ref_hashes)
        if not any(item.receipt for item in batch):
            rows = await conn.fetch(_POST_SQL, *args)
            return [_to_result(r) for r in rows]
        async with conn.transaction():
            rows = await conn.fetch(_POST_SQL, *args)
            results = [_to_result(r) for r in rows]
            r_keys: list[str] = []
            r_hashes: list[bytes] = []
            r_payloads: list[bytes] = []
            r_journals: list[int | None] = []
            for item, res in zip(batch, results, strict=True):
                # A receipt is written once, with the outcome that first happened.
                if item.receipt is None or res.status is Status.EXISTS or res.status is Status.CONFLICT:
                    continue
                rec = item.receipt(res)
                if rec is None:
                    continue
                r_keys.append(rec.idempotency_key)
                r_hashes.append(rec.content_hash)
                r_payloads.append(rec.payload)
                r_journals.append(res.journal_id if res.status is Status.POSTED else None)
            if r_keys:
                # Through the owner's function, as every receipt (see _POST_SQL).
                await conn.execute(
                    "SELECT count(*) FROM ledger.store_receipts($1::text[], $2::bytea[], $3::bytea[], $4::bigint[])",
                    r_keys, r_hashes, r_payloads, r_journals,
                )
            return results


def _server_pid(conn: asyncpg.Connection | None) -> int | None:
    """The backend pid of a connection (known even once it broke), or None."""
    try:
        return int(conn.get_server_pid()) if conn is not None else None
    except Exception:  # noqa: BLE001 - a proxy the pool took back refuses every call
        return None


def _usable(conn: asyncpg.Connection) -> bool:
    # A pooled connection that died is taken back by the pool, and its proxy refuses every call.
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def _to_result(row: asyncpg.Record) -> Result:
    balances: dict[int, int] = {}
    if row["accounts"] is not None:
        for acc, bal in zip(row["accounts"], row["balances"], strict=True):
            balances[acc] = bal
    bdate = row["business_date"]
    return Result(
        status=Status(row["status"]),
        journal_id=row["journal_id"],
        detail=row["detail"],
        reason=row["reason"],
        business_date=bdate.isoformat() if bdate is not None else None,
        balances=balances,
    )


def describe(result: Result) -> dict[str, Any]:
    """A JSON-friendly view of a result (for CLIs and logs)."""
    return {
        "status": str(result.status),
        "journal_id": result.journal_id,
        "detail": result.detail,
        "business_date": result.business_date,
        "balances": {str(k): v for k, v in result.balances.items()},
    }
