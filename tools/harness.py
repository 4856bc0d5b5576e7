"""A throwaway ``switchd serve`` for the tests and the benchmarks: its own database, config, log, ports.

The tests (tests/fixtures_daemon.py) and the benchmarks (bench/_common.py) both start the
daemon through this module, so a daemon under test and a daemon under load are started,
watched and stopped the same way:

- ports: every listener may be configured on port 0; the daemon binds free ports and names
  them in its ``ready`` log line. A caller that configures a fixed port (``free_port``) and a
  log level without that line is ready once the port answers (``probe_ports``).
- database: ``private_database`` creates a uniquely named database (optionally a copy of a
  template) and drops it afterwards, with ``WITH (FORCE)`` so a daemon's pool cannot hold it.
- config: ``render_config`` writes the TOML file the daemon is started with; the daemon's
  environment carries no other ``SWITCHD_*`` setting than the master key.
- log: stdout and stderr go to a file in the work directory; ``events`` reads its JSON lines.
- stop: SIGTERM, then SIGKILL after ``stop_timeout_s``; the exit code is kept.

Like the other tools it never imports switch/ or ledger/: the daemon is the ``switchd``
console script next to the running interpreter, and databases are made with SQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# The console script installed next to the interpreter running the caller.
SWITCHD = str(Path(sys.executable).with_name("switchd"))
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
LOG_TAIL_CHARS = 8000  # of the daemon's log, in the error when it does not come up
# SWITCHD_* variables the daemon may inherit from the caller: the others configure it (config
# file, DSN, log level, ports), and the file written here must be the only configuration.
INHERITED_SWITCHD_VARS: frozenset[str] = frozenset()
# Names made here only; checked because CREATE/DROP DATABASE cannot take the name as a parameter.
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class HarnessError(RuntimeError):
    """The daemon did not come up, or a command run against it failed."""


# ---------------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports (workers serve metrics on consecutive ports)."""
    for _ in range(50):
        base = free_port(host)
        if all(_port_free(base + i, host) for i in range(1, count)):
            return base
    raise HarnessError(f"no {count} consecutive free ports")


