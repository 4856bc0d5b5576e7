"""The life of one request (docs/design.md, The life of a request), from message bytes to response bytes.

decode -> validate -> terminal known and active? -> MAC valid? -> signed on?
-> duplicate? (for most handlers; the loyalty handlers ask in their context read)
-> route -> handler (bounded by timeout_handler_s) -> store the
response (financial) -> MAC -> encode.

Every step that can say no answers with the request's keys echoed; nothing
here raises to the connection: a bug answers 96 and is logged. ``None``
means the message is unreadable (no MTI) and the connection must be closed;
``NO_ANSWER`` (empty) that nothing is sent: a response MTI is no request.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ledger.coalesce import Coalescer
from ledger.db import connection_lost
from ledger.deadlines import Deadlines
from ledger.engine import SENT_MARK, Ledger
from ledger.errors import one_line
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.pins import PinChecker
from ledger.loyalty.vouchers import Desk
from specs.vocabulary import (
    DUPLICATE_TRANSMISSION,
    FORMAT_ERROR,
    INVALID_MERCHANT,
    NOT_PERMITTED,
    SECURITY_VIOLATION,
    SYSTEM_MALFUNCTION,
    SYSTEM_UNAVAILABLE,
    Fields,
    duplicate_key,
    receipt_key,
    response_mti,
)
from switch import codec, dedup, logs, mac
from switch.codec import CodecError, canonical_mti
from switch.config import ListenerConfig
from switch.context import NO_RESPONSE, RequestContext, response_to
from switch.dedup import ResponseReceipt
from switch.in_doubt import InDoubt
from switch.logs import get_logger, mask_optional_pan
from switch.metrics import Metrics
from switch.routing import CHECKS_DUPLICATES, is_response, metric_labels, route_fields
from switch.terminals import Terminal, TerminalStore, normalize_id, plausible_id
from switch.validation import validate

log = get_logger("switchd.request")

REQUEST_BOUND_HANDLERS = 2  # a whole request may take this many handler timeouts

# Request counters kept per (MTI, processing code, response code) as sent: a hostile terminal
# varies field 3 at will, so the cache is bounded (beyond it, children are looked up each time).
COUNTER_CACHE_MAX = 4096
# Request bounds are checked this often at most (and ten times per handler bound), by one task
# per pipeline (ledger.deadlines): two timers per request cost more than the rest of its bookkeeping.
BOUND_SWEEP_INTERVAL_MAX_S = 0.1
# What Pipeline.handle returns for a message that gets no answer (a response nobody asked for).
NO_ANSWER = b""
# The response-code label of requests not answered because their outcome is unknown.
UNANSWERED = "none"
# RRNs are taken from the database in blocks: one sequence call per this many responses.
RRN_BLOCK = 1000
RRN_DIGITS = 12
# unkeyed_terminal_refused is logged once per terminal per this many seconds (bounded memory).
UNKEYED_LOG_INTERVAL_S = 60.0
UNKEYED_LOG_TERMINALS_MAX = 10_000


class RrnAllocator:
    """Unique 12-digit retrieval reference numbers, shared by every daemon on the database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._next = 0
        self._end = 0
        self._lock = asyncio.Lock()

    async def next(self) -> str:
        """The next RRN (one database round trip per RRN_BLOCK of them)."""
        if self._next >= self._end:
            async with self._lock:
                if self._next >= self._end:
                    block = int(await self.pool.fetchval("SELECT nextval('switch.rrn_block_seq')"))
                    self._next, self._end = block * RRN_BLOCK, (block + 1) * RRN_BLOCK
        value = self._next
        self._next += 1
        assert value < 10**RRN_DIGITS, "RRN space exhausted"
        return f"{value:0{RRN_DIGITS}d}"


@dataclass
class Services:
    """What every request may use; one per daemon."""

    terminals: TerminalStore
    ledger: Ledger
    pool: asyncpg.Pool
    metrics: Metrics
    rrn: RrnAllocator
    receipts: Coalescer  # duplicate lookups, coalesced (ledger.accounts.receipt_reader)
    loyalty: Loyalty | None = None  # the accounting host's domain operations (financial handlers)
    # [security] unkeyed_terminals = "refuse": a terminal without a MAC key gets 63 for anything
    # but network management, so nobody moves money with a terminal id alone.
    refuse_unkeyed: bool = True
    # Top-up cards: the master key and guessing bounds (None without a master key).
    vouchers: Desk | None = None
    pins: PinChecker | None = None  # PIN checks of financial requests (field 52/110)
    chip_data_kept: bool = True  # [security] chip_data_keep_days > 0
    # Keys of requests left unanswered (outcome unknown): their retransmissions get no 91/96.
    in_doubt: InDoubt = field(default_factory=InDoubt)


