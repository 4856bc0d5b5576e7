"""What the same work costs after the CPU was idle, on this machine (run on demand:
`make bench-idle-cost`; not a test, and it needs no database).

The work is the switch's own request-path code, as the daemon runs it: decode a 0200 purchase
(pos spec), verify its CMAC-AES, and encode and sign the 0210. One chunk is --frames such
frames. Each chunk's CPU time is read with ``time.thread_time_ns`` (CPU, not wall: a chunk
that is preempted is not charged for the wait). A chunk runs either right after the last
one, or after sleeping 0.2, 1 or 5 ms: while this process sleeps, its CPU may go idle, the
virtual machine may give the physical core back to the host, and other tenants may fill its
caches. The conditions run interleaved, in --blocks rounds, so the machine's drift over
minutes falls on all of them alike. Prints, per condition, the median and quartiles of a
chunk's CPU microseconds and the ratio of its median to back-to-back, and writes
bench/results/idle_cost.json.

Why it exists: in ``make bench-e2e``, every process (daemon, PostgreSQL and load generator,
whose work per request never changes) uses about twice the CPU per request at half the rate
that it uses in the closed loop, nearly all of it user time (docs/notes/2026-11-diary.md, Studying
it). This probe shows how much of that the machine does to any code that sleeps between
pieces of work, with nothing of the switch's concurrency, batching or database involved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
from _common import ROOT

from switch import codec, mac
from switch.context import ECHO_FIELDS

SLEEPS_S = (0.0, 0.0002, 0.001, 0.005)
KEY = bytes(range(16))  # a throwaway CMAC-AES key: the probe signs its own frames only


def request_frame(spec: codec.Spec) -> bytes:
    """A MACed 0200 purchase as a POS terminal sends it."""
    fields = {"t": "0200", "2": "6200000000000000011", "3": "000000", "4": "000000012345",
              "7": "1123061500", "11": "000123", "12": "061500", "13": "1123", "22": "051",
              "25": "00", "41": "T0000001", "42": "M00000000000001", "49": "156"}
    return codec.encode_with_mac(fields, spec, lambda data: mac.compute("cmac-aes", KEY, data))


def make_chunk(frames: int) -> Callable[[], None]:
    """One chunk of request-path work: ``frames`` times decode, verify the MAC, answer and sign."""
    spec = codec.load_spec("pos")
    raw = request_frame(spec)

    def sign(data: bytes) -> bytes:
        return mac.compute("cmac-aes", KEY, data)

    def chunk() -> None:
        for _ in range(frames):
            fields = codec.decode(raw, spec)
            field = codec.mac_field(fields)
            if codec.mac_from_value(fields[field]) != sign(codec.mac_input(raw, spec, field))[:8]:
                raise SystemExit("idle_cost: the probe's own MAC does not verify")
            answer: dict[str, str] = {k: fields[k] for k in ECHO_FIELDS if k in fields}
            codec.encode_with_mac({"t": "0210", **answer, "39": "00", "38": "123456"}, spec, sign)
    return chunk


def measure(chunk: Callable[[], None], blocks: int, per_block: int) -> dict[float, list[int]]:
    """CPU nanoseconds per chunk, by sleep before it, the conditions interleaved block by block."""
    samples: dict[float, list[int]] = {s: [] for s in SLEEPS_S}
    for _ in range(3):  # warm the codec's caches before anything is measured
        chunk()
    for _ in range(blocks):
        for sleep_s, out in samples.items():
            # The 5 ms condition takes most of the wall time: fewer of it per block.
            for _ in range(per_block if sleep_s < 0.005 else max(1, per_block // 3)):
                if sleep_s:
                    time.sleep(sleep_s)
                t0 = time.thread_time_ns()
                chunk()
                out.append(time.thread_time_ns() - t0)
    return samples


def figures(samples: dict[float, list[int]]) -> list[dict[str, Any]]:
    base = statistics.median(samples[0.0])
    rows = []
    for sleep_s, ns in samples.items():
        q1, med, q3 = statistics.quantiles(ns, n=4)
        rows.append({"sleep_before_ms": sleep_s * 1000, "chunks": len(ns),
                     "cpu_us_median": round(statistics.median(ns) / 1000, 1),
                     "cpu_us_p25": round(q1 / 1000, 1), "cpu_us_p75": round(q3 / 1000, 1),
                     "ratio_to_back_to_back": round(statistics.median(ns) / base, 2)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1, help="request/response pairs per chunk (1: what the daemon does per wake-up at half rate)")
    ap.add_argument("--blocks", type=int, default=40, help="rounds over the conditions")
    ap.add_argument("--per-block", type=int, default=45, help="chunks per condition per round")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "idle_cost.json"))
    args = ap.parse_args()
    if min(args.frames, args.blocks, args.per_block) < 1:
        ap.error("--frames, --blocks and --per-block must be at least 1")
    rows = figures(measure(make_chunk(args.frames), args.blocks, args.per_block))
    for r in rows:
        print(f"sleep {r['sleep_before_ms']:4.1f} ms before each chunk: {r['chunks']:5d} chunks, CPU per chunk "
              f"median {r['cpu_us_median']:7.1f} us (p25 {r['cpu_us_p25']:.1f}, p75 {r['cpu_us_p75']:.1f}), "
              f"x{r['ratio_to_back_to_back']:.2f} of back to back", flush=True)
    result = {**_common.provenance(), "frames_per_chunk": args.frames, "conditions": rows,
              "note": "CPU time per chunk of request-path code; conditions interleaved; see the module docstring"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
