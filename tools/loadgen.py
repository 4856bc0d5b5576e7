"""Load generator: many pipelined terminal connections against one listener.

    python -m tools.loadgen --port 8583 --connections 50 --inflight 8 --duration-s 10 --mix echo=1

Closed loop (default): every connection keeps ``--inflight`` requests in
flight, pipelined and matched by STAN. Open loop: ``--rate`` is the total
target of requests per second, spread evenly over the connections (each
still capped at ``--inflight`` outstanding). The run always stops by itself:
after ``--duration-s`` (default 10 when neither bound is given) and/or
``--requests`` in total, then waits at most ``--timeout-s`` for stragglers.

Every response is checked: MTI = request MTI + 10, fields 7, 11 and 41
echoed, TPDU swapped, and the MAC when the terminal has a key. The report
gives responses/s, latency percentiles, counts by response code (also per
message kind) and errors; ``--json-out`` writes the same as JSON.

Voids and refunds (kinds ``void``, ``refund``) name a recent approved original
of the same terminal: every approved purchase, redeem, stored-value purchase,
top-up or load is remembered per terminal (the last ``--originals-max``) with
its RRN (field 37), card, amount and account. A void takes one and sends its
full amount; a refund takes a purchase, redeem or stored-value purchase and
sends part of it; either way the original is not used again. When a terminal
has no suitable original yet, the request is sent as the mix's heaviest
voidable kind instead (counted in ``compensations.fallbacks``). Exit status 1 when there were errors
or no responses at all.

Talks to the daemon over TCP only; framing, codec and MAC are the tools' own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import iso8583

from tools import _kinds, _mac, _msg, _stats, _wire

STAN_MAX = 999_999
CONNECT_CONCURRENCY_MAX = 256  # connects in flight at once: stay under listen backlogs
RECEIVE_CHUNK_BYTES = 65_536


@dataclass(frozen=True)
class Terminal:
    tid: str
    mid: str = ""
    mac_alg: str = ""
    mac_key: bytes = b""


@dataclass
class LoadConfig:
    host: str = "127.0.0.1"
    port: int = 8583
    framing: str = "nac2"
    spec: str = "pos"
    tpdu: bytes = b""
    connections: int = 1
    inflight: int = 1
    rate_per_s: float = 0.0  # 0 = closed loop
    duration_s: float = 0.0  # 0 = unbounded in time (then requests must be > 0)
    requests: int = 0  # 0 = unbounded in count
    mix: list[tuple[str, int]] = field(default_factory=lambda: [("echo", 1)])
    terminals: list[Terminal] = field(default_factory=lambda: [Terminal("LG000001")])
    pans: list[str] = field(default_factory=list)
    timeout_s: float = 5.0
    sign_on: bool = True
    idle_connections: int = 0
    seed: int = 0
    originals_max: int = 64  # approved originals remembered per terminal, for void/refund
    vouchers: list[tuple[str, str, int]] = field(default_factory=list)  # top-up cards: serial, code, points

    def __post_init__(self) -> None:
        if self.duration_s <= 0 and self.requests <= 0:
            raise ValueError("the run needs a bound: a duration and/or a request count")
        if self.connections < 1 or self.inflight < 1:
            raise ValueError("connections and inflight must be >= 1")
        if not self.terminals:
            raise ValueError("no terminals")
        needs_card = any(_kinds.KINDS[name].card for name, weight in self.mix if weight > 0)
        if needs_card and not self.pans:
            raise ValueError("the mix has card transactions: give --pans FILE")
        weighted = {name for name, weight in self.mix if weight > 0}
        if any(_kinds.KINDS[n].compensates for n in weighted) and not weighted & _kinds.VOIDABLE:
            raise ValueError("void/refund need originals: add a purchase, redeem, sv-purchase, "
                             "topup or load to the mix")
        if self.originals_max < 1:
            raise ValueError("originals_max must be >= 1")
        if any(_kinds.KINDS[n].voucher for n in weighted) and not self.vouchers:
            raise ValueError("the mix redeems top-up cards: give --vouchers FILE")


@dataclass(frozen=True)
class Original:
    """An approved request a void or refund may name (same terminal)."""

    rrn: str
    pan: str
    amount: int
    kind: str  # the original's kind name (a key of _kinds.ORIGINAL_ACCOUNT)
    currency: str


class StanSpace:
    """STANs per terminal, never handing out one that is in flight on any connection.

    Shared by every connection of a terminal, so the idempotency key
    (41, 11, 7) of concurrent requests cannot collide. A STAN whose request
    timed out stays reserved: its late answer must not match a newer request.

    >>> space = StanSpace(random.Random(1))
    >>> a, b = space.take("T1"), space.take("T1")
    >>> a != b, len(a)
    (True, 6)
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._next: dict[str, int] = {}
        self._busy: dict[str, set[int]] = {}

    def take(self, tid: str) -> str:
        busy = self._busy.setdefault(tid, set())
        if len(busy) >= STAN_MAX:
            raise RuntimeError(f"no free STAN for terminal {tid}")
        stan = self._next.get(tid) or self._rng.randint(1, STAN_MAX)
        while stan in busy:
            stan = stan % STAN_MAX + 1
        busy.add(stan)
        self._next[tid] = stan % STAN_MAX + 1
        return f"{stan:06d}"

    def release(self, tid: str, stan: str) -> None:
        self._busy.get(tid, set()).discard(int(stan))