@dataclass(eq=False, init=False)  # identity: a key of the pipeline's Deadlines; __init__: see ledger.commands
class _Bound:
    """When a request in flight is answered 91, whatever it is waiting for.

    Its deadline (in the pipeline's Deadlines) is the whole request's bound, or the handler's
    while the handler runs (the earlier of the two). Once it passes, the request's task is
    cancelled; the request turns that cancellation (and no other) into its 91.
    """

    task: asyncio.Task[Any]
    request_deadline_s: float
    cancelling: int  # the task's cancel requests before ours: more on return means another's
    fired: bool = False
    absorbed: bool = False

    def __init__(self, task: asyncio.Task[Any], request_deadline_s: float, cancelling: int,
                 fired: bool = False, absorbed: bool = False) -> None:
        self.task = task
        self.request_deadline_s = request_deadline_s
        self.cancelling = cancelling
        self.fired = fired
        self.absorbed = absorbed

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()

    def expired(self) -> bool:
        """True when the CancelledError in hand is the sweeper's (it is then absorbed, once)."""
        if not self.fired or self.absorbed:
            return False
        self.absorbed = True
        task = asyncio.current_task()
        return task is None or task.uncancel() <= self.cancelling


@dataclass(init=False)  # an __init__ of its own: see ledger.commands
class _State:
    """What the log line and the encoder need to know about one request."""

    mti: str
    fields: Fields
    terminal: Terminal | None  # set only when the response is to be MACed for it
    error: str | None
    replayed: bool

    def __init__(self, mti: str, fields: Fields | None = None, terminal: Terminal | None = None,
                 error: str | None = None, replayed: bool = False) -> None:
        self.mti = mti
        self.fields = {} if fields is None else fields
        self.terminal = terminal
        self.error = error
        self.replayed = replayed


