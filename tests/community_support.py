"""Shared by the community tests: a portal over a seeded database with chosen settings
(promotion approval and fee, SMTP), members enrolled in programs, and a small SMTP server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from ledger_support import ledger_settings
from portal_support import MASTER_KEY, PortalEnv, test_settings

from ledger.audit import check_books
from ledger.loyalty import card_numbers
from ledger.loyalty import demo as ledger_demo
from ledger.loyalty.members import enrol
from portal import demo as portal_demo
from portal.app import create_app

LINE_BYTES_MAX = 1000
MESSAGE_BYTES_MAX = 1_000_000


@contextlib.asynccontextmanager
async def community_env(pool: asyncpg.Pool, **changes: Any) -> AsyncIterator[PortalEnv]:
    """The demo data, a portal with ``changes`` to the test settings; the books checked after."""
    async with pool.acquire() as conn, conn.transaction():
        await ledger_demo.seed(conn, cards=4)
        await portal_demo.seed_users(conn)
    settings = test_settings(**changes)
    app = create_app(settings, pool, ledger_settings(), MASTER_KEY)
    async with app.router.lifespan_context(app):
        yield PortalEnv(app, pool, settings)
    assert await check_books(pool) == [], "the books do not balance after a community test"


async def member_in(pool: asyncpg.Pool, card_n: int, program: str, email: str = "") -> int:
    """The member holding demo card ``card_n``, enrolled in ``program`` (with ``email``); its id."""
    card_id, member_id = await pool.fetchrow("SELECT id, member_id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(pool, ledger_demo.demo_pan(card_n)))
    await enrol(pool, card_id, program)
    if email:
        await pool.execute("UPDATE loyalty.members SET email = $2 WHERE id = $1", member_id, email)
    return int(member_id)


@dataclass
class SmtpServer:
    """A small SMTP server on 127.0.0.1 for tests: keeps what it is sent, or refuses every DATA."""

    refuse: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    received: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rcpt: list[str] = []
        sender = ""

        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        try:
            await say("220 test ESMTP")
            while True:
                raw = await asyncio.wait_for(reader.readline(), 10)
                if not raw:
                    return
                line = raw[:LINE_BYTES_MAX].decode(errors="replace").rstrip("\r\n")
                verb = line[:4].upper()
                if verb == "EHLO":
                    await say("250 test")
                elif verb == "HELO":
                    await say("250 test")
                elif verb == "MAIL":
                    sender, rcpt = line.split(":", 1)[1].strip(), []
                    await say("250 OK")
                elif verb == "RCPT":
                    rcpt.append(line.split(":", 1)[1].strip().strip("<>"))
                    await say("250 OK")
                elif verb == "DATA":
                    if self.refuse:
                        await say("554 refused by the test")
                        continue
                    await say("354 go on")
                    body = bytearray()
                    while len(body) < MESSAGE_BYTES_MAX:
                        chunk = await asyncio.wait_for(reader.readline(), 10)
                        if chunk in (b".\r\n", b".\n", b""):
                            break
                        body += chunk
                    self.messages.append({"from": sender, "to": rcpt, "data": body.decode(errors="replace")})
                    self.received.set()
                    await say("250 queued")
                elif verb == "QUIT":
                    await say("221 bye")
                    return
                else:
                    await say("250 OK")
        except (TimeoutError, ConnectionError):
            return
        finally:
            writer.close()
