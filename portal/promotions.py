"""Promotions and ads: a merchant's, approved by the platform, shown to members and the public.

Status: ``draft`` (kept by the merchant) -> ``pending`` (submitted) -> ``approved`` or
``rejected`` by the platform; an edit of an approved or rejected one submits it again
(``pending``); a delete withdraws it (``withdrawn``; the row stays for the audit and
the fee journal). Without approval (``[portal] promotions_need_approval`` off) a
submitted promotion is approved at once. Published = approved and inside its window.

Publishing charges the placement fee once per promotion (ledger.loyalty.placement_fees),
under a row lock on the promotion, so two approvals at once post one fee.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.commands import Status
from ledger.engine import Ledger
from ledger.loyalty import placement_fees
from portal.i18n import N_
from portal.refusals import Refusal

TITLE_CHARS_MAX = 120
BODY_CHARS_MAX = 2000
NOTE_CHARS_MAX = 500
LIST_LIMIT_MAX = 200
STATUSES = ("draft", "pending", "approved", "rejected", "withdrawn")

_COLUMNS = ("p.id, p.merchant_id, m.name AS merchant_name, p.title, p.body, p.image_id, p.program, p.valid_from, "
            "p.valid_until, p.status, p.review_note, p.reviewed_by, p.reviewed_at, p.fee_minor, p.fee_journal_id, "
            "p.created_by, p.created_at, p.updated_at, "
            "(p.status = 'approved' AND now() >= p.valid_from AND now() < p.valid_until) AS published")
_FROM = " FROM portal.promotions p JOIN loyalty.merchants m ON m.merchant_id = p.merchant_id "


class PromotionError(Refusal):
    """A promotion that cannot be saved or changed as asked; ``str()`` says why, for people."""


@dataclass(frozen=True)
class Draft:
    """What a merchant enters for a promotion."""

    title: str
    body: str
    valid_from: dt.datetime
    valid_until: dt.datetime
    program: str | None = None  # None: every member
    image_id: int | None = None

    def check(self) -> None:
        """Raise PromotionError when a field is out of bounds."""
        if not 1 <= len(self.title.strip()) <= TITLE_CHARS_MAX:
            raise PromotionError(N_("A title has 1 to %(n)s characters."), n=TITLE_CHARS_MAX)
        if len(self.body) > BODY_CHARS_MAX:
            raise PromotionError(N_("A text has at most %(n)s characters."), n=BODY_CHARS_MAX)
        if self.valid_until <= self.valid_from:
            raise PromotionError(N_("The end of the validity must come after its start."))


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return dict(row)


async def get(conn: asyncpg.Connection | asyncpg.Pool, promotion_id: int,
              merchant_id: str | None = None) -> dict[str, Any] | None:
    """One promotion (of ``merchant_id`` when given: another's is None, as a missing one)."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS}{_FROM} WHERE p.id = $1 AND ($2::text IS NULL OR p.merchant_id = $2)",
                              promotion_id, merchant_id)
    return None if row is None else _view(row)


async def _check_program(conn: asyncpg.Connection, merchant_id: str, program: str | None) -> None:
    # A merchant targets its own program's members, or every member.
    if program is None:
        return
    own = await conn.fetchval("SELECT program FROM loyalty.merchants WHERE merchant_id = $1", merchant_id)
    if program != own:
        raise PromotionError(N_("A promotion is shown to the merchant's own program or to every member."))


async def create(conn: asyncpg.Connection, merchant_id: str, draft: Draft, created_by: str,
                 submit: bool = True) -> dict[str, Any]:
    """Save a new promotion of ``merchant_id``: a draft, or submitted (``pending``)."""
    draft.check()
    await _check_program(conn, merchant_id, draft.program)
    pid = await conn.fetchval(
        "INSERT INTO portal.promotions(merchant_id, title, body, image_id, program, valid_from, valid_until, "
        "status, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        merchant_id, draft.title.strip(), draft.body, draft.image_id, draft.program, draft.valid_from,
        draft.valid_until, "pending" if submit else "draft", created_by[:100])
    found = await get(conn, int(pid))
    assert found is not None
    return found


async def update(conn: asyncpg.Connection, promotion_id: int, merchant_id: str, draft: Draft,
                 submit: bool = True) -> dict[str, Any] | None:
    """Change a promotion of ``merchant_id`` (None when it has none such, or it is withdrawn).

    An approved or rejected promotion goes back to ``pending`` (submitted) or ``draft``."""
    draft.check()
    await _check_program(conn, merchant_id, draft.program)
    row = await conn.fetchrow(
        "UPDATE portal.promotions SET title = $3, body = $4, image_id = $5, program = $6, valid_from = $7, "
        "valid_until = $8, status = $9, review_note = '', updated_at = now() "
        "WHERE id = $1 AND merchant_id = $2 AND status <> 'withdrawn' RETURNING id",
        promotion_id, merchant_id, draft.title.strip(), draft.body, draft.image_id, draft.program,
        draft.valid_from, draft.valid_until, "pending" if submit else "draft")
    return None if row is None else await get(conn, promotion_id)


async def withdraw(conn: asyncpg.Connection | asyncpg.Pool, promotion_id: int, merchant_id: str | None) -> bool:
    """Delete (withdraw) a promotion of ``merchant_id`` (any, for None): unpublished at once, row kept."""
    result = await conn.execute(
        "UPDATE portal.promotions SET status = 'withdrawn', updated_at = now() "
        "WHERE id = $1 AND ($2::text IS NULL OR merchant_id = $2) AND status <> 'withdrawn'",
        promotion_id, merchant_id)
    return result != "UPDATE 0"


