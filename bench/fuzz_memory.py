"""Fuzz memory benchmark (run on demand: `make bench-fuzz-memory`; not a test, not a timing).

Does the daemon's memory stay flat under a long stream of malformed frames? Starts a real
`switchd serve` on its own fresh database (a program, a merchant, plain and MAC-keyed terminals
signed on, cards: valid requests post to the ledger), then sends --rounds rounds of --frames
fuzzed frames each over TCP (nac2, the POS spec): mutants of valid sign-ons, echoes, purchases
(plain and MACed), redemptions and reversals (bits flipped, cut, extended, bitmaps replaced, a
tertiary bitmap, a response MTI, spliced), raw garbage, broken length headers, and some valid
requests. Frames go in batches on short connections (sent, half-closed, answers read to the
end; a frame that makes the switch close goes alone), --concurrency connections at a time.

After each round the daemon's resident memory (VmRSS, /proc/PID/status) is sampled. Round 1
warms up (caches, arenas, metric children); the figure that counts is the growth from round 2
to the last, per round. Exit 1 when it exceeds --bound-mb-per-round, or when the daemon's log
holds an unhandled error (traceback, an exception never retrieved, a failed request task).

Prints the figures and writes bench/results/fuzz_memory.json. --quick: 3 rounds of 5,000 frames.

Server: $SWITCHD_BENCH_DSN (an admin DSN), else postgres@127.0.0.1:5432. It creates its own
database (switchd_fuzzmem_<random>) and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _common import ADMIN_DSN, ROOT, Daemon

from ledger import db as ledger_db
from ledger.loyalty.cards import issue_card
from ledger.loyalty.demo import demo_pan
from ledger.loyalty.merchants import add_merchant
from ledger.loyalty.programs import add_program
from switch.terminals import add_terminal
from tools import _msg, harness

RESULTS = ROOT / "bench" / "results" / "fuzz_memory.json"
PROGRAM = "FUZZMEM"
MERCHANT = "MFUZZ001"
PLAIN_TERMINALS = [f"FZ{i:06d}" for i in range(1, 5)]
KEYED_TERMINALS = [f"FK{i:06d}" for i in range(1, 5)]
CARDS = 200
CARD_EXPIRY = "3012"
MAC_ALG = "cmac-aes"
BATCH_FRAMES = 64  # frames per connection
BATCH_TIMEOUT_S = 60.0  # to read one batch's answers to the end
SETTLE_S = 1.0  # after a round, before sampling: the last answers are written, buffers freed
UNHANDLED = ("exception was never retrieved", "Traceback", "request_task_failed", "request_failed")
KINDS = ("valid", "bitflip", "truncate", "extend", "bitmap", "tertiary", "response", "splice", "garbage",
         "length")
BITMAP_BYTES = 8  # the POS spec: binary bitmaps
RESPONSE_MTIS = (b"0810", b"0210", b"0410", b"0430", b"0510")


# ---------------------------------------------------------------------- set-up


async def provision(dsn: str, master_key: bytes) -> dict[str, bytes]:
    """Program, merchant, terminals (signed on; the keyed ones' keys returned), cards."""
    conn = await ledger_db.connect(dsn)
    try:
        await add_program(conn, PROGRAM, "Fuzz memory", "alliance", issue_price_minor=1, redeem_value_minor=1)
        await add_merchant(conn, MERCHANT, "Fuzz merchant", PROGRAM, 1, 1, {"default": 0})
        keys: dict[str, bytes] = {}
        for tid in PLAIN_TERMINALS:
            await add_terminal(conn, tid, MERCHANT, None, None, master_key)
        for tid in KEYED_TERMINALS:
            keys[tid] = secrets.token_bytes(16)
            await add_terminal(conn, tid, MERCHANT, MAC_ALG, keys[tid].hex(), master_key)
        await conn.execute("UPDATE switch.terminals SET signed_on = true")
        for n in range(1, CARDS + 1):  # each card to a member of its own (a card needs one)
            await issue_card(conn, demo_pan(n), CARD_EXPIRY)
    finally:
        await conn.close()
    return keys


# ---------------------------------------------------------------------- frames


class Fuzzer:
    """Fuzzed POS messages from fresh valid ones (a new STAN each: valid ones reach the ledger)."""

    def __init__(self, rng: random.Random, keys: dict[str, bytes]) -> None:
        self.rng = rng
        self.keys = keys
        self.stan = 0

    def _stamp(self) -> tuple[str, str]:
        self.stan = self.stan % 999_999 + 1
        return _msg.transmission_datetime(), f"{self.stan:06d}"

    def seed(self) -> bytes:
        """One valid request of a random kind."""
        rng = self.rng
        now, stan = self._stamp()
        keyed = rng.random() < 0.5
        tid = rng.choice(KEYED_TERMINALS if keyed else PLAIN_TERMINALS)
        what = rng.choice(("echo", "sign-on", "purchase", "purchase", "redeem", "reversal"))
        base = {"7": now, "11": stan, "41": _msg.pad_tid(tid)}
        if what in ("echo", "sign-on"):
            return _msg.build({"t": "0800", **base, "70": "301" if what == "echo" else "001"}, "pos")
        fields = {"t": "0200", "2": demo_pan(rng.randint(1, CARDS)), "3": "006500" if what == "redeem" else "000000",
                  "4": f"{rng.randint(1, 5000):012d}", **base, "42": _msg.pad_mid(MERCHANT)}
        if what != "redeem":
            fields["49"] = "156"
        if what == "reversal":
            fields["t"] = "0400"
            fields["90"] = "0200" + stan + now + "0" * 22
        return _msg.build(fields, "pos", MAC_ALG if keyed else "", self.keys.get(tid, b""))

    def frame(self) -> tuple[bytes, bool]:
        """(nac2 frame, whether it ends its connection: a broken header or an unreadable MTI)."""
        rng = self.rng
        kind = rng.choice(KINDS)
        msg = bytearray(self.seed())
        if kind == "bitflip":
            for _ in range(rng.randint(1, 8)):
                msg[rng.randrange(len(msg))] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del msg[rng.randrange(len(msg)):]
        elif kind == "extend":
            msg += rng.randbytes(rng.randint(1, 40))
        elif kind == "bitmap":
            msg[4:4 + BITMAP_BYTES] = rng.randbytes(BITMAP_BYTES)
        elif kind == "tertiary" and msg[4] & 0x80:  # bit 65: fields 129-192, which the spec has not
            at = 4 + 2 * BITMAP_BYTES
            msg[4 + BITMAP_BYTES] |= 0x80
            msg[at:at] = rng.randbytes(BITMAP_BYTES)
            msg += rng.randbytes(rng.randint(0, 30))
        elif kind == "response":
            msg[:4] = rng.choice(RESPONSE_MTIS)
        elif kind == "splice":
            other = self.seed()
            cut = rng.randrange(len(msg) + 1)
            msg[cut:] = other[cut:]
        elif kind == "garbage":
            msg = bytearray(rng.randbytes(rng.randint(0, 300)))
        framed = len(msg).to_bytes(2, "big") + bytes(msg)
        if kind == "length":
            return rng.randbytes(2) + bytes(msg), True
        return framed, _msg_unreadable(bytes(msg))


def _msg_unreadable(message: bytes) -> bool:
    head = message[:4]
    return not (len(head) == 4 and head.isdigit())


def batch(fuzzer: Fuzzer, size: int) -> list[bytes]:
    """``size`` frames as the bytes of each connection to send them on: the frames that end a
    connection each on one of its own (the switch closes at once, dropping answers in flight),
    the others together."""
    frames = [fuzzer.frame() for _ in range(size)]
    closers = [f for f, ends in frames if ends]
    return [b"".join(f for f, ends in frames if not ends), *closers]


# ---------------------------------------------------------------------- sending


async def exchange(port: int, data: bytes) -> tuple[int, str | None]:
    """Send one batch on a new connection, half-close, read to the end: (answers, what went wrong)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return 0, type(exc).__name__
    answers, problem, buf = 0, None, b""
    try:
        try:
            writer.write(data)
            await writer.drain()
            writer.write_eof()
        except OSError:
            pass  # closed on us: a frame ended the connection
        async with asyncio.timeout(BATCH_TIMEOUT_S):
            while chunk := await reader.read(65536):
                buf += chunk
                while len(buf) >= 2 and len(buf) >= 2 + (n := int.from_bytes(buf[:2], "big")):
                    answers += 1
                    buf = buf[2 + n:]
    except (OSError, TimeoutError) as exc:
        problem = type(exc).__name__
    finally:
        writer.close()
    return answers, problem


async def fuzz_round(port: int, fuzzer: Fuzzer, frames: int, concurrency: int) -> dict[str, Any]:
    """Send ``frames`` fuzzed frames, ``concurrency`` connections at a time."""
    started = time.monotonic()
    sizes = [BATCH_FRAMES] * (frames // BATCH_FRAMES) + ([frames % BATCH_FRAMES] if frames % BATCH_FRAMES else [])
    queue: asyncio.Queue[int] = asyncio.Queue()
    for size in sizes:
        queue.put_nowait(size)
    totals: dict[str, Any] = {"frames": 0, "answers": 0, "connections": 0, "connection_errors": {}}

    async def worker() -> None:
        while not queue.empty():
            size = queue.get_nowait()
            for data in batch(fuzzer, size):
                if data:
                    answers, problem = await exchange(port, data)
                    totals["answers"] += answers
                    totals["connections"] += 1
                    if problem is not None:
                        errors = totals["connection_errors"]
                        errors[problem] = errors.get(problem, 0) + 1
            totals["frames"] += size

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    totals["elapsed_s"] = round(time.monotonic() - started, 2)
    return totals


# ---------------------------------------------------------------------- figures


def growth_per_round_mb(rss_mb: list[float]) -> float:
    """RSS growth per round from the end of round 2 to the end of the last (round 1 warms up).

    >>> growth_per_round_mb([50.0, 52.0, 52.5, 53.0])
    0.5
    """
    if len(rss_mb) < 3:
        raise ValueError("growth needs 3 rounds or more")
    return round((rss_mb[-1] - rss_mb[1]) / (len(rss_mb) - 2), 3)


def unhandled(log_text: str) -> dict[str, int]:
    """How many times each unhandled-error marker occurs in the daemon's log."""
    return {needle: log_text.count(needle) for needle in UNHANDLED}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=50_000, help="fuzzed frames per round")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 5,000 frames")
    parser.add_argument("--concurrency", type=int, default=16, help="connections at a time")
    parser.add_argument("--bound-mb-per-round", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=8583)
    parser.add_argument("--log-level", choices=["info", "warning"], default="warning")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.frames = 3, 5_000
    if args.rounds < 3 or args.frames < 1 or args.concurrency < 1:
        parser.error("--rounds must be 3 or more (round 1 warms up), --frames and --concurrency 1 or more")

    master_key_hex = _common.MASTER_KEY_HEX
    results: dict[str, Any] = {
        **_common.provenance(),
        "rounds": args.rounds, "frames_per_round": args.frames, "concurrency": args.concurrency,
        "seed": args.seed, "daemon_log_level": args.log_level, "bound_mb_per_round": args.bound_mb_per_round,
    }
    # The daemon stops (leaving its `with`) before its work directory and its database go.
    with harness.private_database(ADMIN_DSN, "switchd_fuzzmem") as db:
        dsn = db.dsn
        with (tempfile.TemporaryDirectory(prefix="switchd-fuzzmem-") as tmp,
              Daemon(Path(tmp), dsn, log_level=args.log_level, connections_max=args.concurrency + 64,
                     pool_size_min=2, pool_size_max=4, master_key_hex=master_key_hex,
                     metrics_port=harness.free_port()) as daemon):
            daemon.cli("db", "upgrade")
            keys = asyncio.run(provision(dsn, bytes.fromhex(master_key_hex)))
            daemon.start()
            results["daemon_rss_start_mb"] = round(daemon.rss_mb(), 1)
            print(f"daemon up, RSS {results['daemon_rss_start_mb']} MB; {args.rounds} rounds x "
                  f"{args.frames} fuzzed frames", flush=True)
            fuzzer = Fuzzer(random.Random(args.seed), keys)
            rounds: list[dict[str, Any]] = []
            for n in range(1, args.rounds + 1):
                sent = asyncio.run(fuzz_round(daemon.port, fuzzer, args.frames, args.concurrency))
                time.sleep(SETTLE_S)
                sent["rss_mb"] = round(daemon.rss_mb(), 1)
                rounds.append(sent)
                print(f"round {n}: {sent['frames']} frames on {sent['connections']} connections, "
                      f"{sent['answers']} answers in {sent['elapsed_s']} s; daemon RSS {sent['rss_mb']} MB",
                      flush=True)
            results["per_round"] = rounds
            scraped = daemon.scrape()
            results["frames_rejected"] = {k: v for k, v in scraped.items()
                                          if k.startswith("switchd_frames_rejected_total")}
            results["daemon_exit_code"] = daemon.stop()
            results["unhandled_in_log"] = unhandled(daemon.log_path.read_text(errors="replace"))

    rss = [r["rss_mb"] for r in results["per_round"]]
    growth = growth_per_round_mb(rss)
    results["rss_mb"] = rss
    results["growth_round2_to_last_mb"] = round(rss[-1] - rss[1], 1)
    results["growth_mb_per_round"] = growth
    over = growth > args.bound_mb_per_round
    bad_log = any(results["unhandled_in_log"].values()) or results["daemon_exit_code"] != 0
    results["verdict"] = "grows" if over else ("unhandled errors" if bad_log else "flat")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"RSS by round (MB): {', '.join(f'{v:.1f}' for v in rss)}; growth from round 2 to {len(rss)}: "
          f"{results['growth_round2_to_last_mb']} MB ({growth} MB/round, bound {args.bound_mb_per_round}); "
          f"unhandled in the daemon's log: {results['unhandled_in_log']}; exit {results['daemon_exit_code']}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 1 if over or bad_log else 0


if __name__ == "__main__":
    sys.exit(main())
