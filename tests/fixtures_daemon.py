"""A real ``switchd serve`` in a subprocess, and a blocking ISO 8583 terminal client.

Imported by tests/conftest.py (fixtures) and by test modules (helpers):
``from fixtures_daemon import Daemon, Terminal, ...`` works because conftest
puts this directory on ``sys.path``.

- ``daemon_db`` (module scope): a fresh migrated database for one test module.
- ``start_daemon`` (function scope): a factory, ``start_daemon(dsn, listeners=[...])``,
  that writes a temporary TOML config (every port 0: the daemon binds free
  ports and logs them in its ``ready`` line), runs the daemon with a master key
  in its environment, waits for ``ready`` and returns a :class:`Daemon`. Every
  daemon still running at the end of the test is stopped with SIGTERM and must
  exit 0.

The client builds messages with pyiso8583 and the specs only, and MACs them
itself, so it does not share the server's codec.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import iso8583
import pytest

import specs
from switch import mac as swmac

# The console scripts installed next to the interpreter running the tests.
SWITCHD = str(Path(sys.executable).with_name("switchd"))
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


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointed at another database (the query string, e.g. ``?host=``, kept)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


# ---------------------------------------------------------------------- database per module


@pytest.fixture(scope="module")
def daemon_db(admin_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database shared by one test module's daemons."""
    name = f"switchd_d_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    try:
        yield with_database(admin_dsn, name)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def write_config(path: Path, dsn: str, listeners: list[dict[str, Any]], *, drain_s: float = 5.0,
                 metrics: bool = True, extra: dict[str, dict[str, Any]] | None = None, workers: int = 1) -> None:
    sections: dict[str, dict[str, Any]] = {
        "daemon": {"state_dir": str(path.parent / "state"), "timeout_drain_s": drain_s, "workers": workers},
        "database": {"dsn": dsn, "pool_size_min": 1, "pool_size_max": 4},
        "metrics": {"enabled": metrics, "host": "127.0.0.1", "port": 0},
    }
    for section, values in (extra or {}).items():
        sections[section] = {**sections.get(section, {}), **values}
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for lst in listeners:
        lines.append("[[listeners]]")
        merged = {"host": "127.0.0.1", "port": 0, **lst}
        lines += [f"{k} = {_toml_value(v)}" for k, v in merged.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


class Daemon:
    """A running ``switchd serve``: ports, captured log lines, provisioning helpers."""

    def __init__(self, workdir: Path, dsn: str, listeners: list[dict[str, Any]],
                 env: dict[str, str] | None = None, **config: Any) -> None:
        self.workdir = workdir
        self.dsn = dsn
        self.config_path = workdir / "switchd.toml"
        write_config(self.config_path, dsn, listeners, **config)
        self.log_path = workdir / f"daemon-{uuid.uuid4().hex[:6]}.log"
        self.env = {**os.environ, "SWITCHD_MASTER_KEY": MASTER_KEY_HEX, **(env or {})}
        self.env.pop("SWITCHD_CONFIG", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.metrics_port: int | None = None
        self.returncode: int | None = None

    def start(self) -> Daemon:
        self._log_fh = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([SWITCHD, "--config", str(self.config_path), "serve"], stdout=self._log_fh,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for event in self.events("ready"):
                self.ports = {k: int(v) for k, v in event["listeners"].items()}
                self.metrics_port = event.get("metrics_port")
                return self
            if self.proc.poll() is not None:
                self.wait()
                raise AssertionError(f"daemon exited {self.proc.returncode} before ready:\n{self.log_text()}")
            time.sleep(0.05)
        # Not ready: do not leave it running behind the failure.
        self.proc.kill()
        self.wait()
        raise AssertionError(f"daemon not ready within {READY_TIMEOUT_S}s:\n{self.log_text()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log_lines() if e.get("event") == name]

    def wait_event(self, name: str, predicate: Callable[[dict[str, Any]], bool] = lambda e: True,
                   timeout_s: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for e in self.events(name):
                if predicate(e):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no {name} event within {timeout_s}s")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Wait for the exit; a daemon still running after ``timeout_s`` is killed (its code is then -9)."""
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        self._log_fh.close()
        return self.returncode

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.returncode is not None:
            return self.returncode or 0
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -------------------------------------------------------------- provisioning

    def cli(self, *args: str, check: bool = True, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run ``switchd --config <ours> ARGS`` with the daemon's environment (or ``env``)."""
        res = subprocess.run([SWITCHD, "--config", str(self.config_path), *args], env=env or self.env,
                             cwd=self.workdir,
                             capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"switchd {' '.join(args)} exited {res.returncode}: {res.stderr}")
        return res

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
        return self.scrape_port(self.metrics_port)

    @staticmethod
    def scrape_port(port: int) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body: bytes = resp.read()
        return body.decode()


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
                 tls: ssl.SSLContext | None = None, timeout_s: float = 10.0) -> None:
        self.framing, self.spec, self.tpdu = framing, spec, tpdu
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
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
