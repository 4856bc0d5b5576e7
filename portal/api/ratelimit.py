"""Token buckets per member and per client address, kept in the portal process.

Each process has its own buckets: with several portal processes a client may
get up to that many times the configured rate (docs/api.md says so). The table
is bounded: past ``buckets_max`` keys the least recently used bucket is dropped
(a full bucket again, which errs on the client's side, never on memory's).

>>> b = Buckets(rate_per_s=1.0, burst=2, buckets_max=10)
>>> [b.take("a", now=0.0) for _ in range(3)]
[0.0, 0.0, 1.0]
>>> b.take("a", now=1.0)
0.0
"""

from __future__ import annotations

import time
from collections import OrderedDict


class Buckets:
    """One token bucket per key: ``burst`` tokens, refilled at ``rate_per_s``."""

    def __init__(self, rate_per_s: float, burst: int, buckets_max: int) -> None:
        assert rate_per_s > 0 and burst >= 1 and buckets_max >= 1
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.buckets_max = buckets_max
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0.0 when granted, else the seconds until one is there."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        wait_s = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait_s = (1.0 - tokens) / self.rate_per_s
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.buckets_max:
            self._buckets.popitem(last=False)
        return wait_s

    def __len__(self) -> int:
        return len(self._buckets)
