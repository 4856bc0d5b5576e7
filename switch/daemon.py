"""The daemon's lifecycle: start, serve until a signal, drain, stop.

start: logs -> metrics endpoint -> master key -> database (configured or
embedded) -> schema check -> ledger writer -> listeners -> ready (logged with
the bound ports; READY=1 to systemd, then WATCHDOG=1 pings when asked).
SIGTERM/SIGINT: STOPPING=1, stop accepting, drain in-flight requests bounded
by ``timeout_drain_s``, close connections, stop the ledger, exit 0. A second
signal exits at once.

With ``[daemon] workers = N`` (N > 1) this process is a supervisor: it checks
the master key and the schema, opens N listening sockets per listener on one
port (SO_REUSEPORT: the kernel spreads connections over them), forks N workers
that each run the life above on their own socket, event loop, pool and ledger
writer, logs ``ready`` once all are serving, and speaks to systemd for them.
SIGTERM/SIGINT are passed on; a worker that dies stops the others and the
supervisor exits 1, so the service restarts whole.

With ``[portal] enabled`` the daemon (or the supervisor) starts the web portal
once ready, as a child process (switch.portal_child: the command line comes from
the caller, so the switch never imports the portal), restarts it when it dies,
and on SIGTERM stops it beside the listeners and waits for it to drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from ledger import db as ledger_db
from ledger import migrate
from ledger.accounts import receipt_reader
from ledger.engine import Ledger, LedgerSettings
from ledger.errors import SwitchdError, first_line
from ledger.loyalty import card_numbers
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.pins import PinChecker
from ledger.loyalty.vouchers import Desk, redemption_reader
from ledger.roles import privilege_message
from switch import keystore, notify, runtime
from switch.config import Config
from switch.logs import configure, get_logger
from switch.metrics import Metrics
from switch.pipeline import RrnAllocator, Services
from switch.portal_child import PortalChild
from switch.readiness import Readiness
from switch.server import Server, listen_sockets
from switch.terminals import TerminalStore

log = get_logger("switchd.daemon")


def ledger_settings(cfg: Config) -> LedgerSettings:
    """The ledger engine's bounds: the ``[ledger]`` section as configured."""
    return cfg.ledger


@dataclass(frozen=True)
class Worker:
    """What a worker process gets from its supervisor (``[daemon] workers`` > 1)."""

    index: int
    sockets: dict[str, socket.socket]  # this worker's listening socket per listener (SO_REUSEPORT)
    ready_fd: int  # write one byte here once serving


