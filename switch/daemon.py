"""The daemon's lifecycle: start, serve until a signal, drain, stop.

start: logs -> database (configured or embedded) -> schema check -> ledger
writer -> ready. SIGTERM/SIGINT: stop accepting, drain in-flight work bounded
by ``timeout_drain_s``, close, exit 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import os
import signal

from ledger import db as ledger_db
from ledger import migrate
from ledger.embedded import EmbeddedError
from ledger.engine import Ledger, LedgerSettings
from switch import runtime
from switch.config import Config
from switch.logs import configure, get_logger

log = get_logger("switchd.daemon")


def ledger_settings(cfg: Config) -> LedgerSettings:
    lc = cfg.ledger
    return LedgerSettings(
        batch_size_max=lc.batch_size_max, batch_linger_ms=lc.batch_linger_ms, queue_depth_max=lc.queue_depth_max,
        timeout_post_s=lc.timeout_post_s, retries_max=lc.retries_max,
        legs_per_command_max=lc.legs_per_command_max, hold_timeout_max_s=lc.hold_timeout_max_s,
    )


async def _serve(cfg: Config, dsn: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("shutdown_forced", signal=signame)
            os._exit(1)
        log.info("shutdown_requested", signal=signame)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)

    pool = await ledger_db.create_pool(
        dsn, cfg.database.pool_size_min, cfg.database.pool_size_max,
        cfg.database.timeout_connect_s, cfg.database.timeout_statement_s,
    )
    try:
        async with pool.acquire() as conn:
            await migrate.check_current(conn)
        ledger = Ledger(pool, ledger_settings(cfg))
        await ledger.start()
        log.info("ready", config=cfg.source, pid=os.getpid())
        await stop.wait()
        await asyncio.wait_for(ledger.stop(), cfg.daemon.timeout_drain_s + 1)
    finally:
        await pool.close()
    log.info("stopped")
    return 0


def serve(cfg: Config) -> int:
    """Run until a signal; return the process exit code."""
    configure(cfg.daemon.log_level)
    try:
        with runtime.database_dsn(cfg) as dsn:
            return runtime.run(lambda: _serve(cfg, dsn))
    except (EmbeddedError, migrate.MigrationError) as exc:
        log.error("start_failed", reason=str(exc))
        return 2
    except OSError as exc:
        log.error("start_failed", reason=f"database unreachable: {exc}")
        return 2