class Clock:
    """Field 7 for now, formatted once per second instead of once per message."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def field7(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = time.strftime("%m%d%H%M%S", time.gmtime(second))
        return self._text


@dataclass
class Pending:
    sent_ns: int
    deadline_ns: int
    # When the schedule wanted it sent (open loop); 0: closed loop, no schedule.
    scheduled_ns: int
    mti: str
    field7: str
    field41: str
    kind: str = ""
    pan: str = ""
    amount: int = 0
    currency: str = ""


class Budget:
    """Shared stop condition: a deadline and/or a total number of requests.

    The clock starts at ``start()``, once connections are up, so setup is not measured.
    """

    def __init__(self, duration_s: float, requests: int) -> None:
        self.duration_s = duration_s
        self.deadline = float("inf")
        self.remaining = requests if requests > 0 else -1
        self.stopped = False

    def start(self) -> None:
        if self.duration_s > 0:
            self.deadline = time.monotonic() + self.duration_s

    def take(self) -> bool:
        if self.stopped or time.monotonic() >= self.deadline or self.remaining == 0:
            self.stopped = True
            return False
        if self.remaining > 0:
            self.remaining -= 1
        return True


class Run:
    """One load run; ``await run()`` returns the summary dict."""

    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.stats = _stats.Stats()
        self.rng = random.Random(cfg.seed or None)
        self.stans = StanSpace(self.rng)
        self.clock = Clock()
        self.choose = _kinds.Chooser(cfg.mix, self.rng)
        self.connect_slots = asyncio.Semaphore(CONNECT_CONCURRENCY_MAX)
        self.started = asyncio.Event()
        self.ready = 0  # connections set up (signed on) and waiting for `started`
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.by_kind: dict[str, Counter[str]] = {}  # kind -> response code -> count
        self.originals: dict[str, deque[Original]] = {}  # terminal id -> recent approved originals
        self.fallbacks: Counter[str] = Counter()  # void/refund sent as another kind: no original
        self._vouchers_sent = 0  # top-up cards used (--vouchers), in file order
        # Per connection: time out its unanswered requests (one sweeper task for them all, so
        # that a hundred connections do not wake the loop two thousand times a second).
        self._sweeps: dict[int, Callable[[int], None]] = {}
        voidable = [(w, n) for n, w in cfg.mix if w > 0 and n in _kinds.VOIDABLE]
        self.fallback_kind = max(voidable)[1] if voidable else ""

    def _take_original(self, tid: str, kind_name: str) -> Original | None:
        """The newest remembered original of ``tid`` that ``kind_name`` may name; removed."""
        recent = self.originals.get(tid)
        if not recent:
            return None
        eligible = _kinds.VOIDABLE if kind_name == "void" else _kinds.REFUNDABLE
        for i in range(len(recent) - 1, -1, -1):
            if recent[i].kind in eligible:
                found = recent[i]
                del recent[i]
                return found
        return None

    def _next_request(self, terminal: Terminal, stan: str) -> tuple[str, dict[str, str], int]:
        """Pick the next kind and build its fields: (kind name, fields, amount)."""
        name = self.choose()
        kind = _kinds.KINDS[name]
        if kind.compensates:
            original = self._take_original(terminal.tid, name)
            if original is not None:
                amount = (original.amount if name == "void"
                          else self.rng.randint(1, max(1, original.amount // 2)))
                fields = _kinds.build_fields(
                    kind, stan=stan, tid=terminal.tid, mid=terminal.mid, now=self.clock.field7(),
                    pan=original.pan, amount=amount, account=_kinds.ORIGINAL_ACCOUNT[original.kind],
                    rrn=original.rrn, currency=original.currency,
                )
                return name, fields, amount
            self.fallbacks[name] += 1
            name = self.fallback_kind
            kind = _kinds.KINDS[name]
        if kind.voucher:
            if self._vouchers_sent < len(self.cfg.vouchers):  # each card once
                serial, code, points = self.cfg.vouchers[self._vouchers_sent]
                self._vouchers_sent += 1
                fields = _kinds.build_fields(
                    kind, stan=stan, tid=terminal.tid, mid=terminal.mid, now=self.clock.field7(),
                    pan=self.rng.choice(self.cfg.pans), amount=points, voucher=(serial, code))
                return name, fields, points
            self.fallbacks[name] += 1
            name = self.fallback_kind or "inquiry"
            kind = _kinds.KINDS[name]
        amount = self.rng.randint(kind.amount_min, kind.amount_max) if kind.amount_max else 0
        fields = _kinds.build_fields(
            kind, stan=stan, tid=terminal.tid, mid=terminal.mid, now=self.clock.field7(),
            pan=self.rng.choice(self.cfg.pans) if kind.card else "", amount=amount,
        )
        return name, fields, amount

    # -- connection lifecycle: connect, sign-on, pipelined traffic, drain, close --

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with self.connect_slots:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(self.cfg.host, self.cfg.port), self.cfg.timeout_s
                )
            except (OSError, TimeoutError) as exc:
                self.stats.connections_failed += 1
                self.stats.error(f"connect:{type(exc).__name__}")
                return None

    def _encode(self, terminal: Terminal, fields: dict[str, str]) -> bytes:
        macing = bool(terminal.mac_key) and _msg.macs(fields["t"])
        raw = _msg.build(
            fields, self.cfg.spec, terminal.mac_alg if macing else "", terminal.mac_key if macing else b""
        )
        return _wire.frame(raw, self.cfg.framing, self.cfg.tpdu)

    async def _sign_on(
        self, terminal: Terminal, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        stan = self.stans.take(terminal.tid)
        fields = {"t": "0800", "7": self.clock.field7(), "11": stan,
                  "41": _msg.pad_tid(terminal.tid), "70": "001"}
        try:
            writer.write(self._encode(terminal, fields))
            await writer.drain()
            got = await asyncio.wait_for(
                _wire.read_frame(reader, self.cfg.framing, bool(self.cfg.tpdu)), self.cfg.timeout_s
            )
            answer, _enc = _msg.decode(got.message, self.cfg.spec)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, _wire.FrameError,
                iso8583.DecodeError) as exc:
            self.stats.error(f"sign_on:{type(exc).__name__}")
            return False
        finally:
            self.stans.release(terminal.tid, stan)
        if answer.get("39") != "00":
            self.stats.error(f"sign_on:declined_{answer.get('39', 'none')}")
            return False
        return True

    async def connection(self, index: int, budget: Budget) -> None:
        terminal = self.cfg.terminals[index % len(self.cfg.terminals)]
        opened = await self._connect()
        if opened is None:
            return
        reader, writer = opened
        self.stats.connections_open += 1
        try:
            if self.cfg.sign_on and not await self._sign_on(terminal, reader, writer):
                return
            self.ready += 1
            await self.started.wait()
            await self._traffic(index, terminal, reader, writer, budget)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _traffic(
        self, index: int, terminal: Terminal, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter, budget: Budget,
    ) -> None:
        pending: dict[str, Pending] = {}
        slots = asyncio.Semaphore(self.cfg.inflight)
        lost = asyncio.Event()
        drained = asyncio.Event()  # set whenever nothing is in flight (or the connection is lost)
        timeout_ns = int(self.cfg.timeout_s * 1e9)

        def settle(stan: str, reserve: bool = False) -> Pending | None:
            p = pending.pop(stan, None)
            if p is not None:
                slots.release()
                if not reserve:
                    self.stans.release(terminal.tid, stan)
                if not pending:
                    drained.set()
            return p

        def end(kind: str) -> None:
            # The connection is over: count it, stop sending, and wake a sender waiting for a
            # slot or for the drain (the extra slot is never given back: the loop ends).
            self.stats.error(kind)
            lost.set()
            drained.set()
            slots.release()

        async def receive() -> None:
            frames = _wire.FrameReader(self.cfg.framing, bool(self.cfg.tpdu))
            try:
                while True:
                    chunk = await reader.read(RECEIVE_CHUNK_BYTES)
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", frames.pending or None)
                    for got in frames.feed(chunk):
                        self._on_response(terminal, got, pending, settle)
            except (asyncio.IncompleteReadError, OSError, _wire.FrameError) as exc:
                if pending or not budget.stopped:
                    end(f"connection_lost:{type(exc).__name__}")
                else:
                    lost.set()
                    drained.set()
            except Exception as exc:  # a bug here must not pass for a silent server
                kind = f"receive_failed:{type(exc).__name__}"
                if not self.stats.errors[kind]:
                    print(f"loadgen: terminal {terminal.tid}: receive failed, connection ended: "
                          f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                end(kind)

        def sweep(now: int) -> None:
            # Time out requests without an answer; cheap since pending holds <= inflight entries.
            for stan in [s for s, p in pending.items() if p.deadline_ns <= now]:
                settle(stan, reserve=True)
                self.stats.error("timeout")

        receiver = asyncio.create_task(receive())
        self._sweeps[index] = sweep
        interval_s = self.cfg.connections / self.cfg.rate_per_s if self.cfg.rate_per_s > 0 else 0.0
        # Spread open-loop connections over one interval so they do not fire in lockstep.
        next_send = time.monotonic() + (index / self.cfg.connections) * interval_s
        try:
            while not lost.is_set():
                scheduled_ns = 0
                if interval_s:
                    next_send += interval_s
                    # Latency from here: waiting for the timer or for a free slot is ours too.
                    scheduled_ns = int(next_send * 1e9)  # time.monotonic's clock, in ns
                    delay_s = next_send - time.monotonic()
                    if delay_s > 0:
                        await asyncio.sleep(delay_s)
                    elif delay_s < -interval_s:
                        # A whole interval behind: this request keeps its lateness, the ones
                        # after it start a new schedule instead of a burst (counted: slips).
                        self.stats.schedule_slips += 1
                        next_send = time.monotonic()
                await slots.acquire()
                if lost.is_set() or not budget.take():
                    slots.release()
                    break
                stan = self.stans.take(terminal.tid)
                name, fields, amount = self._next_request(terminal, stan)
                data = self._encode(terminal, fields)
                now_ns = time.monotonic_ns()
                pending[stan] = Pending(now_ns, now_ns + timeout_ns, scheduled_ns, fields["t"], fields["7"],
                                        fields["41"], name, fields.get("2", ""), amount, fields.get("49", ""))
                self.stats.sent += 1
                writer.write(data)
                await writer.drain()
            # Drain: wait for the answers still due (each is bounded by its own timeout).
            if pending and not lost.is_set():
                drained.clear()
                await drained.wait()
        except OSError as exc:
            self.stats.error(f"send:{type(exc).__name__}")
        finally:
            if pending:
                self.stats.error("lost_in_flight", len(pending))
            self._sweeps.pop(index, None)
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    def _on_response(self, terminal: Terminal, got: _wire.Frame, pending: dict[str, Pending],
                     settle: Callable[[str], Pending | None]) -> None:
        received_ns = time.monotonic_ns()
        try:
            fields = _msg.decode_fields(got.message, self.cfg.spec)
        except iso8583.DecodeError:
            self.stats.error("decode")
            return
        stan = fields.get("11", "")
        p = settle(stan)
        if p is None:
            self.stats.error("unmatched_stan")
            return
        code = fields.get("39", "none")
        self.stats.record((received_ns - p.sent_ns) / 1e6, code,
                          (received_ns - p.scheduled_ns) / 1e6 if p.scheduled_ns else None)
        counts = self.by_kind.get(p.kind)
        if counts is None:
            counts = self.by_kind[p.kind] = Counter()
        counts[code] += 1
        if code == "00" and p.kind in _kinds.VOIDABLE and fields.get("37"):
            recent = self.originals.get(terminal.tid)
            if recent is None:
                recent = self.originals[terminal.tid] = deque(maxlen=self.cfg.originals_max)
            recent.append(Original(fields["37"], p.pan, p.amount, p.kind, p.currency))
        if fields.get("t") != _msg.response_mti(p.mti):
            self.stats.error("mismatch:mti")
        if fields.get("7") != p.field7:
            self.stats.error("mismatch:7")
        if fields.get("41") != p.field41:
            self.stats.error("mismatch:41")
        if self.cfg.tpdu and got.tpdu != _wire.swap_tpdu(self.cfg.tpdu):
            self.stats.error("mismatch:tpdu")
        if terminal.mac_key and _msg.macs(p.mti):
            verdict = _msg.mac_verdict(got.message, fields, self.cfg.spec, terminal.mac_alg,
                                       terminal.mac_key)
            if verdict is None:
                self.stats.error("mac_absent")
            elif not verdict:
                self.stats.error("mac_bad")

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(min(0.05, self.cfg.timeout_s / 4))
            now = time.monotonic_ns()
            for sweep in list(self._sweeps.values()):
                sweep(now)

    async def _open_idle(self) -> None:
        opened = await self._connect()
        if opened is not None:
            self.stats.idle_open += 1
            self._idle.append(opened)

    async def _close_idle(self) -> None:
        for reader, writer in self._idle:
            # A connection the switch closed meanwhile has seen EOF.
            if reader.at_eof() or writer.is_closing():
                self.stats.idle_lost += 1
            writer.close()
        for _reader, writer in self._idle:
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def __call__(self) -> dict[str, Any]:
        if self.cfg.idle_connections:
            await asyncio.gather(*(self._open_idle() for _ in range(self.cfg.idle_connections)))
        budget = Budget(self.cfg.duration_s, self.cfg.requests)
        tasks = [asyncio.create_task(self.connection(i, budget)) for i in range(self.cfg.connections)]
        # Wait (bounded: connect and sign-on each have a timeout) until every connection is
        # either ready or finished (failed), then start the clock for all at once.
        ready_deadline = time.monotonic() + 2 * self.cfg.timeout_s + 1
        while time.monotonic() < ready_deadline:
            if self.ready + sum(t.done() for t in tasks) >= self.cfg.connections:
                break
            await asyncio.sleep(0.01)
        budget.start()
        started = time.monotonic()
        self.started.set()
        sweeper = asyncio.create_task(self._sweeper())
        await asyncio.gather(*tasks)
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        elapsed_s = time.monotonic() - started
        await self._close_idle()
        summary = self.stats.summary(elapsed_s)
        summary["by_kind"] = {k: dict(sorted(c.items())) for k, c in sorted(self.by_kind.items())}
        if any(_kinds.KINDS[n].compensates for n, w in self.cfg.mix if w > 0):
            summary["compensations"] = {
                "fallbacks": dict(sorted(self.fallbacks.items())), "fallback_kind": self.fallback_kind,
                "originals_remembered": sum(len(d) for d in self.originals.values()),
            }
        summary["config"] = _describe(self.cfg)
        return summary


def _describe(cfg: LoadConfig) -> dict[str, Any]:
    out = asdict(cfg)
    out["tpdu"] = cfg.tpdu.hex().upper()
    # Keys never leave the process; PANs are data, not configuration.
    out["terminals"] = len(cfg.terminals)
    out["pans"] = len(cfg.pans)
    out["vouchers"] = len(cfg.vouchers)  # their codes are secrets: never in a summary
    out["mix"] = dict(cfg.mix)
    return out


def raise_nofile_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (up to the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def run(cfg: LoadConfig) -> dict[str, Any]:
    """Run a load test to completion on a fresh event loop (uvloop when installed)."""
    raise_nofile_limit(cfg.connections + cfg.idle_connections + 64)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without
        return asyncio.run(Run(cfg)())
    result: dict[str, Any] = uvloop.run(Run(cfg)())
    return result


def read_terminals(path: str) -> list[Terminal]:
    """Lines ``tid,mid,mac-alg,mac-key-hex`` (the last two may be empty); ``#`` comments."""
    terminals: list[Terminal] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = [p.strip() for p in text.split(",")] + ["", "", ""]
        tid, mid, alg, key_hex = parts[:4]
        try:
            key = bytes.fromhex(key_hex) if key_hex else b""
            if key:
                _mac.check_key(alg, key)
            _msg.pad_tid(tid)
            _msg.pad_mid(mid)
        except ValueError as exc:
            # Neither fromhex nor check_key quote the key, so the message is safe to show.
            raise ValueError(f"{path}:{number}: {exc}") from None
        terminals.append(Terminal(tid, mid, alg if key else "", key))
    return terminals


