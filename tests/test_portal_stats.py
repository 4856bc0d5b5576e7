"""The statistics page: charts with their tables, CSV, merchant scoping, bounded ranges, indexes."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from ledger_support import ledger_settings
from platform_support import take_some
from portal_support import PortalEnv, logged_in, portal_env_fixture  # noqa: F401

from ledger import eod, stats
from ledger.loyalty import card_numbers


async def _open_day(env: PortalEnv) -> dt.date:
    return await env.pool.fetchval("SELECT open_date FROM ledger.business_day")  # type: ignore[no-any-return]


async def test_the_page_shows_svg_charts_each_with_its_table(portal_env: PortalEnv) -> None:
    await take_some(portal_env.pool)
    day = await _open_day(portal_env)
    client = await logged_in(portal_env, "operator")
    page = await client.get(f"/stats?date_from={day}&date_to={day}&period=day")
    assert page.status_code == 200
    text = page.text
    for name in ("periods", "merchants", "members"):
        assert f'<svg xmlns="http://www.w3.org/2000/svg" id="chart-{name}"' in text
        assert f'aria-describedby="table-{name}"' in text and f'<table id="table-{name}">' in text
    assert "<script" not in text and "<rect" in text
    assert "<td>M0001</td>" in text and "<td>M0002</td>" in text


async def test_figures_by_period_merchant_and_members(portal_env: PortalEnv) -> None:
    await take_some(portal_env.pool)
    day = await _open_day(portal_env)
    rows = await stats.period_stats(portal_env.pool, day, day, "month")
    earn = next(r for r in rows if r["txn_type"] == "earn")
    assert earn["period_start"] == day.replace(day=1)
    assert (earn["transactions"], earn["approved"], earn["money_amount_minor"]) == (3, 3, 18_300)
    redeem = next(r for r in rows if r["txn_type"] == "redeem")
    assert (redeem["transactions"], redeem["approved"], redeem["points_amount"]) == (2, 1, 100)
    merchants = {r["merchant_id"]: r for r in await stats.merchant_stats(portal_env.pool, day, day)}
    assert merchants["M0001"]["approved"] == 3 and merchants["M0002"]["approved"] == 2
    only = await stats.merchant_stats(portal_env.pool, day, day, "M0002")
    assert [r["merchant_id"] for r in only] == ["M0002"]
    members = await stats.member_stats(portal_env.pool, day - dt.timedelta(days=3), day, "week")
    assert sum(p["active_members"] for p in members["periods"]) >= 2
    assert {r["program"] for r in members["by_program"]} == {"ALLY"}


async def test_a_cleared_day_is_rolled_up_once_with_the_same_figures(portal_env: PortalEnv, tmp_path: Path) -> None:
    pool = portal_env.pool
    await take_some(pool)
    day = await _open_day(portal_env)
    live = (await stats.period_stats(pool, day, day, "day"), await stats.merchant_stats(pool, day, day),
            await stats.member_stats(pool, day, day, "week"))
    assert await pool.fetchval("SELECT count(*) FROM eod.stats_days") == 0  # an open day is read live
    assert (await eod.run(pool, day, tmp_path, wait_lock_s=5, ledger_settings=ledger_settings())).ok
    assert await pool.fetchval("SELECT array_agg(business_date) FROM eod.stats_days") == [day]  # by end of day
    rolled = (await stats.period_stats(pool, day, day, "day"), await stats.merchant_stats(pool, day, day),
              await stats.member_stats(pool, day, day, "week"))
    assert rolled == live
    # The next day is read live beside the rolled-up one; a second read rolls nothing up again.
    await take_some(pool)
    both = await stats.merchant_stats(pool, day, day + dt.timedelta(days=1))
    assert {r["merchant_id"]: r["approved"] for r in both} == {"M0001": 6, "M0002": 4}
    async with pool.acquire() as conn:
        assert not await stats.roll_up_day(conn, day)
        # A cleared day not rolled up (cleared before the roll-up existed) is rolled up by the first read.
        await conn.execute("TRUNCATE eod.stats_daily, eod.stats_active_cards, eod.stats_days")
    assert await stats.merchant_stats(pool, day, day + dt.timedelta(days=1)) == both
    assert await pool.fetchval("SELECT array_agg(business_date) FROM eod.stats_days") == [day]
    members = await stats.member_stats(pool, day, day + dt.timedelta(days=1), "month")
    assert [p["active_members"] for p in members["periods"] if p["active_members"]] in ([2], [2, 2])


async def test_a_merchant_sees_its_own_figures_only(portal_env: PortalEnv) -> None:
    await take_some(portal_env.pool)
    day = await _open_day(portal_env)
    for login in ("m0001-admin", "m0001-operator"):
        client = await logged_in(portal_env, login)
        text = (await client.get(f"/stats?date_from={day}&date_to={day}&merchant=M0002")).text
        assert "<td>M0001</td>" in text and "<td>M0002</td>" not in text
        body = (await client.get(f"/stats.csv?date_from={day}&date_to={day}&merchant=M0002&table=merchants")).text
        assert [r["merchant_id"] for r in csv.DictReader(io.StringIO(body))] == ["M0001"]


async def test_csv_of_each_table(portal_env: PortalEnv) -> None:
    await take_some(portal_env.pool)
    day = await _open_day(portal_env)
    client = await logged_in(portal_env, "admin")
    for table, first in (("periods", "period_start"), ("merchants", "merchant_id"), ("members", "period_start")):
        response = await client.get(f"/stats.csv?date_from={day}&date_to={day}&table={table}")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        assert response.text.split(",")[0] == first
    assert (await client.get("/stats.csv?table=nope")).status_code == 400


async def test_bad_or_unbounded_ranges_get_a_clear_400(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    for query in ("date_from=2020-01-01&date_to=2024-01-01", "date_from=2024-02-01&date_to=2024-01-01",
                  "date_from=yesterday", "period=year"):
        response = await client.get(f"/stats?{query}")
        assert response.status_code == 400, query
        assert 'role="alert"' in response.text
        assert (await client.get(f"/stats.csv?{query}")).status_code == 400


async def test_the_queries_use_the_indexes(portal_env: PortalEnv) -> None:
    """On a few thousand rows the planner reads a bounded range by index, not the whole table."""
    async with portal_env.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO loyalty.transactions(business_date, txn_type, reason, merchant_id, program, amount, "
            "currency, points_delta, money_delta_minor, fee_minor, idempotency_key, card_id) "
            "SELECT current_date - (i % 400), 'inquiry', 'approved', 'M000' || (1 + i % 3), 'ALLY', 0, '156', 0, 0, "
            "0, 'stat-' || i, 1 FROM generate_series(1, 20000) i")
        v = await card_numbers.vault(conn)
        made = [v.columns("9" + str(i).zfill(15)) for i in range(1, 5001)]
        await conn.execute(
            "INSERT INTO loyalty.cards(pan_hash, pan_sealed, pan_masked, created_at, member_id) "
            "SELECT h, b, m, now() - make_interval(days => i::int % 400), (SELECT min(id) FROM loyalty.members) "
            "FROM unnest($1::bytea[], $2::bytea[], $3::text[]) WITH ORDINALITY AS s(h, b, m, i)",
            [c[0] for c in made], [c[1] for c in made], [c[2] for c in made])  # every card has its member (0016)
        async with conn.transaction():  # a roll-up of 400 days, as cleared days leave behind
            await conn.execute("INSERT INTO eod.stats_days SELECT current_date - i FROM generate_series(0, 399) i")
            await conn.execute(
                "INSERT INTO eod.stats_daily SELECT current_date - (i % 400), 'M' || i, 'earn', 1, 1, 1, 0, 0, 0, 0 "
                "FROM generate_series(1, 20000) i")
            await conn.execute("INSERT INTO eod.stats_active_cards SELECT current_date - (i % 400), 'ALLY', i "
                               "FROM generate_series(1, 20000) i")
        await conn.execute("ANALYZE eod.stats_daily")
        await conn.execute("ANALYZE eod.stats_active_cards")
        await conn.execute("ANALYZE loyalty.transactions")
        await conn.execute("ANALYZE loyalty.cards")
        day = dt.date.today()
        for sql, args in (
            ("SELECT count(*) FROM loyalty.transactions t WHERE t.business_date = ANY($1::date[]) "
             "AND t.txn_type <> 'marker'", ([day, day - dt.timedelta(days=1)],)),
            ("SELECT count(*) FROM eod.stats_daily t WHERE t.business_date = ANY($1::date[])", ([day],)),
            ("SELECT count(DISTINCT card_id) FROM eod.stats_active_cards a WHERE a.business_date = ANY($1::date[])",
             ([day],)),
            ("SELECT count(*) FROM loyalty.transactions t WHERE t.merchant_id = $1 AND t.business_date BETWEEN $2 "
             "AND $3 AND t.txn_type <> 'marker'", ("M0001", day - dt.timedelta(days=30), day)),
            ("SELECT count(*) FROM loyalty.cards c WHERE c.created_at >= $1::date::timestamp AT TIME ZONE 'UTC' "
             "AND c.created_at < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'", (day, day)),
        ):
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
            assert "Index" in plan, plan
        await conn.execute("DELETE FROM loyalty.transactions WHERE idempotency_key LIKE 'stat-%'")
        await conn.execute("DELETE FROM loyalty.cards WHERE pan_masked LIKE '9%'")
        await conn.execute("TRUNCATE eod.stats_daily, eod.stats_active_cards, eod.stats_days")
