"""Programs, currencies and the operator's accounts in them (provisioning and read side).

Every function takes a connection and does its writes in one transaction, so a
failure leaves nothing half-created. Problems an operator can fix raise
:class:`ProvisioningError` with a one-line message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.accounts import ensure_asset, open_account
from ledger.errors import SwitchdError

# ISO 4217 numeric -> (alpha code = ledger asset, minor-unit scale). Small on purpose:
# a currency enters the platform by being listed here.
KNOWN_CURRENCIES: dict[str, tuple[str, int]] = {
    "156": ("CNY", 2), "344": ("HKD", 2), "446": ("MOP", 2),
    "840": ("USD", 2), "978": ("EUR", 2), "392": ("JPY", 0),
}
DEFAULT_CURRENCY = "156"
PROGRAM_CODE = re.compile(r"^[A-Z0-9_]{2,16}$")
PRIZE_CODE = re.compile(r"^[A-Z0-9_]{1,16}$")
PRIZES_MAX = 32
# The columns' ranges (bigint, integer): a larger number is refused with its name, not by the database.
BIGINT_MAX = 2**63 - 1
INTEGER_MAX = 2**31 - 1


class ProvisioningError(SwitchdError):
    """Bad provisioning input or state; ``str()`` is one line for the operator."""


@dataclass(frozen=True)
class Prize:
    """One line of a lottery prize table: ``points`` credited (0 = a non-points prize), ``weight`` of 1..n."""

    code: str
    points: int
    weight: int


def parse_prize(text: str) -> Prize:
    """Parse ``CODE:POINTS:WEIGHT``.

    >>> parse_prize("GOLD:500:1")
    Prize(code='GOLD', points=500, weight=1)
    """
    parts = text.split(":")
    if (len(parts) != 3 or not PRIZE_CODE.match(parts[0])
            or not all(p.isascii() and p.isdigit() for p in parts[1:])):
        raise ProvisioningError(f"prize must be CODE:POINTS:WEIGHT (CODE A-Z0-9_, integers), got {text!r}")
    prize = Prize(parts[0], int(parts[1]), int(parts[2]))
    if prize.weight <= 0 or prize.weight > INTEGER_MAX:
        raise ProvisioningError(f"prize {prize.code}: weight must be 1..{INTEGER_MAX}")
    if prize.points > BIGINT_MAX:
        raise ProvisioningError(f"prize {prize.code}: points must be at most {BIGINT_MAX}")
    return prize


async def ensure_currency(conn: asyncpg.Connection, numeric_code: str) -> str:
    """Make a platform currency ready (asset + operator accounts); returns its asset code."""
    if numeric_code not in KNOWN_CURRENCIES:
        raise ProvisioningError(
            f"unknown currency {numeric_code!r}; known: {', '.join(sorted(KNOWN_CURRENCIES))}")
    asset, scale = KNOWN_CURRENCIES[numeric_code]
    found = await conn.fetchval("SELECT asset FROM loyalty.currencies WHERE numeric_code=$1", numeric_code)
    if found is not None:
        return str(found)
    await ensure_asset(conn, asset, "money", scale, f"ISO 4217 {numeric_code}")
    fee = await open_account(conn, "operator", asset, asset, "credit", "none", "fee_income")
    flt = await open_account(conn, "operator", asset, asset, "debit", "none", "sv_float")
    memo_a = await open_account(conn, "operator", asset, asset, "credit", "none", "memo_a")
    memo_b = await open_account(conn, "operator", asset, asset, "credit", "none", "memo_b")
    await conn.execute(
        "INSERT INTO loyalty.currencies(numeric_code, asset, txn_max_minor, fee_income_account_id, "
        "sv_float_account_id, memo_a_account_id, memo_b_account_id) VALUES ($1,$2,$3,$4,$5,$6,$7) "
        "ON CONFLICT (numeric_code) DO NOTHING",
        numeric_code, asset, 100_000 * 10**scale, fee, flt, memo_a, memo_b,
    )
    return asset


async def add_program(conn: asyncpg.Connection, code: str, name: str, kind: str, issue_price_minor: int,
                      redeem_value_minor: int, currency: str = DEFAULT_CURRENCY,
                      pin_required_for_redeem: bool = False, txn_max_points: int = 10_000_000,
                      pin_required_for_sv: bool = True) -> dict[str, Any]:
    """Create a program with its points asset ``PTS:<CODE>`` and operator accounts.

    ``pin_required_for_redeem`` / ``pin_required_for_sv``: a card with a PIN must send it for a
    redemption (or lottery draw) / a stored-value purchase at the program's merchants.
    """
    if not PROGRAM_CODE.match(code):
        raise ProvisioningError(f"program code must be 2..16 of A-Z 0-9 _, got {code!r}")
    if kind not in ("alliance", "hosted"):
        raise ProvisioningError(f"program kind must be alliance or hosted, got {kind!r}")
    if not name.strip() or len(name) > 80:
        raise ProvisioningError("program name must be 1..80 characters")
    if issue_price_minor < 0 or redeem_value_minor < 0:
        raise ProvisioningError("issue price and redemption value must be >= 0 (minor units per point)")
    if txn_max_points <= 0:
        raise ProvisioningError("per-transaction maximum must be >= 1 point")
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM loyalty.programs WHERE code=$1", code):
            raise ProvisioningError(f"program {code} already exists")
        await ensure_currency(conn, currency)
        asset = f"PTS:{code}"
        await ensure_asset(conn, asset, "points", 0, f"points of program {code}")
        outstanding = await open_account(conn, "operator", code, asset, "debit", "none", "points_outstanding")
        pool = await open_account(conn, "operator", code, asset, "credit", "none", "prize_pool")
        await conn.execute(
            "INSERT INTO loyalty.programs(code, name, kind, points_asset, currency, issue_price_minor, "
            "redeem_value_minor, pin_required_for_redeem, txn_max_points, points_outstanding_account_id, "
            "prize_pool_account_id, pin_required_for_sv) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
            code, name, kind, asset, currency, issue_price_minor, redeem_value_minor,
            pin_required_for_redeem, txn_max_points, outstanding, pool, pin_required_for_sv,
        )
    found = await show_program(conn, code)
    assert found is not None
    return found


async def set_lottery(conn: asyncpg.Connection, code: str, price_points: int, prizes: list[Prize]) -> dict[str, Any]:
    """Set a program's draw price and replace its prize table."""
    if price_points <= 0:
        raise ProvisioningError("draw price must be >= 1 point")
    if not prizes:
        raise ProvisioningError("a lottery needs at least one --prize CODE:POINTS:WEIGHT")
    if len(prizes) > PRIZES_MAX:
        raise ProvisioningError(f"at most {PRIZES_MAX} prizes")
    if len({p.code for p in prizes}) != len(prizes):
        raise ProvisioningError("prize codes must be unique")
    async with conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM loyalty.programs WHERE code=$1 FOR UPDATE", code):
            raise ProvisioningError(f"no program {code}")
        await conn.execute("DELETE FROM loyalty.lottery_prizes WHERE program=$1", code)
        await conn.executemany(
            "INSERT INTO loyalty.lottery_prizes(program, code, points, weight) VALUES ($1,$2,$3,$4)",
            [(code, p.code, p.points, p.weight) for p in prizes],
        )
        await conn.execute("UPDATE loyalty.programs SET lottery_price_points=$2 WHERE code=$1", code, price_points)
    found = await show_program(conn, code)
    assert found is not None
    return found