class Pipeline:
    """Answers messages for one listener (its spec, its limits)."""

    def __init__(self, listener: ListenerConfig, services: Services) -> None:
        self.listener = listener
        self.services = services
        self.spec = codec.load_spec(listener.spec)
        self._latency = services.metrics.request_seconds.labels(listener.name)
        self._counters: dict[tuple[str, str | None, str], Any] = {}
        self._unkeyed_logged_s: dict[str, float] = {}
        self._deadlines: Deadlines[_Bound] = Deadlines(  # of the requests in flight
            min(BOUND_SWEEP_INTERVAL_MAX_S, listener.timeout_handler_s / 10), _Bound.fire)

    async def handle(self, raw: bytes, peer: str) -> bytes | None:
        """Response message bytes for ``raw``; NO_ANSWER to send nothing; None to close the connection."""
        started_s = time.perf_counter()
        m = self.services.metrics
        mti = codec.read_mti(raw)
        if mti is None:
            m.frames_rejected.labels(self.listener.name, "unreadable_mti").inc()
            log.warning("frame_rejected", listener=self.listener.name, peer=peer, reason="unreadable_mti",
                        frame_bytes=len(raw))
            return None
        if is_response(mti):
            self._unsolicited(raw, mti, peer)
            return NO_ANSWER
        state = _State(mti)
        # The whole request is bounded, not only its handler (which has its own
        # timeout_handler_s): the terminal lookup, the duplicate check and the RRN
        # wait on the database too.
        task = asyncio.current_task()
        assert task is not None, "a request runs in its own task"
        deadline_s = asyncio.get_running_loop().time() + REQUEST_BOUND_HANDLERS * self.listener.timeout_handler_s
        bound = _Bound(task, deadline_s, task.cancelling())
        self._deadlines.set(bound, deadline_s)
        # Set when a posting of this request reaches the database: from then on a failure is
        # no "nothing was posted", and no 91/96 may say so (see switch.context.NO_RESPONSE).
        sent = [False]
        mark = SENT_MARK.set(sent)
        try:
            try:
                response = await self._answer(raw, state, peer, bound)
            except asyncio.CancelledError:
                if not bound.expired():
                    raise
                raise TimeoutError from None
        except TimeoutError:
            state.error = f"request exceeded {REQUEST_BOUND_HANDLERS * self.listener.timeout_handler_s}s"
            response = NO_RESPONSE if sent[0] else response_to(state.fields or {"t": mti}, SYSTEM_UNAVAILABLE)
        except Exception as exc:  # a bug or the database: decline, never crash the connection
            error = one_line(exc)
            if connection_lost(exc):  # say which, so that nobody hunts a bug during an outage
                error = f"database unavailable ({error})"
            log.error("request_failed", listener=self.listener.name, peer=peer, mti=mti, error=error)
            response = NO_RESPONSE if sent[0] else response_to(state.fields or {"t": mti}, SYSTEM_MALFUNCTION)
        finally:
            self._deadlines.discard(bound)
            SENT_MARK.reset(mark)
        response = self._mind_doubts(response, state)
        if response is NO_RESPONSE:
            return self._unanswered(mti, state, peer, started_s)
        if state.terminal is None and response.get("39") in (SYSTEM_UNAVAILABLE, SYSTEM_MALFUNCTION):
            # The request failed before its terminal was known (the lookup is what failed, or
            # timed out): sign the 91/96 with the last known key, so that the terminal acts on it.
            tid = state.fields.get("41", "")
            if plausible_id(tid):
                self._mac_for(state, self.services.terminals.last_known(tid))
        out = self._encode(response, state)
        elapsed_s = time.perf_counter() - started_s
        code = response.get("39", "")
        pc = state.fields.get("3")
        self._count(mti, pc, code)
        self._latency.observe(elapsed_s)
        if logs.enabled():
            log.info("request", listener=self.listener.name, peer=peer, mti=mti, processing_code=pc,
                     response_code=code, terminal_id=state.fields.get("41", "").rstrip(" ") or None,
                     pan_masked=mask_optional_pan(state.fields.get("2")), rrn=response.get("37"),
                     latency_ms=round(elapsed_s * 1000, 3), error=state.error, replayed=state.replayed or None)
        return out

    def _mind_doubts(self, response: Fields, state: _State) -> Fields:
        """Keep the key of a request left unanswered; answer no 91/96 to a copy of one (it may
        have posted: switch.in_doubt); forget the key once a copy gets a definite answer."""
        doubts = self.services.in_doubt
        if response is not NO_RESPONSE and not len(doubts):
            return response  # the usual case: nothing in doubt, nothing to compute
        key = _doubt_key(state.fields)
        if key is None:
            return response
        if response is NO_RESPONSE:
            doubts.add(key)
        elif response.get("39") in (SYSTEM_UNAVAILABLE, SYSTEM_MALFUNCTION):
            if key in doubts:
                state.error = f"an earlier copy's outcome is unknown ({state.error or 'no database'})"
                return NO_RESPONSE
        else:
            doubts.discard(key)
        return response

    def _unanswered(self, mti: str, state: _State, peer: str, started_s: float) -> bytes:
        # Its outcome is unknown: no answer, so that the terminal sends it again (or reverses it),
        # and that request is answered with the truth (what committed is found under its key).
        elapsed_s = time.perf_counter() - started_s
        pc = state.fields.get("3")
        self._count(mti, pc, UNANSWERED)
        self._latency.observe(elapsed_s)
        log.warning("request", listener=self.listener.name, peer=peer, mti=mti, processing_code=pc,
                    response_code=None, terminal_id=state.fields.get("41", "").rstrip(" ") or None,
                    pan_masked=mask_optional_pan(state.fields.get("2")), latency_ms=round(elapsed_s * 1000, 3),
                    error=f"outcome unknown, not answered ({state.error or 'connection lost after posting'})")
        return NO_ANSWER

    def _unsolicited(self, raw: bytes, mti: str, peer: str) -> None:
        # Answering a response would invite the peer to answer ours: two hosts that both
        # reply to replies loop. Dropped, counted, noted; the connection carries on.
        self.services.metrics.frames_rejected.labels(self.listener.name, "unsolicited_response").inc()
        if not logs.enabled():
            return
        try:
            fields = codec.decode(raw, self.spec)
        except CodecError as exc:
            fields = exc.partial
        log.info("frame_rejected", listener=self.listener.name, peer=peer, reason="unsolicited_response",
                 mti=mti, terminal_id=fields.get("41", "").rstrip(" ") or None, stan=fields.get("11"),
                 response_code=fields.get("39"), pan_masked=mask_optional_pan(fields.get("2")))

    def _count(self, mti: str, pc: str | None, code: str) -> None:
        # Children cached by their labels (bounded: metric_labels and our response codes).
        key = (mti, pc, code)
        child = self._counters.get(key)
        if child is None:
            child = self.services.metrics.requests.labels(self.listener.name, *metric_labels(mti, pc), code)
            if len(self._counters) < COUNTER_CACHE_MAX:
                self._counters[key] = child
        child.inc()

    # ------------------------------------------------------------------ decisions

    async def _identify(self, tid: str | None) -> Terminal | None:
        # Garbage never reaches the database, and an unknown or disabled terminal is
        # answered from the cache like any other (changes are announced, see TerminalStore):
        # a flood of requests from one bogus terminal id costs one query per cache lifetime.
        if not tid or not plausible_id(tid):
            return None
        return await self.services.terminals.get(tid)

    def _mac_for(self, state: _State, term: Terminal | None) -> None:
        # 0800/0810 are never MACed; every other response to a keyed terminal is.
        if term is not None and term.keyed and term.mac_key is not None and state.mti[:2] != "08":
            state.terminal = term

    async def _answer(self, raw: bytes, state: _State, peer: str, bound: _Bound) -> Fields:
        m = self.services.metrics
        name = self.listener.name
        undecodable: CodecError | None = None
        try:
            fields = codec.decode(raw, self.spec)
        except CodecError as exc:
            undecodable = exc  # answered below, with the terminal looked up
        if undecodable is not None:
            m.frames_rejected.labels(name, "undecodable").inc()
            state.fields = {**undecodable.partial, "t": state.mti}
            state.error = str(undecodable)
            self._mac_for(state, await self._identify(state.fields.get("41")))
            return response_to(state.fields, FORMAT_ERROR)
        # From here on a repeat (0421) is its original (0420): validated, deduplicated,
        # routed and answered (0430) as one. Logs and metrics keep the MTI as sent.
        fields["t"] = canonical_mti(fields["t"])
        state.fields = fields
        problem = validate(fields)
        if problem is not None:
            m.frames_rejected.labels(name, "invalid").inc()
            state.error = f"field {problem.field}: {problem.reason}"
            self._mac_for(state, await self._identify(fields.get("41")))
            return response_to(fields, FORMAT_ERROR)

        term: Terminal | None = None
        if "41" in fields:
            term = await self._identify(fields["41"])
            if term is None:
                state.error = "unknown terminal"
                return response_to(fields, INVALID_MERCHANT)
            self._mac_for(state, term)
            if not term.active:
                state.error = "terminal disabled"
                return response_to(fields, NOT_PERMITTED)
            netmgmt = state.mti[:2] == "08"
            if not term.keyed and not netmgmt and self.services.refuse_unkeyed:
                state.error = "terminal has no MAC key ([security] unkeyed_terminals = refuse)"
                self._note_unkeyed(term.terminal_id)
                return response_to(fields, SECURITY_VIOLATION)
            if term.awaiting_keys and not netmgmt:
                # A terminal with a master key and no working keys (never signed on, or told to
                # sign on again by `terminal rotate-keys`): 58 makes it sign on.
                state.error = "terminal has no working keys: sign-on required"
                return response_to(fields, NOT_PERMITTED)
            if term.keyed and not netmgmt:
                if term.mac_key is None:
                    state.error = f"terminal key unavailable: {term.key_error}"
                    return response_to(fields, SYSTEM_MALFUNCTION)
                if not self._mac_ok(raw, fields, term):
                    m.mac_failures.inc()
                    state.error = "bad or missing MAC"
                    return response_to(fields, SECURITY_VIOLATION)
            # A terminal acts for its own merchant only: field 42 is not a choice it makes.
            if "42" in fields and normalize_id(fields["42"]) != term.merchant_id:
                state.error = "field 42 is not this terminal's merchant"
                return response_to(fields, INVALID_MERCHANT)
            if not netmgmt and self.listener.sign_on_required and not term.signed_on:
                fresh = await self.services.terminals.get(fields["41"], fresh=True)
                if fresh is None or not fresh.signed_on:
                    state.error = "terminal not signed on"
                    return response_to(fields, NOT_PERMITTED)

        key = dedup.key_for(fields)
        target = route_fields(state.mti, fields)
        if key is not None and target not in CHECKS_DUPLICATES:
            prior = await dedup.lookup(self.services.receipts, key)
            if isinstance(prior, dedup.Replay):
                state.replayed = True
                return prior.response
            if isinstance(prior, dedup.Conflict):
                state.error = "duplicate key, different content"
                return response_to(fields, DUPLICATE_TRANSMISSION)

        receipt: ResponseReceipt | None = None
        if isinstance(target, str):
            response = response_to(fields, target)
        else:
            ctx = RequestContext(
                fields=fields, mti=state.mti, processing_code=fields.get("3"), listener=self.listener,
                peer=peer, terminal=term, terminals=self.services.terminals, ledger=self.services.ledger,
                pool=self.services.pool, log=log, dedup_key=key, loyalty=self.services.loyalty,
                rrn=await self.services.rrn.next() if key is not None else None, vouchers=self.services.vouchers,
                pins=self.services.pins, chip_data_kept=self.services.chip_data_kept,
            )
            self._deadlines.set(bound, min(bound.request_deadline_s,
                                           asyncio.get_running_loop().time() + self.listener.timeout_handler_s))
            try:
                response = await target(ctx)
            except asyncio.CancelledError:
                if not bound.expired():
                    raise
                state.error = f"handler exceeded {self.listener.timeout_handler_s}s"
                sent = SENT_MARK.get()
                if sent is not None and sent[0]:
                    # A posting was sent and may still commit: no 91 (it would say it did not).
                    return NO_RESPONSE
                return ctx.reply(SYSTEM_UNAVAILABLE)
            finally:
                if not bound.fired:  # a fired bound is out of the Deadlines: do not re-arm it
                    self._deadlines.set(bound, bound.request_deadline_s)
                # The receipt's builder closes over the context, which holds the receipt: a
                # reference cycle per request, left to the cycle collector (measured in bench/e2e:
                # a ~10 ms pause every ~1,500 requests). Break it here; the ledger keeps the
                # receipt itself for as long as a batch may still call it.
                receipt, ctx.response_receipt = ctx.response_receipt, None
            state.replayed = ctx.replayed
        if response is NO_RESPONSE:
            return response
        # 91/96 say "the system failed, nothing was posted": a retransmission must be tried
        # again, so they are never kept as the answer to this key.
        transient = response.get("39") in (SYSTEM_UNAVAILABLE, SYSTEM_MALFUNCTION)
        if key is not None and not transient and not (receipt is not None and receipt.stored):
            stored = await dedup.store(self.services.pool, key, response)
            if isinstance(stored, dedup.Conflict):
                state.error = "duplicate key, different content"
                return response_to(fields, DUPLICATE_TRANSMISSION)
            response = stored.response
        return response

    def _note_unkeyed(self, terminal_id: str) -> None:
        # One line per terminal per interval names it for the operator; the request log has each.
        now_s = time.monotonic()
        if now_s - self._unkeyed_logged_s.get(terminal_id, -UNKEYED_LOG_INTERVAL_S) < UNKEYED_LOG_INTERVAL_S:
            return
        if len(self._unkeyed_logged_s) >= UNKEYED_LOG_TERMINALS_MAX:
            self._unkeyed_logged_s.clear()
        self._unkeyed_logged_s[terminal_id] = now_s
        log.warning("unkeyed_terminal_refused", terminal=terminal_id, listener=self.listener.name)

    def _mac_ok(self, raw: bytes, fields: Fields, term: Terminal) -> bool:
        assert term.mac_alg is not None and term.mac_key is not None
        where = "128" if "1" in fields else "64"
        if where == "128" and "64" in fields:  # a MAC in 64 with a secondary bitmap is misplaced
            return False
        value = fields.get(where)
        if value is None:
            return False
        received = codec.mac_from_value(value)
        if received is None:
            return False
        return mac.verify(term.mac_alg, term.mac_key, codec.mac_input(raw, self.spec, where), received)

    # ------------------------------------------------------------------ encoding

    def _encode(self, response: Fields, state: _State) -> bytes | None:
        term = state.terminal
        try:
            if term is not None:
                alg, key = term.mac_alg, term.mac_key
                assert alg is not None and key is not None
                return codec.encode_with_mac(response, self.spec, functools.partial(mac.compute, alg, key))
            return codec.encode({k: v for k, v in response.items() if k not in codec.MAC_FIELDS}, self.spec)
        except Exception as exc:  # noqa: BLE001 - never let a response kill the connection
            # An echoed value that does not re-encode: answer the bare minimum rather than nothing.
            log.error("response_unencodable", listener=self.listener.name, mti=state.mti, error=str(exc))
            try:
                return codec.encode({"t": response_mti(state.mti), "39": SYSTEM_MALFUNCTION}, self.spec)
            except CodecError:
                return None


def _doubt_key(fields: Fields) -> str | None:
    """The idempotency key of a financial request (its 41, 11, 7), or None."""
    if fields.get("t") not in dedup.FINANCIAL_MTIS:
        return None
    parts = duplicate_key(fields)
    return None if parts is None else receipt_key(*parts)