async def _serve(cfg: Config, dsn: str, worker: Worker | None = None, portal: PortalChild | None = None) -> int:
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

    # A worker stops on its supervisor's SIGTERM; Ctrl-C reaches the supervisor, which forwards it.
    for sig in (signal.SIGTERM,) if worker is not None else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)

    metrics = Metrics()
    metrics_port: int | None = None
    if cfg.metrics.enabled:
        # Workers serve their own metrics, on consecutive ports (scrape each; sum by job).
        port = cfg.metrics.port + worker.index if worker is not None and cfg.metrics.port else cfg.metrics.port
        metrics_port = metrics.serve(cfg.metrics.host, port)
    master_key = runtime.master_key(cfg)
    previous = keystore.load_previous_master_key(cfg.security.master_key_previous_file)
    previous_keys = () if previous is None else (previous,)
    if master_key is not None:
        card_numbers.set_master_key(master_key, previous_keys)
    pool = await ledger_db.create_pool(
        dsn, cfg.database.pool_size_min, cfg.database.pool_size_max,
        cfg.database.timeout_connect_s, cfg.database.timeout_statement_s, generic_plans=True,
    )
    watchdog: asyncio.Task[None] | None = None
    feed: asyncio.Task[None] | None = None
    portal_watch: asyncio.Task[None] | None = None
    try:
        async with pool.acquire() as conn:
            await migrate.check_current(conn)
            await card_numbers.check_ready(conn)
            if worker is None or worker.index == 0:
                await _warn_without_autovacuum(conn)
        ledger = Ledger(pool, ledger_settings(cfg), observer=metrics.observer())
        metrics.watch_pool(pool, lambda: ledger.queue_depth)
        await ledger.start()
        coalesced, linger_s = cfg.database.coalesced_inflight_max, cfg.database.coalesced_linger_ms / 1000.0
        loyalty = Loyalty(ledger, pool, coalesced_inflight_max=coalesced, coalesced_linger_s=linger_s,
                          preauth=cfg.preauth, exchange_settings=cfg.exchange)
        receipts = receipt_reader(pool, concurrency_max=coalesced, linger_s=linger_s)
        metrics.watch_coalescers({"receipts": receipts, **loyalty.coalescers()})
        metrics.watch_loyalty(loyalty)
        metrics.watch_vouchers(pool)
        desk = (Desk(master_key, cfg.vouchers, redemption_reader(pool, concurrency_max=coalesced, linger_s=linger_s))
                if master_key is not None else None)
        if desk is not None:
            metrics.watch_coalescers({"voucher_redemption": desk.reader})
        terminals = TerminalStore(pool, master_key, previous_keys)
        metrics.watch_terminal_feed(terminals)
        pins = PinChecker(pool, terminals.master_keys, cfg.security.pin_tries_max)
        metrics.watch_coalescers(pins.coalescers())
        feed = asyncio.create_task(terminals.follow_changes(
            lambda: ledger_db.connect(dsn, cfg.database.timeout_connect_s, "switchd-feed")), name="terminal-feed")
        services = Services(terminals, ledger, pool, metrics, RrnAllocator(pool), receipts, loyalty=loyalty,
                            refuse_unkeyed=cfg.security.unkeyed_terminals == "refuse",
                            vouchers=desk,
                            pins=pins,
                            chip_data_kept=cfg.security.chip_data_keep_days > 0)
        server = Server(cfg.listeners, services)
        # SIGHUP: read the master key files again (a master-key rotation, docs/operating.md).
        loop.add_signal_handler(signal.SIGHUP, _reload_master_keys, cfg, services, portal)
        # What start-up made lives as long as the process: out of the collector's sight, and
        # young-generation collections less often (a request allocates hundreds of objects).
        gc.freeze()
        gc.set_threshold(cfg.daemon.gc_gen0_threshold, *gc.get_threshold()[1:])
        ports = await server.start(worker.sockets if worker is not None else None)
        readiness = Readiness(pool)
        metrics.readiness = readiness
        readiness.serving = True
        await readiness.probe()  # ready at once when the primary is there, not a second later
        probing = asyncio.create_task(readiness.watch(), name="readiness")
        if worker is not None:
            log.info("worker_ready", worker=worker.index, pid=os.getpid(), metrics_port=metrics_port)
            os.write(worker.ready_fd, b"r")
        else:
            log.info("ready", config=cfg.source, pid=os.getpid(), listeners=ports, metrics_port=metrics_port,
                     master_key=master_key is not None, workers=1)
        notify.notify("READY=1")
        if portal is not None:
            portal.start()
            portal_watch = asyncio.create_task(_watch_portal(portal), name="portal-watch")
        interval_s = notify.watchdog_interval_s()
        if interval_s is not None:
            watchdog = asyncio.create_task(notify.watchdog(interval_s), name="watchdog")
        sweeper = asyncio.create_task(_sweep_holds(ledger), name="hold-sweeper")
        lag = asyncio.create_task(metrics.watch_event_loop(), name="loop-lag")
        await stop.wait()
        readiness.serving = False  # the load balancer sends new connections elsewhere from now on
        probing.cancel()
        if portal is not None:
            portal.stop()  # drains beside the listeners; waited for once the switch has stopped
        sweeper.cancel()
        lag.cancel()
        notify.notify("STOPPING=1")
        drained = await server.drain(cfg.daemon.timeout_drain_s)
        log.info("drained", **drained)
        await asyncio.wait_for(ledger.stop(), cfg.daemon.timeout_drain_s + 1)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if feed is not None:
            feed.cancel()
        if portal_watch is not None:
            portal_watch.cancel()
        await pool.close()
        metrics.stop()
    log.info("stopped")
    return 0


HOLD_SWEEP_INTERVAL_S = 30.0
PORTAL_POLL_S = 0.5
# After the daemon's own drain: how long more the portal may take to finish its requests.
PORTAL_STOP_GRACE_S = 5.0


def _reload_master_keys(cfg: Config, services: Services, portal: PortalChild | None) -> None:
    """Take the master key and the previous one from their files again; keep the old ones on error."""
    try:
        current = runtime.master_key(cfg)
        previous = keystore.load_previous_master_key(cfg.security.master_key_previous_file)
    except keystore.KeyStoreError as exc:
        log.error("master_keys_not_reloaded", reason=str(exc))
        return
    if current is not None:
        card_numbers.set_master_key(current, () if previous is None else (previous,))
    services.terminals.set_master_keys(current, () if previous is None else (previous,))
    if services.pins is not None:
        services.pins.master_keys = services.terminals.master_keys
    log.info("master_keys_reloaded", previous=previous is not None)
    if portal is not None:
        portal.restart()  # the portal seals keys too: it reads them at its start


