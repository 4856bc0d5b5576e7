"""Running the portal: uvicorn (with uvloop) over a pool of its own, bounded everywhere.

Concurrency, keep-alive, shutdown and request size are limited; behind a TLS
reverse proxy only ``trusted_proxies`` may set the client address and scheme.
"""

from __future__ import annotations

import uvicorn

from ledger import db as ledger_db
from ledger.engine import LedgerSettings
from portal.app import create_app
from portal.settings import PortalSettings


async def serve(settings: PortalSettings, dsn: str, ledger_settings: LedgerSettings | None = None,
                master_key: bytes | None = None) -> None:
    """Serve the portal until cancelled or signalled (SIGINT/SIGTERM end it gracefully).

    ``ledger_settings`` and ``master_key``: see portal.app.create_app.
    """
    settings.check()
    pool = await ledger_db.create_pool(dsn, 1, settings.db_pool_size_max)
    try:
        app = create_app(settings, pool, ledger_settings, master_key)
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, loop="uvloop", http="h11", lifespan="on",
            limit_concurrency=settings.limit_concurrency, timeout_keep_alive=settings.timeout_keep_alive_s,
            timeout_graceful_shutdown=settings.timeout_graceful_shutdown_s,
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=list(settings.trusted_proxies) or None,
            ssl_certfile=settings.tls_cert_file, ssl_keyfile=settings.tls_key_file,
            server_header=False, access_log=False, log_config=None,
        )
        await uvicorn.Server(config).serve()
    finally:
        await pool.close()