def read_vouchers(path: str) -> list[tuple[str, str, int]]:
    """Top-up cards from ``switchd voucher batch create``'s file: serial, code, points (header skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines()[1:]:
        parts = line.strip().split(",")
        if len(parts) >= 3 and parts[2].isdigit():
            out.append((parts[0], parts[1], int(parts[2])))
    return out


def read_pans(path: str) -> list[str]:
    """One PAN per line; blank lines and ``#`` comments skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [t for t in (line.strip() for line in lines) if t and not t.startswith("#")]


def make_terminals(prefix: str, count: int, mid: str, mac_alg: str, mac_key: bytes) -> list[Terminal]:
    """``count`` terminals named prefix + zero-padded index (8 characters in all).

    >>> [t.tid for t in make_terminals("LG", 2, "", "", b"")]
    ['LG000001', 'LG000002']
    """
    width = 8 - len(prefix)
    if width < 1 or count >= 10**width:
        raise ValueError(f"--tid-prefix {prefix!r} leaves no room for {count} terminal numbers")
    return [Terminal(f"{prefix}{i:0{width}d}", mid, mac_alg if mac_key else "", mac_key)
            for i in range(1, count + 1)]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8583, show_default=True, type=int)
@click.option("--framing", type=click.Choice(["nac2", "ascii4"]), default="nac2", show_default=True)
@click.option("--spec", "spec_name", type=click.Choice(_msg.SPEC_NAMES), default="pos", show_default=True)
@click.option("--tpdu", "tpdu_hex", default="", help="TPDU to send, 10 hex chars.")
@click.option("--connections", default=1, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--inflight", default=1, show_default=True, type=click.IntRange(1, 10_000),
              help="Requests in flight per connection (closed loop) or its cap (open loop).")