async def _watch_portal(portal: PortalChild) -> None:
    """Restart the portal child when it dies (PortalChild decides when)."""
    while True:
        portal.poll()
        await asyncio.sleep(PORTAL_POLL_S)


async def _sweep_holds(ledger: Ledger) -> None:
    """Expire holds whose time is up, so that none outlives its bound (recon checks it)."""
    while True:
        await asyncio.sleep(HOLD_SWEEP_INTERVAL_S)
        try:
            expired = await ledger.expire_due_holds()
        except Exception as exc:  # a failed sweep is retried at the next interval
            log.warning("hold_sweep_failed", reason=first_line(exc))
            continue
        if expired:
            log.info("holds_expired", count=expired)


def serve(cfg: Config, portal_argv: list[str] | None = None) -> int:
    """Run until a signal; return the process exit code. With ``portal_argv`` (the command line of
    ``switchd portal``), run the portal as a supervised child once ready."""
    configure(cfg.daemon.log_level)
    return _guarded(lambda: _serve_with_database(cfg, portal_argv))


async def _warn_without_autovacuum(conn: asyncpg.Connection) -> None:
    """Say so at start when the server runs without autovacuum (docs/operating.md, PostgreSQL).

    The pool plans each statement once per connection, and the posting function's inner
    queries likewise; a plan made while a table was small stays until the table is analyzed.
    Without autovacuum nothing analyzes it, and lookups that should probe an index read the
    whole of a table that only grows.
    """
    if await conn.fetchval("SELECT current_setting('autovacuum')") == "off":
        log.warning("autovacuum_off", why="plans made while a table was small read it whole until it is analyzed",
                    fix="turn autovacuum on, or run ANALYZE after bulk loads and regularly")


def _serve_with_database(cfg: Config, portal_argv: list[str] | None = None) -> int:
    with runtime.database_dsn(cfg) as dsn:
        # The portal may connect as a role of its own ([portal] dsn), the switch never does.
        portal = PortalChild(portal_argv, cfg.portal.dsn or dsn, cfg.portal.url) if portal_argv else None
        try:
            if cfg.daemon.workers > 1:
                return _supervise(cfg, dsn, portal)
            return runtime.run(lambda: _serve(cfg, dsn, portal=portal))
        finally:
            if portal is not None:  # before an embedded cluster stops: the portal uses it
                portal.stop()
                portal.wait(cfg.daemon.timeout_drain_s + PORTAL_STOP_GRACE_S)


def _guarded(body: Callable[[], int]) -> int:
    """``body()``, with start-up failures logged as one line and exit code 2."""
    try:
        return body()
    except SwitchdError as exc:  # ours: the embedded cluster, the schema, the master key, ...
        log.error("start_failed", reason=str(exc))
        return 2
    except asyncpg.InsufficientPrivilegeError as exc:  # a role without a grant: say which, and the fix
        log.error("start_failed", reason=privilege_message(exc))
        return 2
    except OSError as exc:
        # Binding a listener or the metrics port fails with OSError too: say which.
        reason = str(exc) if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES) \
            else f"database unreachable: {exc}"
        log.error("start_failed", reason=reason)
        return 2


# ---------------------------------------------------------------------- workers

WORKER_READY_TIMEOUT_S = 60.0
WORKER_POLL_S = 0.1
PR_SET_PDEATHSIG = 1


async def _preflight(cfg: Config, dsn: str) -> None:
    """What would stop every worker, checked once in the supervisor: the key and the schema."""
    master_key = runtime.master_key(cfg)
    previous = keystore.load_previous_master_key(cfg.security.master_key_previous_file)
    if master_key is not None:
        card_numbers.set_master_key(master_key, () if previous is None else (previous,))
    conn = await ledger_db.connect(dsn, cfg.database.timeout_connect_s)
    try:
        await migrate.check_current(conn)
        await card_numbers.check_ready(conn)
    finally:
        await conn.close()


def _die_with_parent(parent_pid: int) -> None:
    # A worker whose supervisor is gone (SIGKILL, OOM) must not serve on alone.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os._exit(1)


