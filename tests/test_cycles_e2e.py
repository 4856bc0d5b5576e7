"""A request leaves nothing to Python's cycle collector: measured on a live daemon.

Apart from tests/test_financial_e2e.py (whose module shares one database): this daemon runs
with CPython's own young-generation threshold, and provisions the same world on its own.
"""

from __future__ import annotations

from pathlib import Path

from fixtures_daemon import POS_LISTENER, Daemon, decode
from prometheus_client.parser import text_string_to_metric_families
from test_financial_e2e import MAC, _books_ok, _provision, _req, _terminal


def _gc_counts(d: Daemon) -> tuple[float, float]:
    """(collections, objects collected) by the daemon's cycle collector, all generations."""
    fams = {f.name: f for f in text_string_to_metric_families(d.scrape())}
    return (sum(s.value for s in fams["python_gc_collections"].samples if s.name == "python_gc_collections_total"),
            sum(s.value for s in fams["python_gc_objects_collected"].samples
                if s.name == "python_gc_objects_collected_total"))


def test_requests_leave_no_reference_cycles(daemon_db: str, tmp_path: Path) -> None:
    """What a request builds is freed as it finishes, never left to the cycle collector.

    A guard: a cycle made per request (a nested function kept where its siblings can reach
    it, say) would leave objects for the collector at the request rate. With the young-generation
    threshold at the lowest the daemon allows (100; CPython's own is 700, the daemon's default
    10,000) the collector runs many times over these requests (at 700 it ran as few as 4 times:
    too few to mean anything), so a cycle per request would show as hundreds of objects collected.
    """
    d = Daemon(tmp_path, daemon_db, [POS_LISTENER], extra={"daemon": {"gc_gen0_threshold": 100}}).start()
    try:
        _provision(d)
        with _terminal(d) as t:
            before = _gc_counts(d)
            for _ in range(25):  # 20 in flight at a time: seconds, not minutes
                sent = [_req("000000", 100) for _ in range(20)]
                for fields in sent:
                    t.send(fields, mac=MAC)
                assert [decode(t.recv_raw(), "pos")["39"] for _ in sent] == ["00"] * len(sent)
            after = _gc_counts(d)
        assert after[0] - before[0] >= 5, "the collector must have run for this to mean anything"
        assert after[1] - before[1] < 250, (before, after)
        _books_ok(d)
    finally:
        assert d.stop() == 0
