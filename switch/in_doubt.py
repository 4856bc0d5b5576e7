"""Requests whose outcome this daemon could not learn: a retransmission of one is never told 91/96.

A request whose posting was sent when the database connection broke, and whose outcome could
not be learned within its bound, gets no response (switch.context.NO_RESPONSE). If its commit
had reached the synchronous standby, it is there once the standby is promoted. A retransmission
of it that arrives while there is no primary cannot be checked against the database; a 91/96
would say "nothing was posted", which may be false. So the keys of unanswered requests are kept
here (in memory, bounded in number and in age), and a 91/96 for one of them becomes no response
as well: the terminal sends it again, and once a primary is back that copy is answered with the
truth. A definite answer under the key (a replay, an approval, a decline) takes it out.

Several daemons behind a load balancer each know their own: the balancer keeps a terminal on one
daemon (HAProxy ``balance source``, docs/scale-out.md) so that its retransmissions come back here.

>>> d = InDoubt(entries_max=2, ttl_s=60.0)
>>> d.add("k1"); d.add("k2"); d.add("k3")
>>> "k1" in d, "k3" in d, len(d)
(False, True, 2)
>>> d.discard("k3"); "k3" in d
False
"""

from __future__ import annotations

import time
from collections import OrderedDict

# A terminal gives up and reverses within minutes (specs/HOST-INTERFACE.md section 11).
TTL_S = 900.0
ENTRIES_MAX = 100_000


class InDoubt:
    """Idempotency keys of unanswered requests, oldest first; at most ``entries_max``, ``ttl_s`` old."""

    def __init__(self, entries_max: int = ENTRIES_MAX, ttl_s: float = TTL_S) -> None:
        self.entries_max, self.ttl_s = entries_max, ttl_s
        self._keys: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        added_s = self._keys.get(key)
        if added_s is None:
            return False
        if time.monotonic() - added_s > self.ttl_s:
            del self._keys[key]
            return False
        return True

    def add(self, key: str) -> None:
        """Remember ``key`` (again: its age starts anew); the oldest goes when full."""
        self._keys.pop(key, None)
        self._keys[key] = time.monotonic()
        while len(self._keys) > self.entries_max:
            self._keys.popitem(last=False)

    def discard(self, key: str) -> None:
        """Forget ``key``: its outcome is known now."""
        self._keys.pop(key, None)
