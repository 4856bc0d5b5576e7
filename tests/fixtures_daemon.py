"""A real ``switchd serve`` in a subprocess, and a blocking ISO 8583 terminal client.

Imported by tests/conftest.py (fixtures) and by test modules (helpers):
``from fixtures_daemon import Daemon, Terminal, ...`` works because conftest
puts this directory on ``sys.path``. Starting, watching and stopping the daemon
is tools/harness.py's, shared with the benchmarks; this module adds what tests need.

- ``daemon_db`` (module scope): a fresh migrated database for one test module.
- ``start_daemon`` (function scope): a factory, ``start_daemon(dsn, listeners=[...])``,
  that writes a temporary TOML config (every port 0: the daemon binds free
  ports and logs them in its ``ready`` line), runs the daemon with a master key
  in its environment, waits for ``ready`` and returns a :class:`Daemon`. Every
  daemon still running at the end of the test is stopped with SIGTERM and must
  exit 0.

A daemon may only be started by a test of the ``e2e`` tier (tests/conftest.py):
``Daemon.start`` fails the test otherwise, so that ``make test-fast`` never runs one.

The client builds messages with pyiso8583 and the specs only, and MACs them
itself, so it does not share the server's codec.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import iso8583
import pytest

import specs
from switch import mac as swmac
from tools import harness
from tools.harness import with_database  # noqa: F401 - re-exported: test modules import it from here

SWITCHD = harness.SWITCHD
BEAN_CHECK = str(Path(sys.executable).with_name("bean-check"))
MASTER_KEY_HEX = "5a" * 32
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
# Well-known test PANs (Luhn-valid); the log test greps for them.
PAN_1 = "6212345678901232"
PAN_2 = "6220001234567898"
CMAC_KEY_HEX = "2b7e151628aed2a6abf7158809cf4f3c"
X919_KEY_HEX = "0123456789abcdeffedcba9876543210"

POS_LISTENER: dict[str, Any] = {"name": "pos", "framing": "nac2", "spec": "pos", "sign_on_required": True}
POS_TPDU_LISTENER: dict[str, Any] = {"name": "pos_tpdu", "framing": "nac2", "tpdu": True, "spec": "pos",
                                     "sign_on_required": True}
MIS_LISTENER: dict[str, Any] = {"name": "mis", "framing": "ascii4", "spec": "mis", "sign_on_required": False}

# Values that must never reach a daemon's log: keys, PIN blocks, chip data. Every test daemon's log
# is searched for each of them when it stops (Daemon.stop); tests add what they send (never_logged).
NEVER_LOGGED: set[str] = {MASTER_KEY_HEX, CMAC_KEY_HEX, X919_KEY_HEX}
NEVER_LOGGED_MIN_CHARS = 12  # shorter values could occur by chance


def never_logged(*values: str) -> None:
    """Register secret values (hex or text) that no daemon log of the suite may contain."""
    for value in values:
        assert len(value) >= NEVER_LOGGED_MIN_CHARS, "too short to search for without false alarms"
        NEVER_LOGGED.add(value)


def secrets_in_log(text: str) -> list[str]:
    """The registered secrets found in a log (compared case-insensitively: hex may be either)."""
    lowered = text.lower()
    return sorted(v[:6] + "..." for v in NEVER_LOGGED if v.lower() in lowered)


# Set by tests/conftest.py around each test: its tiers, which say whether it may start a daemon.
current_tiers: frozenset[str] = frozenset()


# ---------------------------------------------------------------------- database per module


@pytest.fixture(scope="module")
def daemon_db(admin_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database shared by one test module's daemons."""
    with harness.private_database(admin_dsn, "switchd_d", template=template_db) as db:
        yield db.dsn


def db_run(dsn: str, fn: Callable[[asyncpg.Connection], Any]) -> Any:
    """Run ``await fn(conn)`` on a fresh connection (from sync test code)."""

    async def main() -> Any:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


# ---------------------------------------------------------------------- the daemon


def write_config(path: Path, dsn: str, listeners: list[dict[str, Any]], *, drain_s: float = 5.0,
                 metrics: bool = True, extra: dict[str, dict[str, Any]] | None = None, workers: int = 1) -> None:
    """The tests' switchd.toml at ``path``: every port 0, a small pool; ``extra`` adds or
    overrides keys by section."""
    path.write_text(config_text(path.parent, dsn, listeners, drain_s=drain_s, metrics=metrics, extra=extra,
                                workers=workers), encoding="utf-8")


