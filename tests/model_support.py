"""The hypothesis state machines' common ground: a database of their own, an event loop, a clean end.

A machine runs its rules synchronously (hypothesis drives them), so it owns an event loop and
runs coroutines on it (:meth:`DatabaseMachine.run`). Each machine gets a fresh database made
from the migrated template and drops it at teardown, whatever happened: hypothesis tears down
only the machines it could build, so a machine whose set-up failed tears itself down before the
error is reported. A subclass sets its own attributes, then calls ``super().__init__()``, and
says in :meth:`open` what it needs once the pool exists (seed data, a posting engine) and in
:meth:`close` how to stop it (before the pool closes).

``SERVER`` holds the admin DSN and the template database's name: each test function that runs a
machine fills it from its fixtures before running (``SERVER.update(admin=..., template=...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import asyncpg
from hypothesis.stateful import RuleBasedStateMachine

from ledger import db as ledger_db
from tools.harness import with_database

SERVER: dict[str, str] = {}


class DatabaseMachine(RuleBasedStateMachine):
    """A state machine over a fresh database of its own (see the module docstring)."""

    db_prefix = "switchd_m"
    pool_size_max = 6

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db_name = f"{self.db_prefix}_{uuid.uuid4().hex[:12]}"
        self.db_dsn = with_database(SERVER["admin"], self.db_name)
        try:
            self.run(self._create())
        except BaseException:
            with contextlib.suppress(Exception):
                self.teardown()
            raise

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the machine's loop, to its end."""
        return self.loop.run_until_complete(coro)

    async def _create(self) -> None:
        admin = await asyncpg.connect(SERVER["admin"])
        try:
            await admin.execute(f'CREATE DATABASE "{self.db_name}" TEMPLATE "{SERVER["template"]}"')
        finally:
            await admin.close()
        self.pool = await ledger_db.create_pool(self.db_dsn, 1, self.pool_size_max)
        await self.open()

    async def open(self) -> None:
        """What the machine needs once its pool exists (nothing here)."""

    async def close(self) -> None:
        """Stop what :meth:`open` started (before the pool closes; also after a half-done open)."""

    def teardown(self) -> None:
        """Close what was opened, then always drop the database and close the loop."""

        async def down() -> None:
            try:
                await self.close()
                if hasattr(self, "pool"):
                    await self.pool.close()
            finally:
                admin = await asyncpg.connect(SERVER["admin"])
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                finally:
                    await admin.close()

        try:
            self.run(down())
        finally:
            self.loop.close()
