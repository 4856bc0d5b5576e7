"""Merchants: who earns and redeems in which program, at what rate and fee."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import asyncpg

from ledger.accounts import open_account
from ledger.loyalty.programs import ProvisioningError

MERCHANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,15}$")
FEE_TYPES = ("default", "earn", "redeem", "sv_purchase", "topup", "load", "lottery")


def parse_fees(items: list[str]) -> dict[str, int]:
    """Fee schedule from ``N`` (the default for every type) and ``TYPE=N`` items, in basis points.

    >>> parse_fees(["50", "redeem=30"])
    {'default': 50, 'redeem': 30}
    """
    out: dict[str, int] = {}
    for item in items:
        name, _, value = item.rpartition("=")
        name = name or "default"
        if name not in FEE_TYPES:
            raise ProvisioningError(f"fee type must be one of {', '.join(FEE_TYPES)}, got {name!r}")
        if not (value.isascii() and value.isdigit()) or not 0 <= int(value) <= 10_000:
            raise ProvisioningError(f"fee must be 0..10000 basis points, got {item!r}")
        out[name] = int(value)
    return out


async def add_merchant(conn: asyncpg.Connection, merchant_id: str, name: str, program: str,
                       earn_num: int, earn_den: int, fee_bps: dict[str, int]) -> dict[str, Any]:
    """Create a merchant in a program, with its two clearing accounts (points, money)."""
    if not MERCHANT_ID.match(merchant_id):
        raise ProvisioningError(f"merchant id must be 1..15 of A-Z a-z 0-9 _ -, got {merchant_id!r}")
    if not name.strip() or len(name) > 80:
        raise ProvisioningError("merchant name must be 1..80 characters")
    if earn_num < 0 or earn_den <= 0:
        raise ProvisioningError("earn rate must be >= 0")
    async with conn.transaction():
        prog = await conn.fetchrow(
            "SELECT p.code, p.kind, p.points_asset, c.asset AS money_asset FROM loyalty.programs p "
            "JOIN loyalty.currencies c ON c.numeric_code = p.currency WHERE p.code=$1 FOR UPDATE OF p", program)
        if prog is None:
            raise ProvisioningError(f"no program {program}")
        if await conn.fetchval("SELECT 1 FROM loyalty.merchants WHERE merchant_id=$1", merchant_id):
            raise ProvisioningError(f"merchant {merchant_id} already exists")
        if prog["kind"] == "hosted" and await conn.fetchval(
                "SELECT merchant_id FROM loyalty.merchants WHERE program=$1", program):
            raise ProvisioningError(f"program {program} is hosted and already has its merchant")
        pts = await open_account(conn, "merchant", merchant_id, prog["points_asset"], "debit", "none", "clearing")
        money = await open_account(conn, "merchant", merchant_id, prog["money_asset"], "debit", "none", "clearing")
        await conn.execute(
            "INSERT INTO loyalty.merchants(merchant_id, name, program, earn_num, earn_den, fee_bps, "
            "clearing_points_account_id, clearing_money_account_id) VALUES ($1,$2,$3,$4,$5,$6::jsonb,$7,$8)",
            merchant_id, name, program, earn_num, earn_den, json.dumps(fee_bps), pts, money,
        )
    found = await show_merchant(conn, merchant_id)
    assert found is not None
    return found


_SQL = """
SELECT m.merchant_id, m.name, m.program, m.earn_num, m.earn_den, m.fee_bps, m.status, m.created_at,
       m.description, m.contact_name, m.contact_email, m.contact_phone, p.currency, p.points_asset, c.asset AS money_asset,
       cp.posted AS clearing_points_posted, cm.posted AS clearing_money_posted_minor
  FROM loyalty.merchants m
  JOIN loyalty.programs p ON p.code = m.program
  JOIN loyalty.currencies c ON c.numeric_code = p.currency
  JOIN ledger.accounts cp ON cp.id = m.clearing_points_account_id
  JOIN ledger.accounts cm ON cm.id = m.clearing_money_account_id
