"""Listeners and connections: asyncio protocols that frame bytes and run requests.

One :class:`Listener` per ``[[listeners]]`` entry; one :class:`Connection`
per terminal connection. A connection's life is explicit:

- open: refused at once (closed, counted) past ``connections_max``, or past
  ``connections_per_address_max`` from one client address (so one host cannot
  take every slot); refusals are counted one by one, logged at most once a
  second per listener and reason (with how many were not logged);
- reading: bytes go to the listener's :class:`~switch.framing.FrameDecoder`;
  each complete frame becomes a task (pipelining: responses are written as
  each is ready; terminals match them by STAN);
- backpressure: at ``inflight_per_connection_max`` tasks, or when the peer is
  not reading our responses, the connection stops reading until it drains;
- timeouts: no complete frame for ``timeout_idle_s`` closes it (not while a
  request of its own is in flight); a frame started but not finished within
  ``timeout_frame_s`` closes it (slow-loris), not counted while we are the
  ones not reading;
- bad framing (oversize, bad header or TPDU) and unreadable MTIs close it;
- drain (shutdown): stop reading, let in-flight requests answer, then close.

Other connections never notice what one connection does.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, cast

from switch.config import ListenerConfig
from switch.framing import Frame, FrameDecoder, FrameError, encode_frame
from switch.logs import get_logger
from switch.pipeline import Pipeline, Services

log = get_logger("switchd.server")

TLS_MIN_VERSION = ssl.TLSVersion.TLSv1_2
LISTEN_BACKLOG = 1024
# Responses buffered for a peer that does not read before we stop reading from it.
WRITE_BUFFER_HIGH_BYTES = 256 * 1024
# A flood of refused connections must not become a flood of log lines.
REFUSAL_LOG_INTERVAL_S = 1.0


class RefusalLog:
    """At most one ``connection_rejected`` line per reason per interval; the rest are counted and
    reported with the next line (``not_logged``). The metric counts every refusal regardless."""

    def __init__(self, listener_name: str, interval_s: float = REFUSAL_LOG_INTERVAL_S) -> None:
        self.listener_name = listener_name
        self.interval_s = interval_s
        self._last_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def refused(self, now_s: float, reason: str, peer: str) -> bool:
        """Note a refusal; True when it was logged."""
        if now_s - self._last_s.get(reason, -self.interval_s) < self.interval_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return False
        self._last_s[reason] = now_s
        log.warning("connection_rejected", listener=self.listener_name, peer=peer, reason=reason,
                    not_logged=self._suppressed.pop(reason, 0))
        return True


def tls_context(cfg: ListenerConfig) -> ssl.SSLContext | None:
    """A server TLS context (TLS 1.2 or newer) when the listener has a certificate."""
    if not cfg.tls_cert_file:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_MIN_VERSION
    ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    return ctx


class Listener:
    """One listening socket, its connections and their in-flight requests."""

    def __init__(self, cfg: ListenerConfig, services: Services) -> None:
        self.cfg = cfg
        self.services = services
        self.pipeline = Pipeline(cfg, services)
        self.connections: set[Connection] = set()
        # Open connections per client address (host only), for connections_per_address_max.
        self.per_address: dict[str, int] = {}
        self.refusals = RefusalLog(cfg.name)
        self.tasks: set[asyncio.Task[None]] = set()
        self.draining = False
        self.port = cfg.port
        self._server: asyncio.AbstractServer | None = None

    async def start(self, sock: socket.socket | None = None) -> int:
        """Bind and listen (or accept on ``sock``, already listening, shared by workers);
        return the bound port (config port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        handshake_s = self.cfg.timeout_frame_s if self.cfg.tls_cert_file else None
        if sock is not None:
            self._server = await loop.create_server(
                lambda: Connection(self), sock=sock, ssl=tls_context(self.cfg), backlog=LISTEN_BACKLOG,
                ssl_handshake_timeout=handshake_s)
        else:
            self._server = await loop.create_server(
                lambda: Connection(self), self.cfg.host, self.cfg.port, ssl=tls_context(self.cfg),
                backlog=LISTEN_BACKLOG, reuse_address=True, ssl_handshake_timeout=handshake_s)
        # Any: uvloop's server gives a list where asyncio's typing says tuple.
        server: Any = self._server
        sockets: list[Any] = list(server.sockets or [])
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.cfg.port
        return self.port

    def stop_accepting(self) -> None:
        """Close the listening socket and stop reading from every connection."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.update_reading()

    def close_all(self, reason: str) -> None:
        for conn in list(self.connections):
            conn.close(reason)


class Connection(asyncio.Protocol):
    """One terminal connection (see the module docstring for its lifecycle)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        cfg = listener.cfg
        self.cfg = cfg
        self.decoder = FrameDecoder(cfg.framing, cfg.tpdu, cfg.frame_bytes_max)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.peer = "?"
        self.address = "?"
        self.inflight = 0
        self.closing = False
        self.close_reason: str | None = None
        self.eof = False
        self.reading = True
        self.write_blocked = False
        self._write_blocked_since_s: float | None = None
        self.accepted = False
        self.frames_total = 0
        self._last_frame_s = 0.0
        self._frame_started_s: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have its interface.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        lst = self.listener
        metrics = lst.services.metrics
        reason = None
        if lst.draining:
            reason = "draining"
        elif len(lst.connections) >= self.cfg.connections_max:
            reason = "connections_max"
        elif lst.per_address.get(self.address, 0) >= self.cfg.connections_per_address_max:
            reason = "connections_per_address_max"
        if reason is not None:
            metrics.connections_rejected.labels(self.cfg.name, reason).inc()
            lst.refusals.refused(self.loop.time(), reason, self.peer)
            self.closing = True
            transport.abort()
            return
        self.accepted = True
        lst.connections.add(self)
        lst.per_address[self.address] = lst.per_address.get(self.address, 0) + 1
        metrics.connections.labels(self.cfg.name).inc()
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)
        self._last_frame_s = self.loop.time()
        self._schedule()
        log.info("connection_open", listener=self.cfg.name, peer=self.peer)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.decoder.push(data)
        self._pump()

    def eof_received(self) -> bool:
        # The peer finished sending; answer what it already sent, then close. An
        # unfinished frame can never complete now. TLS cannot half-close: it closes.
        self.eof = True
        if self.inflight == 0:
            self.close("peer_closed")
        return not self.cfg.tls_cert_file

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.closing = True
        if not self.accepted:
            return
        self.accepted = False
        self.listener.connections.discard(self)
        left = self.listener.per_address.get(self.address, 1) - 1
        if left > 0:
            self.listener.per_address[self.address] = left
        else:
            self.listener.per_address.pop(self.address, None)
        self.listener.services.metrics.connections.labels(self.cfg.name).dec()
        reason = self.close_reason or ("peer_reset" if exc is not None else "peer_closed")
        log.info("connection_close", listener=self.cfg.name, peer=self.peer, reason=reason,
                 frames=self.frames_total)

    def pause_writing(self) -> None:
        self.write_blocked = True
        self._write_blocked_since_s = self.loop.time()
        self.update_reading()

    def resume_writing(self) -> None:
        self.write_blocked = False
        self._write_blocked_since_s = None
        self.update_reading()
        self._pump()

    # ------------------------------------------------------------------ reading and backpressure

    def close(self, reason: str) -> None:
        """Close after flushing what is already written; ``reason`` goes to the log."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        if self.transport is not None:
            self.transport.close()

    def _may_read(self) -> bool:
        return (not self.closing and not self.listener.draining and not self.write_blocked
                and self.inflight < self.cfg.inflight_per_connection_max)

    def update_reading(self) -> None:
        """Pause or resume the transport to match the backpressure conditions."""
        if self.transport is None or self.closing:
            return
        want = self._may_read()
        if want and not self.reading:
            self.reading = True
            self.transport.resume_reading()
            # Time spent paused by us is not the peer's slowness.
            now = self.loop.time()
            self._last_frame_s = now
            if self._frame_started_s is not None:
                self._frame_started_s = now
            self._schedule()
        elif not want and self.reading:
            self.reading = False
            self.transport.pause_reading()

    def _pump(self) -> None:
        """Start tasks for buffered complete frames while the bounds allow."""
        metrics = self.listener.services.metrics
        while self._may_read():
            try:
                frame = self.decoder.next_frame()
            except FrameError as exc:
                metrics.frames_rejected.labels(self.cfg.name, exc.reason).inc()
                log.warning("frame_rejected", listener=self.cfg.name, peer=self.peer, reason=exc.reason,
                            detail=exc.detail)
                self.close(exc.reason)
                return
            if frame is None:
                break
            now = self.loop.time()
            self._last_frame_s = now
            self._frame_started_s = None
            self.frames_total += 1
            if frame.keepalive:
                continue
            self.inflight += 1
            task = self.loop.create_task(self._serve(frame))
            self.listener.tasks.add(task)
            task.add_done_callback(self._done)
        if self.decoder.pending_bytes and self._frame_started_s is None:
            self._frame_started_s = self.loop.time()
        elif not self.decoder.pending_bytes:
            self._frame_started_s = None
        self.update_reading()
        self._schedule()

    async def _serve(self, frame: Frame) -> None:
        # Let the loop turn once before answering a network management message (echo, sign-on:
        # they need no database), so that it is not answered in the very step that read it.
        # Measured (bench/wire, 400 echoes in flight): without this turn some echoes waited
        # over 5 s while the median was 16 ms; with it none did (p99 ~1.1 s under that
        # saturation). Financial requests wait for the database anyway: for them the turn was
        # a task step of pure cost.
        if frame.message[:2] == b"08":
            await asyncio.sleep(0)
        out = await self.listener.pipeline.handle(frame.message, self.peer)
        if out is None:
            self.close("unreadable_mti")
            return
        if out and self.transport is not None and not self.transport.is_closing():  # empty: no answer
            self.transport.write(encode_frame(self.cfg.framing, out, frame.tpdu))

    def _done(self, task: asyncio.Task[None]) -> None:
        self.listener.tasks.discard(task)
        self.inflight -= 1
        if not task.cancelled() and task.exception() is not None:  # pipeline guards; this is a last resort
            log.error("request_task_failed", listener=self.cfg.name, peer=self.peer,
                      error=type(task.exception()).__name__)
        if self.closing:
            return
        self._last_frame_s = self.loop.time()
        self.update_reading()
        self._pump()
        if self.eof and self.inflight == 0:
            self.close("peer_closed")

    # ------------------------------------------------------------------ timers

    def _deadline(self) -> float:
        deadline = self._last_frame_s + self.cfg.timeout_idle_s
        if self._frame_started_s is not None:
            deadline = min(deadline, self._frame_started_s + self.cfg.timeout_frame_s)
        return deadline

    def _schedule(self) -> None:
        # One timer per connection, moved only when the nearest deadline gets earlier:
        # cheap enough for ten thousand idle connections.
        if self.closing:
            return
        deadline = self._deadline()
        if self._timer is not None and self._timer.when() <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closing:
            return
        now = self.loop.time()
        blocked_since = self._write_blocked_since_s
        if blocked_since is not None and now >= blocked_since + self.cfg.timeout_idle_s:
            # The peer has not read our answers for timeout_idle_s: it holds a slot and
            # our write buffer. Abort: a graceful close would wait on it to read.
            self.listener.services.metrics.connections_rejected.labels(self.cfg.name, "write_timeout").inc()
            self.closing = True
            self.close_reason = "write_timeout"
            if self.transport is not None:
                self.transport.abort()
            return
        if not self.reading:
            # We are the ones not reading (backpressure, drain): nothing to hold against the peer.
            self._last_frame_s = now
            if self._frame_started_s is not None:
                self._frame_started_s = now
        elif self._frame_started_s is not None and now >= self._frame_started_s + self.cfg.timeout_frame_s:
            self.listener.services.metrics.frames_rejected.labels(self.cfg.name, "timeout_frame").inc()
            self.close("frame_timeout")
            return
        elif now >= self._last_frame_s + self.cfg.timeout_idle_s:
            if self.inflight == 0:
                self.close("idle_timeout")
                return
            self._last_frame_s = now  # waiting on us, not idle
        self._schedule()


class Server:
    """Every configured listener, started and drained together."""

    def __init__(self, listeners: list[ListenerConfig], services: Services) -> None:
        self.listeners = [Listener(cfg, services) for cfg in listeners]

    async def start(self, sockets: dict[str, socket.socket] | None = None) -> dict[str, int]:
        """Listen on every listener (on ``sockets[name]`` when given); return name -> bound port."""
        return {lst.cfg.name: await lst.start((sockets or {}).get(lst.cfg.name)) for lst in self.listeners}

    async def drain(self, timeout_s: float) -> dict[str, Any]:
        """Stop accepting and reading, wait (bounded) for in-flight requests, close everything."""
        for lst in self.listeners:
            lst.stop_accepting()
        tasks = set().union(*[lst.tasks for lst in self.listeners])
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for lst in self.listeners:
            lst.close_all("shutdown")
        for task in pending:
            task.cancel()
        # Let transports flush and report connection_lost before the loop goes away.
        await asyncio.sleep(0)
        return {"inflight_at_stop": len(tasks), "abandoned": len(pending)}


def listen_sockets(cfg: ListenerConfig, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address (SO_REUSEPORT), one per worker process.

    The kernel spreads new connections over them by their address hash, so each
    worker accepts its share, and a worker that stops takes only its own socket
    away. With port 0 the first socket picks the port and the others join it.
    """
    family, kind, proto, _name, address = socket.getaddrinfo(
        cfg.host or None, cfg.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            if sockets[0] is sock:
                address = sock.getsockname()  # port 0 resolved: the others bind the same
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