async def search(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str | None = None,
                 status: str | None = None, after_id: int | None = None, limit: int = 50) -> dict[str, Any]:
    """Promotions (of ``merchant_id``, with ``status``), newest first, keyset pages (``after_id``)."""
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    rows = await conn.fetch(
        f"SELECT {_COLUMNS}{_FROM} WHERE ($1::text IS NULL OR p.merchant_id = $1) "
        "AND ($2::text IS NULL OR p.status = $2) AND ($3::bigint IS NULL OR p.id < $3) "
        "ORDER BY p.id DESC LIMIT $4", merchant_id, status, after_id, limit + 1)
    items = [_view(r) for r in rows[:limit]]
    return {"promotions": items, "next_after_id": items[-1]["id"] if len(rows) > limit else None}


async def list_published(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str | None = None,
                         program: str | None = None, after_id: int | None = None,
                         limit: int = 50) -> dict[str, Any]:
    """Published promotions (approved, inside their window) of active merchants, newest first.

    ``program``: those that target it or every member. Keyset pages: ``next_after_id``
    is the ``after_id`` of the next page (None: no more)."""
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    rows = await conn.fetch(
        f"SELECT {_COLUMNS}{_FROM} WHERE p.status = 'approved' AND now() >= p.valid_from "
        "AND now() < p.valid_until AND m.status = 'active' "
        "AND ($1::text IS NULL OR p.merchant_id = $1) AND ($2::text IS NULL OR p.program IS NULL OR p.program = $2) "
        "AND ($3::bigint IS NULL OR p.id < $3) ORDER BY p.id DESC LIMIT $4",
        merchant_id, program, after_id, limit + 1)
    items = [_view(r) for r in rows[:limit]]
    return {"promotions": items, "next_after_id": items[-1]["id"] if len(rows) > limit else None}


async def promotions_for_member(conn: asyncpg.Connection | asyncpg.Pool, member_id: int,
                                limit: int = 20) -> list[dict[str, Any]]:
    """The published promotions a member sees: those for every member, and those of a program
    one of the member's cards belongs to (holds a points account in), newest first."""
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    rows = await conn.fetch(
        f"SELECT {_COLUMNS}{_FROM} WHERE p.status = 'approved' AND now() >= p.valid_from "
        "AND now() < p.valid_until AND m.status = 'active' AND (p.program IS NULL OR p.program IN ("
        "  SELECT pr.code FROM loyalty.cards c JOIN ledger.accounts a ON a.owner_kind = 'card' "
        "  AND a.owner_id = c.id::text AND a.purpose = 'points' JOIN loyalty.programs pr "
        "  ON pr.points_asset = a.asset WHERE c.member_id = $1)) ORDER BY p.id DESC LIMIT $2",
        member_id, limit)
    return [_view(r) for r in rows]


@dataclass(frozen=True)
class ReviewOutcome:
    """What a review did: the promotion after it, and whether a fee was posted now."""

    promotion: dict[str, Any] | None
    fee_posted: bool = False
    problem: str | None = None


async def publish(pool: asyncpg.Pool, ledger: Ledger | None, promotion_id: int, fee_minor: int, reviewer: str,
                  note: str = "", approve: bool = True) -> ReviewOutcome:
    """Approve (publishing it, and charging ``fee_minor`` once) or reject a pending promotion.

    The promotion's row is locked for the decision: a second approval waits, then finds it
    approved and charges nothing. The fee is posted before the status changes: if it
    cannot be posted the promotion stays pending (``problem`` says why); if the status
    change is lost after the fee posted, the next approval replays the fee's key.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT id, merchant_id, status, fee_journal_id FROM portal.promotions "
                                  "WHERE id = $1 FOR UPDATE", promotion_id)
        if row is None:
            return ReviewOutcome(None, problem="not found")
        if row["status"] != "pending":
            return ReviewOutcome(await get(conn, promotion_id), problem="not pending")
        if not approve:
            await conn.execute(
                "UPDATE portal.promotions SET status = 'rejected', review_note = $2, reviewed_by = $3, "
                "reviewed_at = now(), updated_at = now() WHERE id = $1", promotion_id, note[:NOTE_CHARS_MAX],
                reviewer[:100])
            return ReviewOutcome(await get(conn, promotion_id))
        journal_id, charged, posted_now = row["fee_journal_id"], None, False
        if journal_id is None and fee_minor > 0:
            if ledger is None:
                return ReviewOutcome(await get(conn, promotion_id),
                                     problem="the placement fee cannot be charged: the portal runs without the ledger")
            result = await placement_fees.charge(ledger, pool, row["merchant_id"], promotion_id, fee_minor,
                                                 operator_ref=reviewer)
            if not result.status.ok:
                return ReviewOutcome(await get(conn, promotion_id), problem=f"placement fee: {result.detail}")
            journal_id, charged, posted_now = result.journal_id, fee_minor, result.status is Status.POSTED
        await conn.execute(
            "UPDATE portal.promotions SET status = 'approved', review_note = $2, reviewed_by = $3, "
            "reviewed_at = now(), updated_at = now(), fee_journal_id = coalesce(fee_journal_id, $4), "
            "fee_minor = coalesce(fee_minor, $5) WHERE id = $1",
            promotion_id, note[:NOTE_CHARS_MAX], reviewer[:100], journal_id, charged)
        return ReviewOutcome(await get(conn, promotion_id), fee_posted=posted_now)