def config_text(workdir: Path, dsn: str, listeners: list[dict[str, Any]], *, drain_s: float = 5.0,
                metrics: bool = True, extra: dict[str, dict[str, Any]] | None = None, workers: int = 1) -> str:
    """What ``write_config`` writes (state under ``workdir``)."""
    sections: dict[str, dict[str, Any]] = {
        "daemon": {"state_dir": str(workdir / "state"), "timeout_drain_s": drain_s, "workers": workers},
        "database": {"dsn": dsn, "pool_size_min": 1, "pool_size_max": 4},
        "metrics": {"enabled": metrics, "host": "127.0.0.1", "port": 0},
        # Tests that want the portal child enable it with a free port (extra={"portal": ...}).
        "portal": {"enabled": False},
        # Most tests' terminals have no MAC key; the default (refuse) has its own test
        # (test_server_e2e.py, the abuse daemon).
        "security": {"unkeyed_terminals": "allow"},
    }
    for section, values in (extra or {}).items():
        sections[section] = {**sections.get(section, {}), **values}
    return harness.render_config(sections, [{"host": "127.0.0.1", "port": 0, **lst} for lst in listeners])


class Daemon(harness.Daemon):
    """A running ``switchd serve`` (tools/harness.py) with the tests' config, fixed master key
    and provisioning helpers."""

    def __init__(self, workdir: Path, dsn: str, listeners: list[dict[str, Any]],
                 env: dict[str, str] | None = None, **config: Any) -> None:
        super().__init__(workdir, config_text(workdir, dsn, listeners, **config), master_key_hex=MASTER_KEY_HEX,
                         env=env, ready_timeout_s=READY_TIMEOUT_S, stop_timeout_s=STOP_TIMEOUT_S)
        self.dsn = dsn

    def start(self) -> Daemon:
        # The tiers promise that only e2e tests run a daemon (`make test-fast` has none).
        if "e2e" not in current_tiers:
            pytest.fail("this test starts a daemon but is not in the e2e tier: mark it "
                        "@pytest.mark.e2e (or use the start_daemon / daemon_db fixtures)", pytrace=False)
        super().start()
        return self

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code (0 for a daemon never started).

        Fails the test when the log holds a registered secret (NEVER_LOGGED).
        """
        code = super().stop() or 0
        if self.log_path.exists():
            found = secrets_in_log(self.log_path.read_text(encoding="utf-8", errors="replace"))
            assert not found, f"secrets in the daemon's log {self.log_path}: {found}"
        return code

    # -------------------------------------------------------------- provisioning

    def provision(self, program: str, merchant: str, terminals: list[str], cards: list[str],
                  issue_price_minor: int = 5, redeem_value_minor: int = 4) -> None:
        """With the real CLI: an alliance program, one merchant earning 1 point per currency
        unit, its terminals keyed for AES-CMAC (CMAC_KEY_HEX), cards valid until 2030-12."""
        self.cli("program", "add", program, "--name", f"{program} program", "--kind", "alliance",
                 "--issue-price-minor", str(issue_price_minor), "--redeem-value-minor", str(redeem_value_minor))
        self.cli("merchant", "add", merchant, "--name", f"{merchant} merchant", "--program", program,
                 "--earn-rate", "1")
        for tid in terminals:
            self.cli("terminal", "add", tid, "--merchant", merchant, "--mac-alg", "cmac-aes",
                     "--mac-key", CMAC_KEY_HEX)
        for pan in cards:
            self.cli("card", "issue", pan, "--expiry", "3012")

    def add_terminal(self, tid: str, merchant: str = "M0000001", mac_alg: str | None = None,
                     mac_key_hex: str | None = None, signed_on: bool = False) -> None:
        """Insert a terminal with the same code the CLI uses (faster than a subprocess)."""
        from switch.terminals import add_terminal

        async def body(conn: asyncpg.Connection) -> None:
            await add_terminal(conn, tid, merchant, mac_alg, mac_key_hex, bytes.fromhex(MASTER_KEY_HEX))
            if signed_on:
                await conn.execute("UPDATE switch.terminals SET signed_on = true WHERE terminal_id = $1", tid)

        db_run(self.dsn, body)

    def scrape(self) -> str:
        assert self.metrics_port, "metrics are disabled"
        return self.metrics_text(self.metrics_port)

    @staticmethod
    def scrape_port(port: int) -> str:
        return harness.Daemon.metrics_text(port)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Factory: ``start_daemon(dsn, listeners, **config) -> Daemon`` (stopped at teardown, exit 0 checked)."""
    started: list[Daemon] = []

    def factory(dsn: str, listeners: list[dict[str, Any]] | None = None, **kw: Any) -> Daemon:
        workdir = tmp_path / f"d{len(started)}"
        workdir.mkdir()
        d = Daemon(workdir, dsn, listeners or [POS_LISTENER, POS_TPDU_LISTENER, MIS_LISTENER], **kw)
        started.append(d)
        return d.start()

    yield factory
    codes = [(d.log_path, d.stop()) for d in started]
    for path, code in codes:
        assert code == 0, f"daemon exited {code}; log {path}"


