"""Prometheus metrics: one registry for the daemon, served on [metrics] host:port at /metrics.

Label values are bounded by construction (listener names from config, MTIs
and transaction types from the routing table, response codes from our own
set, rejection reasons from code): a hostile terminal cannot grow the series.

>>> m = Metrics()
>>> m.requests.labels("pos", "0800", "none", "00").inc()
>>> b"switchd_requests_total" in m.render()
True
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    GC_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from ledger.engine import BatchObserver

# A scrape waits at most this long for the top-up card totals (one small aggregate query).
VOUCHER_READ_TIMEOUT_S = 2.0
# Request latency: sub-millisecond echoes up to handler timeouts.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
BATCH_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# How late the event loop runs a timer: ~0.1 ms idle; a few ms when busy; more is saturation.
LOOP_LAG_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LOOP_LAG_INTERVAL_S = 0.25
READY_PATH = "/ready"


class _Server(ThreadingWSGIServer):
    """One thread per request (a slow scrape does not hold up a health check); IPv6 when asked."""

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a health check every second would fill the daemon's log."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


class _PoolCollector(Collector):
    """Database pool gauges, read at scrape time (the pool is set once the daemon has one)."""

    def __init__(self) -> None:
        self.pool: Any = None
        self.queue_depth: Callable[[], int] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("switchd_db_pool_connections", "Database pool connections by state",
                              labels=["state"])
        pool = self.pool
        if pool is not None:
            # Plain attribute reads from the scrape thread: racy by at most one connection.
            size, idle = pool.get_size(), pool.get_idle_size()
            g.add_metric(["open"], size)
            g.add_metric(["idle"], idle)
            g.add_metric(["in_use"], size - idle)
            g.add_metric(["max"], pool.get_max_size())
        yield g
        q = GaugeMetricFamily("switchd_ledger_queue_depth", "Ledger commands waiting for a batch")
        if self.queue_depth is not None:
            q.add_metric([], self.queue_depth())
        yield q

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class _CoalescerCollector(Collector):
    """Coalesced statements (ledger.coalesce): calls made and statements sent, by statement name."""

    def __init__(self) -> None:
        self.coalescers: dict[str, Any] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        calls = CounterMetricFamily("switchd_db_coalesced_calls", "Single-row calls answered by coalesced "
                                    "statements", labels=["statement"])
        sent = CounterMetricFamily("switchd_db_coalesced_statements", "Coalesced statements sent to the "
                                   "database (calls / statements = mean batch)", labels=["statement"])
        for name, c in sorted(self.coalescers.items()):
            calls.add_metric([name], c.calls_total)
            sent.add_metric([name], c.batches_total)
        yield calls
        yield sent

    def describe(self) -> Iterator[CounterMetricFamily]:
        return iter(())


class _LoyaltyCollector(Collector):
    """The loyalty operations' counters, read at scrape time."""

    def __init__(self) -> None:
        self.loyalty: Any = None  # ledger.loyalty.operations.Loyalty, once the daemon has one

    def collect(self) -> Iterator[CounterMetricFamily]:
        overtaken = CounterMetricFamily(
            "switchd_compensations_overtaken", "Voids, refunds and reversals whose original changed between "
            "their read and their posting (guard taken): each read again and decided again")
        if self.loyalty is not None:
            overtaken.add_metric([], self.loyalty.overtaken_total)
        yield overtaken

    def describe(self) -> Iterator[CounterMetricFamily]:
        return iter(())


class _VoucherCollector(Collector):
    """Top-up card redemptions refused as guesses, and lockouts, per subject kind: the database's
    totals (every process's: the switch's terminals, the portal's members and client addresses),
    read on the event loop at each scrape, within VOUCHER_READ_TIMEOUT_S; the last figures read
    when that read fails."""

    SCOPES = ("member", "address", "terminal")

    def __init__(self) -> None:
        self.pool: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.totals: dict[str, tuple[int, int]] = {}

    def _read(self) -> None:
        if self.pool is None or self.loop is None or self.loop.is_closed():
            return
        try:
            if asyncio.get_running_loop() is self.loop:
                return  # on the loop's own thread the read could never run: the last figures
        except RuntimeError:
            pass  # no loop in this thread (the metrics server's): read through the daemon's
        from ledger.loyalty.vouchers import guessing_totals

        future = asyncio.run_coroutine_threadsafe(guessing_totals(self.pool), self.loop)
        try:
            self.totals = future.result(timeout=VOUCHER_READ_TIMEOUT_S)
        except Exception:  # a scrape must answer: the last figures stand
            future.cancel()

    def collect(self) -> Iterator[CounterMetricFamily]:
        self._read()
        failures = CounterMetricFamily(
            "switchd_voucher_redeem_failures", "Top-up card redemptions with an unknown serial or a wrong code, "
            "counted against each subject named (member, client address, terminal), by every process",
            labels=["scope"])
        lockouts = CounterMetricFamily(
            "switchd_voucher_lockouts", "Subjects locked out after too many failed top-up card redemptions, "
            "by every process", labels=["scope"])
        for scope in self.SCOPES:
            failed, locked = self.totals.get(scope, (0, 0))
            failures.add_metric([scope], failed)
            lockouts.add_metric([scope], locked)
        yield failures
        yield lockouts

    def describe(self) -> Iterator[CounterMetricFamily]:
        return iter(())