@click.option("--rate", "rate_per_s", default=0.0, type=click.FloatRange(0),
              help="Open loop: total requests per second (0 = closed loop).")
@click.option("--duration-s", default=0.0, type=click.FloatRange(0), help="Stop after this long.")
@click.option("--requests", default=0, type=click.IntRange(0), help="Stop after this many requests.")
@click.option("--mix", default="echo=1", show_default=True,
              help=f"Weighted kinds: {', '.join(_kinds.KINDS)}.")
@click.option("--tid-prefix", default="LG", show_default=True)
@click.option("--mid", default="", help="Merchant id for generated terminals.")
@click.option("--mac-alg", type=click.Choice(_mac.ALGORITHMS), default="cmac-aes", show_default=True)
@click.option("--mac-key", "mac_key_hex", default="", help="MAC key for generated terminals.")
@click.option("--terminals", "terminals_file", default="", help="File of tid,mid,mac-alg,mac-key-hex.")
@click.option("--pans", "pans_file", default="", help="File of card numbers, one per line.")
@click.option("--vouchers", "vouchers_file", default="",
              help="Top-up cards for the voucher kind: the file `switchd voucher batch create` writes.")
@click.option("--timeout-s", default=5.0, show_default=True, type=click.FloatRange(0.001))
@click.option("--sign-on/--no-sign-on", default=True, show_default=True)
@click.option("--idle-connections", default=0, type=click.IntRange(0),
              help="Extra connections opened first and held idle for the run.")