# ---------------------------------------------------------------------- the terminal side


def nac2(message: bytes, tpdu: bytes | None = None) -> bytes:
    body = (tpdu or b"") + message
    return len(body).to_bytes(2, "big") + body


def ascii4(message: bytes) -> bytes:
    return b"%04d" % len(message) + message


def utc_stamp(offset_s: int = 0) -> str:
    """Field 7 (MMDDhhmmss, UTC) for now + offset."""
    return time.strftime("%m%d%H%M%S", time.gmtime(time.time() + offset_s))


_stan = int.from_bytes(secrets.token_bytes(2), "big")


def next_stan() -> str:
    global _stan
    _stan = (_stan + 1) % 1_000_000
    return f"{_stan:06d}"


def pad(value: str, n: int) -> str:
    return value.ljust(n)


IN_DOUBT = ("91", "96")  # "the switch cannot say": the terminal retransmits


def until_decided(send: Callable[[], dict[str, str]], attempts: int = 50, pause_s: float = 0.2) -> dict[str, str]:
    """``send()`` again while the answer is 91/96 (the database may be away): the first other answer.

    Fails the test when it is still undecided after ``attempts``.
    """
    for _ in range(attempts):
        resp = send()
        if resp["39"] not in IN_DOUBT:
            return resp
        time.sleep(pause_s)
    raise AssertionError(f"still {resp['39']} after {attempts} attempts")


def signed_on(port: int, tid: str, timeout_s: float = 10.0) -> Terminal:
    """A POS connection whose terminal has signed on (0800 001), retried while undecided."""
    t = Terminal(port, "nac2", "pos", timeout_s=timeout_s)
    try:
        resp = until_decided(lambda: t.call(netmgmt(tid, "001")), pause_s=0.1)
    except BaseException:
        t.close()
        raise
    if resp["39"] != "00":
        t.close()
        raise AssertionError(f"{tid} could not sign on: {resp['39']}")
    return t


def netmgmt(tid: str, code: str = "301", stan: str | None = None) -> dict[str, str]:
    return {"t": "0800", "7": utc_stamp(), "11": stan or next_stan(), "41": pad(tid, 8), "70": code}


def purchase(tid: str, mid: str = "M0000001", pan: str = PAN_1, amount: int = 100, stan: str | None = None,
             when: str | None = None, pc: str = "000000") -> dict[str, str]:
    return {"t": "0200", "2": pan, "3": pc, "4": f"{amount:012d}", "7": when or utc_stamp(),
            "11": stan or next_stan(), "41": pad(tid, 8), "42": pad(mid, 15), "49": "156"}


def mac_field_for(fields: dict[str, str]) -> str:
    return "128" if any(k.isdigit() and int(k) > 64 and k != "128" for k in fields) else "64"


def encode(fields: dict[str, str], spec_name: str, mac: tuple[str, str] | None = None,
           mac_override: bytes | None = None) -> bytes:
    """Encode a request; with ``mac=(alg, key_hex)`` append a MAC computed over the bytes as sent."""
    spec = specs.load(spec_name)
    doc = {k: v for k, v in fields.items() if k not in ("p", "1")}
    if mac is None and mac_override is None:
        raw, _ = iso8583.encode(doc, spec)
        return bytes(raw)
    where = mac_field_for(doc)
    doc[where] = "0" * 16
    raw, _ = iso8583.encode(doc, spec)
    n = int(spec[where]["max_len"])
    body = bytes(raw)[:-n]
    if mac_override is not None:
        tag = mac_override
    else:
        assert mac is not None
        tag = swmac.compute(mac[0], bytes.fromhex(mac[1]), body)
    return body + (tag if n == 8 else tag.hex().upper().encode())


def decode(raw: bytes, spec_name: str) -> dict[str, str]:
    doc, _ = iso8583.decode(raw, specs.load(spec_name))
    return dict(doc)