"""


def _view(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    fees = out["fee_bps"]
    out["fee_bps"] = json.loads(fees) if isinstance(fees, str) else fees
    out["earn_rate"] = f"{row['earn_num']}/{row['earn_den']}" if row["earn_den"] != 1 else str(row["earn_num"])
    # Natural balance of a debit-normal clearing account: positive = merchant owes the operator.
    out["clearing_points"] = -out.pop("clearing_points_posted")
    out["clearing_money_minor"] = -out.pop("clearing_money_posted_minor")
    out["created_at"] = row["created_at"].isoformat()
    return out


async def list_merchants(conn: asyncpg.Connection | asyncpg.Pool, program: str | None = None) -> list[dict[str, Any]]:
    """Every merchant (optionally of one program), by id."""
    if program is None:
        rows = await conn.fetch(_SQL + " ORDER BY m.merchant_id")
    else:
        rows = await conn.fetch(_SQL + " WHERE m.program=$1 ORDER BY m.merchant_id", program)
    return [_view(r) for r in rows]


async def show_merchant(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str) -> dict[str, Any] | None:
    """One merchant with its clearing balances."""
    row = await conn.fetchrow(_SQL + " WHERE m.merchant_id=$1", merchant_id)
    return None if row is None else _view(row)


async def set_merchant_status(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str, status: str) -> bool:
    """Set ``active`` or ``disabled``; False when there is no such merchant."""
    if status not in ("active", "disabled"):
        raise ProvisioningError(f"merchant status must be active or disabled, got {status!r}")
    done = await conn.execute("UPDATE loyalty.merchants SET status=$2 WHERE merchant_id=$1", merchant_id, status)
    return bool(done.endswith(" 1"))


SEARCH_LIMIT_MAX = 500
PROFILE_LIMITS = {"description": 500, "contact_name": 80, "contact_email": 120, "contact_phone": 32}


async def search_merchants(conn: asyncpg.Connection | asyncpg.Pool, text: str | None = None,
                           program: str | None = None, status: str | None = None,
                           created_from: dt.date | None = None, created_to: dt.date | None = None,
                           after_id: str | None = None, limit: int = 50) -> dict[str, Any]:
    """One page of merchants matching every given criterion, by id; ``text`` matches id or name.

    Keyset paging: ``after_id`` is the last id of the previous page; ``next_after_id`` is
    None on the last page.
    """
    limit = max(1, min(int(limit), SEARCH_LIMIT_MAX))
    parts: list[str] = []
    args: list[Any] = []
    for clause, value in (
        ("(m.merchant_id ILIKE ${n} OR m.name ILIKE ${n})",
         None if not text else "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"),
        ("m.program = ${n}", program), ("m.status = ${n}", status),
        ("m.created_at >= ${n}::date", created_from), ("m.created_at < ${n}::date + 1", created_to),
        ("m.merchant_id > ${n}", after_id),
    ):
        if value is not None:
            args.append(value)
            parts.append(clause.format(n=len(args)))
    where = " AND ".join(parts) or "true"
    rows = await conn.fetch(_SQL + f" WHERE {where} ORDER BY m.merchant_id LIMIT {limit + 1}", *args)
    page = [_view(r) for r in rows[:limit]]
    return {"merchants": page, "next_after_id": page[-1]["merchant_id"] if len(rows) > limit else None}


async def update_merchant(conn: asyncpg.Connection, merchant_id: str, name: str, earn_num: int, earn_den: int,
                          fee_bps: dict[str, int]) -> dict[str, Any] | None:
    """Change a merchant's name, earn rate and fee schedule; None when there is no such merchant.

    Applies to transactions from now on; what was posted keeps the terms it was posted with.
    """
    if not name.strip() or len(name) > 80:
        raise ProvisioningError("merchant name must be 1..80 characters")
    if earn_num < 0 or earn_den <= 0:
        raise ProvisioningError("earn rate must be >= 0")
    for fee_type, bps in fee_bps.items():
        if fee_type not in FEE_TYPES or not 0 <= bps <= 10_000:
            raise ProvisioningError(f"fee {fee_type}={bps}: type one of {', '.join(FEE_TYPES)}, 0..10000 bps")
    done = await conn.execute(
        "UPDATE loyalty.merchants SET name=$2, earn_num=$3, earn_den=$4, fee_bps=$5::jsonb WHERE merchant_id=$1",
        merchant_id, name, earn_num, earn_den, json.dumps(fee_bps))
    return await show_merchant(conn, merchant_id) if done.endswith(" 1") else None


async def set_merchant_profile(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str,
                               profile: dict[str, str]) -> bool:
    """Set a merchant's description and contacts (keys of PROFILE_LIMITS); False when no such merchant."""
    for key, value in profile.items():
        if key not in PROFILE_LIMITS:
            raise ProvisioningError(f"unknown profile field {key!r}")
        if len(value) > PROFILE_LIMITS[key]:
            raise ProvisioningError(f"{key} must be at most {PROFILE_LIMITS[key]} characters")
    values = [profile.get(k) for k in PROFILE_LIMITS]
    done = await conn.execute(
        "UPDATE loyalty.merchants SET description=coalesce($2, description), contact_name=coalesce($3, contact_name), "
        "contact_email=coalesce($4, contact_email), contact_phone=coalesce($5, contact_phone) WHERE merchant_id=$1",
        merchant_id, *values)
    return bool(done.endswith(" 1"))
