"""The member API over a real socket: the portal served by uvicorn (portal.server.serve), an app
client over HTTP: log in, read balances, refresh, log out; problems and headers as on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from dataclasses import replace

import asyncpg
import httpx
from api_support import API, PAN1, give_password, log_in
from ledger_support import ledger_settings
from portal_support import SECRET

from ledger.audit import check_books
from ledger.loyalty import demo as ledger_demo
from portal.server import serve
from portal.settings import PortalSettings

READY_WAIT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_app_over_http(pool: asyncpg.Pool, db_dsn: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await ledger_demo.seed(conn, cards=3)
    await give_password(pool, PAN1)
    port = _free_port()
    settings = replace(PortalSettings(), port=port, public_base_url=f"http://127.0.0.1:{port}", secret=SECRET)
    # serve() installs handlers of its own for SIGTERM and SIGINT: pytest's come back after.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = asyncio.create_task(serve(settings, db_dsn, ledger_settings()))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(int(READY_WAIT_S / 0.05)):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{API}/openapi.json")).status_code == 200:
                        break
                assert not server.done(), server
                await asyncio.sleep(0.05)
            tokens = await log_in(client, PAN1)
            headers = {"authorization": f"Bearer {tokens['access_token']}"}
            r = await client.get(f"{API}/me/balances", headers=headers)
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            assert r.headers["cache-control"] == "no-store" and "set-cookie" not in r.headers
            assert r.json()["cards"][0]["pan"] == "621234******0019"
            fresh = (await client.post(f"{API}/sessions/refresh",
                                       json={"refresh_token": tokens["refresh_token"]})).json()
            assert (await client.get(f"{API}/me", headers=headers)).status_code == 401
            headers = {"authorization": f"Bearer {fresh['access_token']}"}
            assert (await client.delete(f"{API}/sessions/current", headers=headers)).status_code == 204
            r = await client.get(f"{API}/me", headers=headers)
            assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
            r = await client.post(f"{API}/sessions", content=b"x" * 100_000,
                                  headers={"content-type": "application/json"})
            assert r.status_code == 413 and r.json()["type"].endswith("/body-too-large")
    finally:
        # As in production: SIGTERM, caught by uvicorn while it serves, drains and ends serve().
        # (Cancelling the task instead would close the listening socket under the running loop.)
        if not server.done():
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(server, READY_WAIT_S)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert await check_books(pool) == []
