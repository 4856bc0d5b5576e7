"""Counting and summarising what the load generator saw.

>>> s = Stats()
>>> for ms in (1.0, 2.0, 3.0, 4.0):
...     s.record(ms, "00")
>>> s.summary(elapsed_s=2.0)["latency_ms"]["p50"], s.summary(elapsed_s=2.0)["throughput_rps"]
(2.0, 2.0)
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty).

    >>> percentile([1.0, 2.0, 3.0, 4.0, 5.0], 99), percentile([], 50)
    (5.0, 0.0)
    """
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Stats:
    sent: int = 0
    responses: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    response_codes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    connections_open: int = 0
    connections_failed: int = 0
    idle_open: int = 0
    idle_lost: int = 0
    # Open loop only: times the generator itself fell a whole interval behind its
    # target rate (a busy client machine). Reported, but not an error of the server.
    schedule_slips: int = 0
    # The whole second (monotonic) each answer arrived in, beside latencies_ms: a tail made
    # of one stall and a tail spread over the run look alike in a single p99.
    seconds: list[int] = field(default_factory=list)
    # Open loop only: each answer's latency from the moment its request was due by the
    # schedule, not from when it was written. A generator that is late to send (a busy
    # machine, all in-flight slots taken) would otherwise leave its own lateness out of the
    # figure ("coordinated omission"); pgbench -R measures from its schedule the same way.
    from_schedule_ms: list[float] = field(default_factory=list)

    def record(self, latency_ms: float, response_code: str, from_schedule_ms: float | None = None) -> None:
        self.responses += 1
        self.latencies_ms.append(latency_ms)
        if from_schedule_ms is not None:
            self.from_schedule_ms.append(from_schedule_ms)
        self.response_codes[response_code] += 1
        self.seconds.append(int(time.monotonic()))

    def per_second(self) -> list[dict[str, float]]:
        """Count, p50, p99 and max latency for each second of the run, in order (``second``:
        the whole CLOCK_MONOTONIC second, system-wide on Linux, to line up with other probes)."""
        by_second: dict[int, list[float]] = {}
        for second, ms in zip(self.seconds, self.latencies_ms, strict=True):
            by_second.setdefault(second, []).append(ms)
        out: list[dict[str, float]] = []
        for second in sorted(by_second):
            values = sorted(by_second[second])
            out.append({"second": second, "responses": len(values), "p50_ms": round(percentile(values, 50), 1),
                        "p99_ms": round(percentile(values, 99), 1), "max_ms": round(values[-1], 1)})
        return out

    def error(self, kind: str, count: int = 1) -> None:
        self.errors[kind] += count

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        out = {
            "elapsed_s": round(elapsed_s, 3),
            "sent": self.sent,
            "responses": self.responses,
            "throughput_rps": round(self.responses / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "latency_ms": latency_figures(self.latencies_ms),
            "response_codes": dict(sorted(self.response_codes.items())),
            "errors": dict(sorted(self.errors.items())),
            "errors_total": sum(self.errors.values()),
            "schedule_slips": self.schedule_slips,
            "per_second": self.per_second(),
            "connections": {
                "open": self.connections_open,
                "failed": self.connections_failed,
                "idle_open": self.idle_open,
                "idle_lost": self.idle_lost,
            },
        }
        if self.from_schedule_ms:
            out["latency_from_schedule_ms"] = latency_figures(self.from_schedule_ms)
        return out


def latency_figures(values_ms: list[float]) -> dict[str, float]:
    """p50, p90, p99, max and mean of a list of latencies (all 0.0 when empty).

    >>> latency_figures([4.0, 1.0, 2.0, 3.0])["p50"], latency_figures([])["max"]
    (2.0, 0.0)
    """
    ordered = sorted(values_ms)
    return {
        "p50": round(percentile(ordered, 50), 3),
        "p90": round(percentile(ordered, 90), 3),
        "p99": round(percentile(ordered, 99), 3),
        "max": round(ordered[-1], 3) if ordered else 0.0,
        "mean": round(sum(ordered) / len(ordered), 3) if ordered else 0.0,
    }


def format_summary(summary: dict[str, Any]) -> list[str]:
    """Human-readable lines for a summary."""
    lat = summary["latency_ms"]
    conns = summary["connections"]
    lines = [
        f"elapsed      {summary['elapsed_s']:.2f} s",
        f"sent         {summary['sent']}",
        f"responses    {summary['responses']}",
        f"throughput   {summary['throughput_rps']:.1f} responses/s",
        f"latency ms   p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
        f"max {lat['max']:.2f}",
    ]
    sched = summary.get("latency_from_schedule_ms")
    if sched:
        lines.append(f"from sched   p50 {sched['p50']:.2f}  p90 {sched['p90']:.2f}  p99 {sched['p99']:.2f}  "
                     f"max {sched['max']:.2f}")
    lines += [
        f"connections  {conns['open']} open, {conns['failed']} failed",
    ]
    if conns["idle_open"] or conns["idle_lost"]:
        lines.append(f"idle conns   {conns['idle_open']} held, {conns['idle_lost']} lost")
    codes = ", ".join(f"{k}: {v}" for k, v in summary["response_codes"].items()) or "none"
    lines.append(f"codes (39)   {codes}")
    errors = ", ".join(f"{k}: {v}" for k, v in summary["errors"].items()) or "none"
    lines.append(f"errors       {errors}")
    return lines