_LIST_SQL = """
SELECT p.code, p.name, p.kind, p.points_asset, p.currency, c.asset AS currency_asset,
       p.issue_price_minor, p.redeem_value_minor, p.pin_required_for_redeem, p.txn_max_points,
       p.lottery_price_points, p.status, p.pin_required_for_sv, p.points_expiry_months, p.residual_policy, p.residual_grace_days,
       (SELECT count(*) FROM loyalty.merchants m WHERE m.program = p.code) AS merchants,
       -(o.posted) AS points_outstanding_cleared, pp.posted AS prize_pool_points
  FROM loyalty.programs p
  JOIN loyalty.currencies c ON c.numeric_code = p.currency
  JOIN ledger.accounts o ON o.id = p.points_outstanding_account_id
  JOIN ledger.accounts pp ON pp.id = p.prize_pool_account_id
"""


async def list_programs(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    """Every program, by code."""
    return [dict(r) for r in await conn.fetch(_LIST_SQL + " ORDER BY p.code")]


async def show_program(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> dict[str, Any] | None:
    """One program with its lottery prize table and member points outstanding."""
    row = await conn.fetchrow(_LIST_SQL + " WHERE p.code = $1", code)
    if row is None:
        return None
    out = dict(row)
    out["lottery_prizes"] = [dict(r) for r in await conn.fetch(
        "SELECT code, points, weight FROM loyalty.lottery_prizes WHERE program=$1 ORDER BY code", code)]
    out["member_points"] = int(await conn.fetchval(
        "SELECT coalesce(sum(posted), 0) FROM ledger.accounts WHERE owner_kind='card' AND asset=$1",
        row["points_asset"]))
    return out
