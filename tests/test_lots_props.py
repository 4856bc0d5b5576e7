"""Lot arithmetic (ledger.loyalty.lots.LotBook), the rule the database keeps, as properties.

The state machines compare the database's lots with LotBook after every step; these check
LotBook itself: lots always sum to the balance, debits take the oldest lots, a full undo right
after its original gives the lots back exactly, expiry takes exactly the due live lots.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.loyalty.lots import DEBT_ON, LotBook, add_months

D0 = dt.date(2027, 1, 1)
ACCOUNT = 1

# One step: (kind, amount, day offset of the credit's expiry, index of an earlier journal to undo).
steps = st.lists(st.tuples(st.sampled_from(["credit", "debit", "undo", "expire"]), st.integers(1, 500),
                           st.integers(0, 120), st.integers(0, 50)), max_size=40)


def run(book: LotBook, plan: list[tuple[str, int, int, int]]) -> int:
    balance = 0
    journals: list[tuple[int, int]] = []  # (journal, amount moved)
    for n, (kind, amount, offset, pick) in enumerate(plan, start=1):
        fresh = D0 + dt.timedelta(days=offset)
        if kind == "credit":
            book.apply(n, ACCOUNT, amount, fresh)
            journals.append((n, amount))
            balance += amount
        elif kind == "debit":
            book.apply(n, ACCOUNT, -amount, fresh)
            journals.append((n, -amount))
            balance -= amount
        elif kind == "undo" and journals:
            original, moved = journals[pick % len(journals)]
            part = -moved * min(amount, abs(moved)) // abs(moved)
            book.apply(n, ACCOUNT, part, fresh, undoes=original)
            balance += part
        elif kind == "expire":
            balance -= sum(book.expire(n, fresh).values())
        assert book.total(ACCOUNT) == balance
    return balance


@settings(max_examples=300, deadline=None)
@given(steps)
def test_lots_sum_to_the_balance(plan: list[tuple[str, int, int, int]]) -> None:
    book = LotBook()
    balance = run(book, plan)
    assert book.total(ACCOUNT) == balance
    # Only the debt lot is ever negative.
    assert all(v > 0 or d == DEBT_ON for d, v in book.lots[ACCOUNT].items())


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(1, 2000))
def test_a_debit_takes_the_oldest_lots(plan: list[tuple[str, int, int, int]], amount: int) -> None:
    book = LotBook()
    run(book, plan)
    before = dict(book.live(ACCOUNT))
    book.apply(10_000, ACCOUNT, -amount, D0)
    after = dict(book.live(ACCOUNT))
    taken = {d: v - after.get(d, 0) for d, v in before.items() if v != after.get(d, 0)}
    if taken:
        # Every lot older than the youngest one taken from is gone.
        youngest = max(taken)
        assert all(d >= youngest for d in after)
    assert sum(taken.values()) == min(amount, sum(before.values()))


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(1, 2000), st.booleans())
def test_a_full_undo_gives_the_lots_back(plan: list[tuple[str, int, int, int]], amount: int, credit: bool) -> None:
    book = LotBook()
    run(book, plan)
    before = dict(book.lots[ACCOUNT])
    moved = amount if credit else -amount
    book.apply(10_000, ACCOUNT, moved, D0 + dt.timedelta(days=200))
    book.apply(10_001, ACCOUNT, -moved, D0 + dt.timedelta(days=201), undoes=10_000)
    assert dict(book.lots[ACCOUNT]) == before


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(0, 150))
def test_expiry_takes_exactly_the_due_live_lots(plan: list[tuple[str, int, int, int]], offset: int) -> None:
    book = LotBook()
    run(book, plan)
    day = D0 + dt.timedelta(days=offset)
    due = sum(v for d, v in book.live(ACCOUNT) if d <= day)
    expired = book.expire(99_999, day)
    assert expired.get(ACCOUNT, 0) == due
    assert all(d > day for d, _ in book.live(ACCOUNT))


def test_add_months_clamps_to_the_month_end() -> None:
    assert add_months(dt.date(2027, 3, 31), 1) == dt.date(2027, 4, 30)
    assert add_months(dt.date(2028, 1, 29), 1) == dt.date(2028, 2, 29)
    assert add_months(dt.date(2027, 12, 15), 1) == dt.date(2028, 1, 15)