class _LedgerObserver:  # a ledger.engine.BatchObserver
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def batch_queued(self, seconds: float) -> None:
        self.metrics.ledger_queue_wait_seconds.observe(seconds)

    def batch_done(self, size: int, seconds: float, retries: int, failed: bool) -> None:
        m = self.metrics
        m.ledger_batch_size.observe(size)
        m.ledger_batch_seconds.observe(seconds)
        if failed:
            m.ledger_batches_failed.inc()


class Metrics:
    """Every metric the daemon exports, on a private registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        # The process (CPU seconds, resident memory, open descriptors) and Python's cycle
        # collector: objects it collects are reference cycles the request path should not make
        # (see docs/contributing.md, Compiled modules); a steady rate of them is a regression to look for.
        r.register(PROCESS_COLLECTOR)
        r.register(GC_COLLECTOR)
        self.requests = Counter("switchd_requests", "Requests answered",
                                ["listener", "mti", "processing", "response_code"], registry=r)
        self.request_seconds = Histogram("switchd_request_duration_seconds", "Request latency, frame in to response out",
                                         ["listener"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.connections = Gauge("switchd_connections", "Open terminal connections", ["listener"], registry=r)
        self.connections_rejected = Counter("switchd_connections_rejected", "Connections refused or cut",
                                            ["listener", "reason"], registry=r)
        self.frames_rejected = Counter("switchd_frames_rejected", "Frames that could not be framed or decoded, or were not requests",
                                       ["listener", "reason"], registry=r)
        self.mac_failures = Counter("switchd_mac_failures", "Requests with a bad or missing MAC", registry=r)
        self.ledger_batch_size = Histogram("switchd_ledger_batch_size", "Commands per ledger batch",
                                           buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.ledger_batch_seconds = Histogram("switchd_ledger_batch_duration_seconds", "Ledger batch round trip",
                                              buckets=BATCH_SECONDS_BUCKETS, registry=r)
        self.ledger_queue_wait_seconds = Histogram(
            "switchd_ledger_queue_wait_seconds", "How long each ledger batch's oldest command waited for "
            "the batch to start (a free slot, the linger)", buckets=BATCH_SECONDS_BUCKETS, registry=r)
        self.event_loop_lag_seconds = Histogram(
            "switchd_event_loop_lag_seconds", f"How late the event loop ran a timer due every "
            f"{LOOP_LAG_INTERVAL_S:g} s (every request waits this long at each step)",
            buckets=LOOP_LAG_BUCKETS_S, registry=r)
        self.ledger_batches_failed = Counter("switchd_ledger_batches_failed", "Ledger batches that failed",
                                             registry=r)
        self.terminal_feed_up = Gauge("switchd_terminal_feed_up",
                                      "1 while terminal changes are announced to this process (else the "
                                      "terminal cache lives 1 s)", registry=r)
        self._pool = _PoolCollector()
        r.register(self._pool)
        self._coalescers = _CoalescerCollector()
        r.register(self._coalescers)
        self._loyalty = _LoyaltyCollector()
        r.register(self._loyalty)
        self._vouchers = _VoucherCollector()
        r.register(self._vouchers)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        # What /ready answers from (switch.readiness.Readiness, set once the daemon has a pool).
        self.readiness: Any = None

    def observer(self) -> BatchObserver:
        """The ledger engine's batch hook feeding the batch histograms."""
        return _LedgerObserver(self)

    def watch_pool(self, pool: Any, queue_depth: Callable[[], int] | None = None) -> None:
        """Export gauges for this asyncpg pool (and the ledger queue depth)."""
        self._pool.pool = pool
        self._pool.queue_depth = queue_depth

    def watch_terminal_feed(self, terminals: Any) -> None:
        """Export whether this switch.terminals.TerminalStore follows announced changes."""
        self.terminal_feed_up.set_function(lambda: 1.0 if terminals.watched else 0.0)

    def watch_coalescers(self, coalescers: dict[str, Any]) -> None:
        """Export call and statement counters for these ledger.coalesce.Coalescer, by name."""
        self._coalescers.coalescers.update(coalescers)

    def watch_vouchers(self, pool: Any) -> None:
        """Export the database's top-up card guessing totals, read through this pool on the
        running event loop at each scrape."""
        self._vouchers.pool = pool
        self._vouchers.loop = asyncio.get_running_loop()

    def watch_loyalty(self, loyalty: Any) -> None:
        """Export the loyalty operations' counters (compensations overtaken)."""
        self._loyalty.loyalty = loyalty

    async def watch_event_loop(self, interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
        """Sample the event loop's lag until cancelled (run it as a task of the loop to watch).

        A loop busy with requests runs each ready callback in turn, so a timer fires late by
        about one turn of the loop: the delay every request also meets at each await.
        """
        loop = asyncio.get_running_loop()
        while True:
            due_s = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            self.event_loop_lag_seconds.observe(max(0.0, loop.time() - due_s))

    def render(self) -> bytes:
        """The exposition text, as /metrics serves it."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint in a daemon thread; return the bound port. It serves /ready
        (200 when ready, else 503; a load balancer's health check) and the metrics on any other
        path."""
        server = make_server(host, port, self._app(), _Server, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return int(server.server_port)

    def _app(self) -> Callable[..., Any]:
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("PATH_INFO") != READY_PATH:
                return metrics_app(environ, start_response)
            readiness = self.readiness
            ready = readiness is not None and readiness.ready
            body = json.dumps({"ready": ready, **(readiness.state() if readiness is not None else {})}).encode()
            start_response("200 OK" if ready else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
            return [body]

        return app

    def stop(self) -> None:
        """Stop the HTTP endpoint (bounded: the serving thread is a daemon thread)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
