"""Properties of the API's small parts: cursors (round trip, tampering, scope), token buckets
(never more than the burst plus the refill), request hashes (key order does not matter)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from portal.api.idempotency import request_hash
from portal.api.paging import Cursors
from portal.api.ratelimit import Buckets

SECRET = b"unit-test-secret-0123456789abcdef"
keys = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=40))


@given(scope=st.text(max_size=30), last=keys)
def test_a_cursor_carries_its_key_back(scope: str, last: int | str) -> None:
    cursors = Cursors(SECRET)
    assert cursors.decode(scope, cursors.encode(scope, last)) == last


@given(scope=st.text(max_size=30), last=keys, position=st.integers(min_value=0), flip=st.integers(1, 255))
def test_a_changed_cursor_is_refused(scope: str, last: int | str, position: int, flip: int) -> None:
    cursors = Cursors(SECRET)
    raw = bytearray(cursors.encode(scope, last).encode())
    i = position % len(raw)
    raw[i] = (raw[i] + flip) % 128
    try:
        changed = raw.decode()
    except UnicodeDecodeError:
        return
    if changed != cursors.encode(scope, last):
        decoded = cursors.decode(scope, changed)
        # base64 may map two spellings to one byte string (padding bits): then it is the same cursor.
        assert decoded is None or decoded == last


@given(a=st.text(max_size=20), b=st.text(max_size=20), last=keys)
def test_a_cursor_is_bound_to_its_list(a: str, b: str, last: int | str) -> None:
    cursors = Cursors(SECRET)
    if a != b:
        assert cursors.decode(b, cursors.encode(a, last)) is None
    assert Cursors(b"another secret, also 32 bytes long").decode(a, cursors.encode(a, last)) is None


@given(rate=st.floats(0.5, 100), burst=st.integers(1, 50),
       gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200))
def test_buckets_grant_at_most_burst_plus_refill(rate: float, burst: int, gaps: list[float]) -> None:
    b = Buckets(rate, burst, buckets_max=10)
    now, granted = 0.0, 0
    for gap in gaps:
        now += gap
        wait = b.take("k", now=now)
        assert wait >= 0
        granted += wait == 0.0
    assert granted <= burst + rate * now + 1e-6


def test_buckets_are_bounded() -> None:
    b = Buckets(1.0, 1, buckets_max=100)
    for n in range(1000):
        b.take(f"address-{n}", now=0.0)
    assert len(b) == 100


@given(body=st.dictionaries(st.text(max_size=8), st.integers(), max_size=6))
def test_the_request_hash_ignores_key_order(body: dict[str, int]) -> None:
    reversed_body = dict(reversed(list(body.items())))
    assert request_hash("POST", "/api/v1/orders", body) == request_hash("POST", "/api/v1/orders", reversed_body)
    assert request_hash("POST", "/api/v1/orders", body) != request_hash("POST", "/api/v1/other", body)
