"""A TCP proxy in front of PostgreSQL that breaks one connection at a chosen moment of a chosen statement.

Tests use it to lose a connection exactly while a posting commits: the switch must then find out
whether it committed before it answers. The proxy reads the frontend/backend protocol just enough
to know which statement a connection is executing: it remembers the names of prepared statements
whose SQL contains ``marker`` (asyncpg parses once per connection, then binds by name), and when
armed it cuts the first connection that executes one of them:

- ``arm("before")``: the Bind/Execute never reaches the server (provably not committed);
- ``arm("after")``: the server's answer, up to and including the ReadyForQuery that follows the
  implicit commit, is dropped (committed, and the client cannot know);
- ``arm("after_commit")``: for a statement inside a transaction, the answer to the COMMIT that
  follows it is dropped the same way.

``refuse_new`` makes it refuse new connections (the database unreachable while the client tries
to find out). It runs its own event loop in a thread, so it serves a daemon in a subprocess and
an asyncpg pool in the test's own loop alike.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


def upstream_of(dsn: str) -> tuple[str, int]:
    """The host and port a DSN (URL form) names.

    >>> upstream_of("postgresql://postgres@127.0.0.1:5432/x")
    ('127.0.0.1', 5432)
    """
    parts = urlsplit(dsn)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def through(dsn: str, port: int) -> str:
    """``dsn`` with its host and port replaced by the proxy's (127.0.0.1:``port``).

    >>> through("postgresql://postgres@127.0.0.1:5432/x?sslmode=disable", 6000)
    'postgresql://postgres@127.0.0.1:6000/x?sslmode=disable'
    """
    parts = urlsplit(dsn)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{user}127.0.0.1:{port}", parts.path, parts.query, parts.fragment))


@dataclass
class _Conn:
    statements: set[bytes] = field(default_factory=set)  # prepared statement names with the marker
    target: bool = False  # executing a marked statement
    commit_next: bool = False  # cut after the next COMMIT
    cut_after: bool = False  # drop the server's answer at its next ReadyForQuery, then close


class PgProxy:
    """``with PgProxy((host, port)) as proxy:`` listens on 127.0.0.1:``proxy.port`` and forwards there."""

    def __init__(self, upstream: tuple[str, int], marker: bytes = b"ledger.post_batch") -> None:
        self.upstream_host, self.upstream_port = upstream
        self.marker = marker
        self.port = 0
        self.refuse_new = False
        self.cuts = 0
        self._armed: str | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def __enter__(self) -> PgProxy:
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def arm(self, when: str) -> None:
        """Cut the next connection that executes a marked statement, ``before`` or ``after`` it."""
        assert when in ("before", "after", "after_commit")
        with self._lock:
            self._armed = when

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._armed is not None

    def _take_arm(self) -> str | None:
        with self._lock:
            when, self._armed = self._armed, None
            return when

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse_new:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            writer.close()
            return
        state = _Conn()
        closed = asyncio.Event()

        def close_both() -> None:
            for w in (writer, up_writer):
                w.transport.abort()
            closed.set()

        async def frontend() -> None:
            # Startup packets have no type byte: length, then the rest; an SSL or GSSAPI request
            # (refused by the server with one byte) comes before the real one.
            while True:
                head = await reader.readexactly(4)
                (n,) = struct.unpack("!I", head)
                body = await reader.readexactly(n - 4)
                up_writer.write(head + body)
                if not (n == 8 and struct.unpack("!I", body)[0] in (80877103, 80877104)):
                    break
            while True:
                kind = await reader.readexactly(1)
                head = await reader.readexactly(4)
                (n,) = struct.unpack("!I", head)
                body = await reader.readexactly(n - 4)
                if kind == b"P":
                    name = body.split(b"\0", 1)[0]
                    if self.marker in body:
                        state.statements.add(name)
                    else:
                        state.statements.discard(name)  # an unnamed statement is re-parsed each time
                elif kind == b"B":
                    statement = body.split(b"\0", 2)[1]
                    state.target = statement in state.statements
                elif kind == b"Q":
                    state.target = self.marker in body
                    if state.commit_next and body.lstrip().upper().startswith(b"COMMIT"):
                        state.cut_after = True
                if state.target and kind in (b"B", b"Q") and self.armed:
                    when = self._take_arm()
                    if when == "before":
                        self.cuts += 1
                        close_both()
                        return
                    if when == "after":
                        state.cut_after = True
                    else:
                        state.commit_next = True
                up_writer.write(kind + head + body)

        async def backend() -> None:
            pending = b""
            while True:
                chunk = await up_reader.read(65536)
                if not chunk:
                    close_both()
                    return
                if not state.cut_after:
                    writer.write(chunk)
                    continue
                # Hold the answer back; once its ReadyForQuery arrives (the commit is done),
                # drop it all and break the connection.
                pending += chunk
                offset = 0
                while len(pending) - offset >= 5:
                    (n,) = struct.unpack("!I", pending[offset + 1:offset + 5])
                    if len(pending) - offset < n + 1:
                        break
                    if pending[offset:offset + 1] == b"Z":
                        self.cuts += 1
                        close_both()
                        return
                    offset += n + 1

        tasks = [asyncio.ensure_future(frontend()), asyncio.ensure_future(backend())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except Exception:  # noqa: BLE001 - a proxy connection's end is no test failure
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not closed.is_set():
                close_both()
