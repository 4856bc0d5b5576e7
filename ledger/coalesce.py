"""Many concurrent one-row statements, sent to PostgreSQL as one statement per turn.

A request path that reads (or records) one row per request pays a round trip,
a pool checkout and a statement execution each time; under load that is most
of the database's and the client's work. :class:`Coalescer` gathers the calls
made in the same event-loop turn, and those that arrive while every slot is
busy, into one statement over arrays (``unnest``) and hands each caller its
own row. Light load pays nothing extra: a lone call runs at once, alone.

The statement takes one array per parameter, in order, and must return the
1-based position of each input row as its first column, named ``n``, for the
rows it returns (a lookup may return nothing for some positions: they get
None). Example::

    receipts = Coalescer(pool, '''
        SELECT q.n, r.content_hash, r.payload
          FROM unnest($1::text[]) WITH ORDINALITY AS q(key, n)
          JOIN ledger.receipts r ON r.idempotency_key = q.key''')
    row = await receipts.fetch("iso:T1:000042:0101120000")

A failing statement fails every caller of its batch with the same exception,
unless ``split_on_error``: then each call is run again on its own, so that one
bad row cannot fail its neighbours (for writes that are all-or-nothing per
statement).

``linger_s`` > 0: a call that finds no statement running waits that long for
company before its statement goes (at moderate load a statement would carry
two or three calls, and each statement costs both sides about as much as
ten calls in it). Calls that arrive while every slot is busy never linger:
they go as soon as a slot frees.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import asyncpg

from ledger.db import connection_lost
from ledger.errors import Unavailable, timeout_named


class Coalescer:
    """Coalesces concurrent calls of one array statement; bounded in batch size and concurrency."""

    def __init__(self, pool: asyncpg.Pool, sql: str, *, batch_size_max: int = 256, concurrency_max: int = 2,
                 timeout_s: float = 5.0, queue_depth_max: int = 20_000, split_on_error: bool = False,
                 linger_s: float = 0.0) -> None:
        self.pool = pool
        self.sql = sql
        self.batch_size_max = batch_size_max
        self.concurrency_max = concurrency_max
        self.timeout_s = timeout_s
        self.queue_depth_max = queue_depth_max
        self.split_on_error = split_on_error
        self.linger_s = linger_s
        self._queue: deque[tuple[tuple[Any, ...], asyncio.Future[asyncpg.Record | None]]] = deque()
        self._running = 0
        self._scheduled = False
        self.batches_total = 0
        self.calls_total = 0

    async def fetch(self, *params: Any) -> asyncpg.Record | None:
        """The statement's row for these parameters (None when it returned none for them)."""
        if len(self._queue) >= self.queue_depth_max:
            raise Unavailable(f"coalescer queue full ({self.queue_depth_max})")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[asyncpg.Record | None] = loop.create_future()
        self._queue.append((params, future))
        if not self._scheduled and self._running < self.concurrency_max:
            # Wait for the end of this loop turn: every request whose bytes arrived in it joins
            # (and, from idle, for the linger).
            self._scheduled = True
            if self.linger_s > 0 and self._running == 0:
                loop.call_later(self.linger_s, self._launch)
            else:
                loop.call_soon(self._launch)
        return await future

    def _launch(self) -> None:
        self._scheduled = False
        while self._queue and self._running < self.concurrency_max:
            batch: list[tuple[tuple[Any, ...], asyncio.Future[asyncpg.Record | None]]] = []
            while self._queue and len(batch) < self.batch_size_max:
                item = self._queue.popleft()
                if not item[1].done():  # a caller that gave up is not asked for
                    batch.append(item)
            if not batch:
                break
            self._running += 1
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[asyncpg.Record | None]]]) -> None:
        # A task nobody awaits: whatever goes wrong is told to the callers, never raised from here
        # (it would only end as asyncio's "Task exception was never retrieved").
        try:
            try:
                rows = await self._execute([params for params, _ in batch])
            except Exception as exc:  # every failure is the callers' answer
                # A lost connection says nothing about any one call (and the statement may have
                # committed): no re-run call by call.
                if (self.split_on_error and len(batch) > 1 and isinstance(exc, asyncpg.PostgresError)
                        and not connection_lost(exc)):
                    for params, future in batch:
                        await self._run_alone(params, future)
                else:
                    _fail(batch, exc)
                return
            for n, (_, future) in enumerate(batch, start=1):
                if not future.done():
                    future.set_result(rows.get(n))
            self.batches_total += 1
            self.calls_total += len(batch)
        except Exception as exc:  # e.g. a row without its column n
            _fail(batch, exc)
        except BaseException:  # cancelled: never leave a caller waiting for ever
            _fail(batch, Unavailable("cancelled"))
            raise
        finally:
            self._running -= 1
            if self._queue and not self._scheduled:
                self._launch()

    async def _run_alone(self, params: tuple[Any, ...], future: asyncio.Future[asyncpg.Record | None]) -> None:
        if future.done():
            return
        try:
            rows = await self._execute([params])
        except Exception as exc:  # the caller's answer
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(rows.get(1))

    async def _execute(self, calls: list[tuple[Any, ...]]) -> dict[int, asyncpg.Record]:
        columns = [list(column) for column in zip(*calls, strict=True)]
        with timeout_named(f"no database connection or answer within {self.timeout_s:g}s "
                           f"(a coalesced statement of {len(calls)})"):
            async with self.pool.acquire(timeout=self.timeout_s) as conn:
                rows = await conn.fetch(self.sql, *columns, timeout=self.timeout_s)
        return {int(row["n"]): row for row in rows}


def _fail(batch: list[tuple[tuple[Any, ...], asyncio.Future[asyncpg.Record | None]]], exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