def _port_free(port: int, host: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def answers(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------- databases


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointed at database ``name`` (the query string, e.g. ``?host=``, kept).

    >>> with_database("postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable", "x")
    'postgresql://postgres@127.0.0.1:5432/x?sslmode=disable'
    """
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def unique_database_name(prefix: str) -> str:
    """``prefix`` and 12 random hex digits: a name no other run uses."""
    return _checked(f"{prefix}_{uuid.uuid4().hex[:12]}")


def _checked(name: str) -> str:
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"not a database name made by the harness: {name!r}")
    return name


async def admin_execute(admin_dsn: str, sql: str) -> None:
    """Run one statement on a connection of its own to the admin database."""
    conn = await asyncpg.connect(admin_dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` (empty, or a copy of ``template``); its DSN."""
    sql = f'CREATE DATABASE "{_checked(name)}"'
    if template is not None:
        sql += f' TEMPLATE "{_checked(template)}"'
    await admin_execute(admin_dsn, sql)
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name`` if it exists, whoever is still connected to it."""
    await admin_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')


@dataclass(frozen=True)
class PrivateDatabase:
    """A database made for one test or run: its name and DSN."""

    name: str
    dsn: str


@contextmanager
def private_database(admin_dsn: str, prefix: str, template: str | None = None,
                     keep: bool = False) -> Iterator[PrivateDatabase]:
    """A fresh database for the ``with`` block, dropped after it (unless ``keep``); from sync code."""
    name = unique_database_name(prefix)
    dsn = asyncio.run(create_database(admin_dsn, name, template))
    try:
        yield PrivateDatabase(name, dsn)
    finally:
        if not keep:
            asyncio.run(drop_database(admin_dsn, name))


@asynccontextmanager
async def private_database_async(admin_dsn: str, prefix: str, template: str | None = None,
                                 keep: bool = False) -> AsyncIterator[PrivateDatabase]:
    """``private_database`` for code already inside an event loop."""
    name = unique_database_name(prefix)
    dsn = await create_database(admin_dsn, name, template)
    try:
        yield PrivateDatabase(name, dsn)
    finally:
        if not keep:
            await drop_database(admin_dsn, name)


# ---------------------------------------------------------------------- the config file


class TomlText(str):
    """A value that is TOML already (e.g. ``3`` or ``"fifo"`` given on a benchmark's command line)."""


def toml_value(value: Any) -> str:
    """One value as TOML: booleans, numbers, TomlText as is; anything else a quoted string.

    >>> [toml_value(v) for v in (True, 3, 2.5, "a\\"b", TomlText("[1, 2]"))]
    ['true', '3', '2.5', '"a\\\\"b"', '[1, 2]']
    """
    if isinstance(value, TomlText):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def render_config(sections: Mapping[str, Mapping[str, Any]],
                  listeners: Sequence[Mapping[str, Any]] = ()) -> str:
    """A switchd.toml: one table per section, then one ``[[listeners]]`` table per listener."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    for listener in listeners:
        lines.append("[[listeners]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in listener.items()]
        lines.append("")
    return "\n".join(lines)


def daemon_env(master_key_hex: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without its SWITCHD_* settings, plus the master key and ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SWITCHD_") or k in INHERITED_SWITCHD_VARS}
    env["SWITCHD_MASTER_KEY"] = master_key_hex
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------- the daemon


class Daemon:
    """``switchd serve`` as a child process, on the config file written to ``workdir``.

    ``start`` waits for the ``ready`` log line (its listener ports in ``ports``, its metrics
    port in ``metrics_port``) or, with ``probe_ports`` ({listener name: fixed port}), for
    every one of those ports to answer. A context manager: leaving it stops the daemon.
    """

    def __init__(self, workdir: Path, config_text: str, *, master_key_hex: str | None = None,
                 env: Mapping[str, str] | None = None, probe_ports: Mapping[str, int] | None = None,
                 ready_timeout_s: float = READY_TIMEOUT_S, stop_timeout_s: float = STOP_TIMEOUT_S,
                 cli_timeout_s: float = CLI_TIMEOUT_S) -> None:
        self.workdir = workdir
        self.config_path = workdir / "switchd.toml"
        self.config_path.write_text(config_text, encoding="utf-8")
        self.log_path = workdir / f"daemon-{uuid.uuid4().hex[:6]}.log"
        self.master_key_hex = master_key_hex or secrets.token_hex(32)
        self.env = daemon_env(self.master_key_hex, env)
        self.probe_ports = dict(probe_ports or {})
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.cli_timeout_s = cli_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.metrics_port: int | None = None
        self.returncode: int | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- life

    def start(self) -> Self:
        """Start ``switchd serve`` and return once it is ready; on failure it is not left running."""
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.returncode = None
        self.proc = subprocess.Popen([SWITCHD, "--config", str(self.config_path), "serve"], env=self.env,
                                     cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            for event in self.events("ready"):
                self.ports = {k: int(v) for k, v in event["listeners"].items()}
                self.metrics_port = event.get("metrics_port")
                return self
            if self.probe_ports and all(answers(port) for port in self.probe_ports.values()):
                self.ports = dict(self.probe_ports)
                return self
            if self.proc.poll() is not None:
                code = self.wait()
                raise HarnessError(f"daemon exited {code} before ready:\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL_S)
        self.proc.kill()
        self.wait()
        raise HarnessError(f"daemon not ready within {self.ready_timeout_s}s:\n{self.log_tail()}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the daemon."""
        assert self.proc is not None, "not started"
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the exit; still running after ``timeout_s`` (default ``stop_timeout_s``) it is
        killed (its code is then -9)."""
        assert self.proc is not None, "not started"
        try:
            self.returncode = self.proc.wait(timeout=self.stop_timeout_s if timeout_s is None else timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        if self._log is not None:
            self._log.close()
        return self.returncode

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit code (None if never started). Calling it again is harmless."""
        if self.proc is None:
            return None
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        """The daemon's process id (the supervisor's, with workers)."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    # -------------------------------------------------------------- its log

    def log_text(self) -> str:
        """Everything the daemon wrote so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of the log, for an error message."""
        return self.log_text()[-chars:]

    def log_lines(self) -> list[dict[str, Any]]:
        """The log's JSON lines (others skipped)."""
        out = []
        for line in self.log_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log lines whose ``event`` is ``name``."""
        return [e for e in self.log_lines() if e.get("event") == name]

    def wait_event(self, name: str, predicate: Callable[[dict[str, Any]], bool] = lambda e: True,
                   timeout_s: float = 10.0) -> dict[str, Any]:
        """The first ``name`` event matching ``predicate``, waiting up to ``timeout_s`` for it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.events(name):
                if predicate(event):
                    return event
            time.sleep(POLL_INTERVAL_S)
        raise HarnessError(f"no {name} event within {timeout_s}s")

    # -------------------------------------------------------------- commands

    def cli(self, *args: str, check: bool = True, env: Mapping[str, str] | None = None,
            timeout_s: float | None = None, stdin_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``switchd --config <ours> ARGS`` with the daemon's environment (or ``env``);
        ``stdin_text`` is its standard input (none when None)."""
        res = subprocess.run([SWITCHD, "--config", str(self.config_path), *args],
                             env=dict(env) if env is not None else self.env, cwd=self.workdir,
                             input=stdin_text, stdin=subprocess.DEVNULL if stdin_text is None else None,
                             capture_output=True, text=True,
                             timeout=self.cli_timeout_s if timeout_s is None else timeout_s)
        if check and res.returncode != 0:
            raise HarnessError(f"switchd {' '.join(args)} exited {res.returncode}: {res.stderr[-2000:]}")
        return res

    @staticmethod
    def metrics_text(port: int) -> str:
        """The body of ``/metrics`` on ``port``."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body: bytes = resp.read()
        return body.decode()
