"""The daemon's lifecycle: start, serve until a signal, drain, stop.

start: logs -> metrics endpoint -> master key -> database (configured or
embedded) -> schema check -> ledger writer -> listeners -> ready (logged with
the bound ports; READY=1 to systemd, then WATCHDOG=1 pings when asked).
SIGTERM/SIGINT: STOPPING=1, stop accepting, drain in-flight requests bounded
by ``timeout_drain_s``, close connections, stop the ledger, exit 0. A second
signal exits at once.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal

from ledger import db as ledger_db
from ledger import migrate
from ledger.accounts import receipt_reader
from ledger.embedded import EmbeddedError
from ledger.engine import Ledger, LedgerSettings
from ledger.loyalty.operations import Loyalty
from switch import keystore, notify, runtime
from switch.config import Config
from switch.logs import configure, get_logger
from switch.metrics import Metrics
from switch.pipeline import RrnAllocator, Services
from switch.server import Server
from switch.terminals import TerminalStore

log = get_logger("switchd.daemon")


def ledger_settings(cfg: Config) -> LedgerSettings:
    lc = cfg.ledger
    return LedgerSettings(
        batch_size_max=lc.batch_size_max, batch_linger_ms=lc.batch_linger_ms,
        batches_inflight_max=lc.batches_inflight_max, queue_depth_max=lc.queue_depth_max,
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

    metrics = Metrics()
    metrics_port: int | None = None
    if cfg.metrics.enabled:
        metrics_port = metrics.serve(cfg.metrics.host, cfg.metrics.port)
    master_key = keystore.load_master_key(cfg.security.master_key_file, cfg.security.master_key_env)
    pool = await ledger_db.create_pool(
        dsn, cfg.database.pool_size_min, cfg.database.pool_size_max,
        cfg.database.timeout_connect_s, cfg.database.timeout_statement_s,
    )
    watchdog: asyncio.Task[None] | None = None
    try:
        async with pool.acquire() as conn:
            await migrate.check_current(conn)
        ledger = Ledger(pool, ledger_settings(cfg), observer=metrics.observer())
        metrics.watch_pool(pool, lambda: ledger.queue_depth)
        await ledger.start()
        loyalty = Loyalty(ledger, pool)
        receipts = receipt_reader(pool)
        metrics.watch_coalescers({"receipts": receipts, **loyalty.coalescers()})
        services = Services(TerminalStore(pool, master_key), ledger, pool, metrics, RrnAllocator(pool),
                            loyalty=loyalty, receipts=receipts)
        server = Server(cfg.listeners, services)
        ports = await server.start()
        log.info("ready", config=cfg.source, pid=os.getpid(), listeners=ports, metrics_port=metrics_port,
                 master_key=master_key is not None)
        notify.notify("READY=1")
        interval_s = notify.watchdog_interval_s()
        if interval_s is not None:
            watchdog = asyncio.create_task(notify.watchdog(interval_s), name="watchdog")
        sweeper = asyncio.create_task(_sweep_holds(ledger), name="hold-sweeper")
        await stop.wait()
        sweeper.cancel()
        notify.notify("STOPPING=1")
        drained = await server.drain(cfg.daemon.timeout_drain_s)
        log.info("drained", **drained)
        await asyncio.wait_for(ledger.stop(), cfg.daemon.timeout_drain_s + 1)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await pool.close()
        metrics.stop()
    log.info("stopped")
    return 0


HOLD_SWEEP_INTERVAL_S = 30.0


async def _sweep_holds(ledger: Ledger) -> None:
    """Expire holds whose time is up, so that none outlives its bound (recon checks it)."""
    while True:
        await asyncio.sleep(HOLD_SWEEP_INTERVAL_S)
        try:
            expired = await ledger.expire_due_holds()
        except Exception as exc:  # a failed sweep is retried at the next interval
            log.warning("hold_sweep_failed", reason=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
        if expired:
            log.info("holds_expired", count=expired)


def serve(cfg: Config) -> int:
    """Run until a signal; return the process exit code."""
    configure(cfg.daemon.log_level)
    try:
        with runtime.database_dsn(cfg) as dsn:
            return runtime.run(lambda: _serve(cfg, dsn))
    except (EmbeddedError, migrate.MigrationError) as exc:
        log.error("start_failed", reason=str(exc))
        return 2
    except keystore.KeyStoreError as exc:
        log.error("start_failed", reason=str(exc))
        return 2
    except OSError as exc:
        # Binding a listener or the metrics port fails with OSError too: say which.
        reason = str(exc) if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES) \
            else f"database unreachable: {exc}"
        log.error("start_failed", reason=reason)
        return 2