@click.option("--seed", default=0, type=int, help="RNG seed (0 = random).")
@click.option("--originals-max", default=64, show_default=True, type=click.IntRange(1, 100_000),
              help="Approved originals remembered per terminal for void/refund.")
@click.option("--json-out", default="", help="Write the summary as JSON here.")
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
def main(
    host: str, port: int, framing: str, spec_name: str, tpdu_hex: str, connections: int,
    inflight: int, rate_per_s: float, duration_s: float, requests: int, mix: str,
    tid_prefix: str, mid: str, mac_alg: str, mac_key_hex: str, terminals_file: str,
    pans_file: str, vouchers_file: str, timeout_s: float, sign_on: bool, idle_connections: int, seed: int,
    originals_max: int, json_out: str, quiet: bool,
) -> None:
    """Drive the switch with pipelined requests and report throughput and latency."""
    try:
        tpdu = _wire.parse_tpdu_hex(tpdu_hex) if tpdu_hex else b""
        mac_key = bytes.fromhex(mac_key_hex) if mac_key_hex else b""
        if mac_key:
            _mac.check_key(mac_alg, mac_key)
        if terminals_file:
            terminals = read_terminals(terminals_file)
        else:
            terminals = make_terminals(tid_prefix, connections, mid, mac_alg, mac_key)
        cfg = LoadConfig(
            host=host, port=port, framing=framing, spec=spec_name, tpdu=tpdu,
            connections=connections, inflight=inflight, rate_per_s=rate_per_s,
            duration_s=duration_s if (duration_s or requests) else 10.0, requests=requests,
            mix=_kinds.parse_mix(mix), terminals=terminals,
            pans=read_pans(pans_file) if pans_file else [], timeout_s=timeout_s,
            sign_on=sign_on, idle_connections=idle_connections, seed=seed, originals_max=originals_max,
            vouchers=read_vouchers(vouchers_file) if vouchers_file else [],
        )
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    summary = run(cfg)
    if not quiet:
        for line in _stats.format_summary(summary):
            click.echo(line)
        if len(summary["by_kind"]) > 1:
            for name, codes in summary["by_kind"].items():
                click.echo(f"  {name:<12} " + ", ".join(f"{k}: {v}" for k, v in codes.items()))
        if summary.get("compensations", {}).get("fallbacks"):
            fb = summary["compensations"]
            click.echo(f"fallbacks    {fb['fallbacks']} sent as {fb['fallback_kind']} (no original yet)")
    if json_out:
        Path(json_out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    sys.exit(0 if summary["responses"] and not summary["errors_total"] else 1)


if __name__ == "__main__":
    main()