def check_mac(raw: bytes, spec_name: str, alg: str, key_hex: str) -> bool:
    """True when a response's MAC (64 or 128, the last field) is right."""
    fields = decode(raw, spec_name)
    where = "128" if "1" in fields else "64"
    if where not in fields:
        return False
    spec = specs.load(spec_name)
    n = int(spec[where]["max_len"])
    return swmac.verify(alg, bytes.fromhex(key_hex), raw[:-n], bytes.fromhex(fields[where]))


def tlv(field_48: str) -> dict[str, str]:
    """Field 48's tag-length-value items (2-char tag, 3-digit length, value) as a dict."""
    out, i = {}, 0
    while i < len(field_48):
        tag, n = field_48[i:i + 2], int(field_48[i + 2:i + 5])
        out[tag] = field_48[i + 5:i + 5 + n]
        i += 5 + n
    return out


def balances54(field_54: str) -> dict[str, int]:
    """Field 54's 20-char balance entries as ``{"<account>:<currency>": signed amount}``."""
    out = {}
    for i in range(0, len(field_54), 20):
        e = field_54[i:i + 20]
        assert e[2:4] == "02", e
        out[e[0:2] + ":" + e[4:7]] = int(e[8:20]) * (1 if e[7] == "C" else -1)
    return out


class Terminal:
    """A blocking client connection speaking one listener's framing and spec."""

    def __init__(self, port: int, framing: str = "nac2", spec: str = "pos", tpdu: bytes | None = None,
                 tls: ssl.SSLContext | None = None, timeout_s: float = 10.0, source: str | None = None) -> None:
        self.framing, self.spec, self.tpdu = framing, spec, tpdu
        # source: another loopback address (127.0.0.2, ...) plays another client host.
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s,
                                        source_address=(source, 0) if source else None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        self.sock.settimeout(timeout_s)
        self.last_tpdu: bytes | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, message: bytes) -> bytes:
        return nac2(message, self.tpdu) if self.framing == "nac2" else ascii4(message)

    def send(self, fields: dict[str, str], mac: tuple[str, str] | None = None) -> None:
        self.send_raw(self.frame(encode(fields, self.spec, mac)))

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def recv_raw(self) -> bytes:
        """One response message (TPDU removed and kept in ``last_tpdu``)."""
        if self.framing == "nac2":
            n = int.from_bytes(self._exact(2), "big")
        else:
            n = int(self._exact(4))
        body = self._exact(n)
        if self.tpdu is not None:
            self.last_tpdu, body = body[:5], body[5:]
        return body

    def recv(self) -> dict[str, str]:
        return decode(self.recv_raw(), self.spec)

    def call(self, fields: dict[str, str], mac: tuple[str, str] | None = None) -> dict[str, str]:
        self.send(fields, mac)
        return self.recv()

    def closed_by_peer(self, timeout_s: float = 5.0) -> bool:
        """True when the server closes the connection within ``timeout_s`` (data read meanwhile is dropped)."""
        self.sock.settimeout(timeout_s)
        try:
            while True:
                if not self.sock.recv(4096):
                    return True
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            return True


class RowLock:
    """Hold ``SELECT ... FOR UPDATE`` on one terminal row from another thread until released.

    The daemon's sign-on (an UPDATE of that row) then blocks, which makes a
    request deterministically slow: pipelining, handler timeouts and drain
    are tested with it.
    """

    def __init__(self, dsn: str, terminal_id: str) -> None:
        self.dsn, self.tid = dsn, terminal_id
        self._locked = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM switch.terminals WHERE terminal_id = $1 FOR UPDATE", self.tid)
                self._locked.set()
                await asyncio.to_thread(self._release.wait, 60)
        finally:
            await conn.close()

    def __enter__(self) -> RowLock:
        self._thread.start()
        assert self._locked.wait(10), "could not lock the terminal row"
        return self

    def wait_blocked(self, timeout_s: float = 10.0) -> None:
        """Return once some session of the database waits for a lock (the daemon, behind our row lock)."""

        async def waiting(conn: asyncpg.Connection) -> int:
            return int(await conn.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND a.datname = current_database()"))

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if db_run(self.dsn, waiting):
                return
            time.sleep(0.02)
        raise AssertionError(f"nobody blocked on the row of {self.tid} within {timeout_s}s")

    def release(self) -> None:
        self._release.set()
        self._thread.join(10)

    def __exit__(self, *exc: object) -> None:
        self.release()