def _run_worker(cfg: Config, dsn: str, worker: Worker, parent_pid: int) -> None:
    """The forked child: serve until SIGTERM, then exit (never returns)."""
    code = 70  # EX_SOFTWARE: anything unforeseen
    try:
        _die_with_parent(parent_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Only the supervisor speaks to systemd.
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            os.environ.pop(name, None)
        code = _guarded(lambda: runtime.run(lambda: _serve(cfg, dsn, worker)))
    except BaseException as exc:  # noqa: BLE001 - a worker reports and exits, whatever happened
        log.error("worker_failed", worker=worker.index, error=type(exc).__name__)
    finally:
        os._exit(code)


def _supervise(cfg: Config, dsn: str, portal: PortalChild | None = None) -> int:
    """Fork ``[daemon] workers`` processes sharing the listeners' ports; stop them together.

    Each worker has its own event loop, database pool, ledger writer and
    metrics port; the database (row locks, advisory locks, unique keys) keeps
    them consistent, as it keeps several daemons. A worker that dies stops the
    others: the service fails as a whole and its supervisor (systemd) restarts it.
    """
    runtime.run(lambda: _preflight(cfg, dsn))
    count = cfg.daemon.workers
    per_listener = {lc.name: listen_sockets(lc, count) for lc in cfg.listeners}
    ports = {name: int(socks[0].getsockname()[1]) for name, socks in per_listener.items()}
    ready_r, ready_w = os.pipe()
    parent_pid = os.getpid()
    children: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            own = {name: socks[index] for name, socks in per_listener.items()}
            for socks in per_listener.values():  # another worker's socket is not ours to hold open
                for i, sock in enumerate(socks):
                    if i != index:
                        sock.close()
            _run_worker(cfg, dsn, Worker(index, own, ready_w), parent_pid)
        children[pid] = index
    os.close(ready_w)
    for socks in per_listener.values():
        for sock in socks:
            sock.close()

    stopping = False
    failed = False

    def stop_all(sig: int = signal.SIGTERM) -> None:
        if portal is not None:
            portal.stop(sig)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            log.warning("shutdown_forced", signal=signal.Signals(signum).name)
            stop_all(signal.SIGKILL)
            return
        stopping = True
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        notify.notify("STOPPING=1")
        stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_reload(_signum: int, _frame: object) -> None:
        # Each worker reads the master key files again; the portal restarts to read them.
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
        if portal is not None:
            portal.restart()

    signal.signal(signal.SIGHUP, on_reload)

    def reap() -> None:
        nonlocal stopping, failed
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            if portal is not None and portal.reaped(pid, status):
                continue
            index = children.pop(pid, None)
            code = os.waitstatus_to_exitcode(status)
            if index is None:
                continue
            if code != 0 or not stopping:
                failed = True
                log.error("worker_exited", worker=index, pid=pid, exit_code=code)
                if not stopping:
                    stopping = True
                    notify.notify("STOPPING=1")
                    stop_all()

    # Ready when every worker says so (or give up: one failed, or too slow).
    ready = 0
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S + cfg.database.timeout_connect_s
    while ready < cfg.daemon.workers and not stopping and time.monotonic() < deadline:
        readable, _, _ = select.select([ready_r], [], [], WORKER_POLL_S)
        if readable:
            ready += len(os.read(ready_r, 64))
        reap()
    os.close(ready_r)
    if ready < cfg.daemon.workers and not stopping:
        log.error("start_failed", reason=f"{cfg.daemon.workers - ready} worker(s) not ready in time")
        failed = stopping = True
        stop_all()
    if not stopping:
        log.info("ready", config=cfg.source, pid=os.getpid(), listeners=ports, workers=cfg.daemon.workers,
                 metrics_port=cfg.metrics.port if cfg.metrics.enabled else None)
        notify.notify("READY=1")
        if portal is not None:
            portal.start()

    watchdog_s = notify.watchdog_interval_s()
    next_ping = time.monotonic()
    kill_at: float | None = None
    while children:
        reap()
        if portal is not None:
            portal.poll()
        now = time.monotonic()
        if watchdog_s is not None and not stopping and now >= next_ping:
            notify.notify("WATCHDOG=1")
            next_ping = now + watchdog_s
        if stopping and kill_at is None:
            kill_at = now + cfg.daemon.timeout_drain_s + 5.0
        if kill_at is not None and now >= kill_at:
            log.warning("workers_killed", pids=sorted(children))
            stop_all(signal.SIGKILL)
            kill_at = now + 5.0
        time.sleep(WORKER_POLL_S)
    log.info("stopped", workers=cfg.daemon.workers)
    return 1 if failed else 0
