"""Running the portal: uvicorn (with uvloop) over a pool of its own, bounded everywhere.

Concurrency, keep-alive, shutdown and request size are limited; behind a TLS
reverse proxy only ``trusted_proxies`` may set the client address and scheme.
The listening socket is bound here, before uvicorn starts, so that a port in
use is one clear error; ``portal_ready`` is logged with the URL once it serves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import structlog
import uvicorn

from ledger import db as ledger_db
from ledger import migrate
from ledger.engine import LedgerSettings
from ledger.loyalty import card_numbers
from ledger.standby_reads import StandbyReads
from portal.app import create_app
from portal.settings import PortalSettings

log = structlog.get_logger("portal")
STARTED_POLL_S = 0.05
STARTED_WAIT_MAX_S = 60.0


class ListenError(OSError):
    """The portal's address could not be bound; ``str()`` is one line naming it."""


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port`` (port 0: a free one); ListenError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, f"portal cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def url_of(settings: PortalSettings, port: int) -> str:
    """Where browsers reach the portal: ``public_base_url``, else scheme, host and the bound port."""
    if settings.public_base_url and settings.port:
        return settings.public_base_url.rstrip("/")
    return f"{'https' if settings.tls else 'http'}://{settings.host}:{port}"


async def serve(settings: PortalSettings, dsn: str, ledger_settings: LedgerSettings | None = None,
                master_key: bytes | None = None, read_dsn: str = "", read_staleness_max_s: float = 5.0,
                previous_master_keys: tuple[bytes, ...] = ()) -> None:
    """Serve the portal until cancelled or signalled (SIGINT/SIGTERM end it gracefully).

    ``ledger_settings`` and ``master_key``: see portal.app.create_app. ``read_dsn``: a standby
    for the read pages (search, statistics, exports) while within ``read_staleness_max_s``.
    """
    settings.check()
    sock = listen_socket(settings.host, settings.port)
    pool = await ledger_db.create_pool(dsn, 1, settings.db_pool_size_max)
    read_pool = None
    try:
        if read_dsn:
            # Lazily connected (size_min 1 would fail start-up while the standby is away; reads then
            # go to the primary until it is back).
            read_pool = await ledger_db.create_pool(read_dsn, 0, settings.db_pool_size_max)
        reads = StandbyReads(pool, read_pool, read_staleness_max_s)
        # Before serving: a schema of another version, or a role without its grants, is one line.
        async with pool.acquire() as conn:
            await migrate.check_current(conn)
            # Card numbers are found and shown through the master key's card-number keys (during
            # a rotation they may still be sealed under the previous key).
            if master_key is not None:
                card_numbers.set_master_key(master_key, previous_master_keys)
            await card_numbers.check_ready(conn)
        app = create_app(settings, pool, ledger_settings, master_key, reads)
        config = uvicorn.Config(
            app, loop="uvloop", http="h11", lifespan="on",
            limit_concurrency=settings.limit_concurrency, timeout_keep_alive=settings.timeout_keep_alive_s,
            timeout_graceful_shutdown=settings.timeout_graceful_shutdown_s,
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=list(settings.trusted_proxies) or None,
            ssl_certfile=settings.tls_cert_file, ssl_keyfile=settings.tls_key_file,
            server_header=False, access_log=False, log_config=None,
        )
        server = uvicorn.Server(config)
        # uvicorn raises the signal it stopped on again once it has shut down; a handler of our own
        # receives it, so that the pool below is closed and the process exits 0.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _sig, _frame: None)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(int(STARTED_WAIT_MAX_S / STARTED_POLL_S)):  # uvicorn offers no event to await
            if server.started or serving.done():
                break
            await asyncio.sleep(STARTED_POLL_S)
        if server.started:
            log.info("portal_ready", url=url_of(settings, int(sock.getsockname()[1])), pid=os.getpid(),
                     tls=settings.tls, trusted_proxies=list(settings.trusted_proxies))
        await serving
        log.info("portal_drained")
    finally:
        sock.close()
        await pool.close()
        if read_pool is not None:
            await read_pool.close()

