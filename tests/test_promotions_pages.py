"""Promotion pages: a merchant's admin writes them, its operator reads them, the platform
approves (charging the placement fee once) or rejects; another merchant's answer 404; the
public merchant page shows what is published; without approval a submission publishes."""

from __future__ import annotations

import datetime as dt
import re

import asyncpg
from community_support import community_env, member_in
from portal_support import csrf_of, logged_in, post_form

from ledger.loyalty import placement_fees
from portal import promotions

FEE = 2_000
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def _days(start: int, end: int) -> dict[str, str]:
    today = dt.datetime.now(dt.UTC).date()
    return {"valid_from": (today + dt.timedelta(days=start)).isoformat(),
            "valid_until": (today + dt.timedelta(days=end)).isoformat()}


async def _create(client, title: str = "Spring sale", **extra: str) -> int:  # type: ignore[no-untyped-def]
    page = await client.get("/promotions/new")
    assert page.status_code == 200
    fields = {"csrf_token": csrf_of(page.text), "title": title, "body": "Half price.", "audience": "all",
              "action": "submit", **_days(0, 10), **extra}
    response = await client.post("/promotions/new", data=fields, files={"image": ("sale.png", PNG, "image/png")})
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/promotions/(\d+)(\?.*)?", response.headers["location"])
    assert match
    return int(match.group(1))


async def test_a_promotion_from_form_to_publication_with_its_fee(pool: asyncpg.Pool) -> None:
    async with community_env(pool, promotion_fee_minor=FEE) as env:
        admin = await logged_in(env, "m0001-admin")
        pid = await _create(admin)
        view = (await admin.get(f"/promotions/{pid}")).text
        assert "Spring sale" in view and "Waiting for approval" in view and "/media/" in view
        # Its operator reads it, writes nothing; another merchant sees nothing.
        operator = await logged_in(env, "m0001-operator")
        assert (await operator.get(f"/promotions/{pid}")).status_code == 200
        assert (await operator.get("/promotions/new")).status_code == 403
        other = await logged_in(env, "m0002-admin")
        assert (await other.get(f"/promotions/{pid}")).status_code == 404
        assert (await other.get(f"/promotions/{pid}/edit")).status_code == 404
        assert (await post_form(other, "/promotions", f"/promotions/{pid}/delete")).status_code == 404
        assert "Spring sale" not in (await other.get("/promotions")).text
        assert (await admin.get("/m/M0001")).text.count("Spring sale") == 0  # not yet published
        # The merchant cannot approve its own; the platform's operator can, once.
        assert (await post_form(admin, f"/promotions/{pid}", f"/promotions/{pid}/review",
                                decision="approve")).status_code == 403
        platform = await logged_in(env, "operator")
        assert "Spring sale" in (await platform.get("/promotions")).text  # the approval queue
        for _ in range(2):
            response = await post_form(platform, f"/promotions/{pid}", f"/promotions/{pid}/review",
                                       decision="approve", note="Fine")
            assert response.status_code == 303
        found = await promotions.get(pool, pid)
        assert found is not None and found["published"] and found["fee_minor"] == FEE
        assert await pool.fetchval("SELECT count(*) FROM loyalty.transactions WHERE txn_type = 'fee' "
                                   "AND idempotency_key = $1 AND fee_minor = $2 AND merchant_id = 'M0001'",
                                   placement_fees.fee_key(pid), FEE) == 1
        # Public, without a login; a member of the program sees it on the member list.
        public = env.client()
        page = await public.get("/m/M0001")
        assert page.status_code == 200 and "Spring sale" in page.text and "Alliance Books" in page.text
        assert (await public.get("/m/NOPE")).status_code == 404
        member = await member_in(pool, 1, "ALLY")
        assert [p["id"] for p in await promotions.promotions_for_member(pool, member)] == [pid]
        # An edit takes it off until approved again; the fee is not charged twice.
        edit = await admin.get(f"/promotions/{pid}/edit")
        response = await admin.post(f"/promotions/{pid}/edit", data={
            "csrf_token": csrf_of(edit.text), "title": "Spring sale, longer", "body": "Still half price.",
            "audience": "program", "action": "submit", **_days(0, 20)}, files={"image": ("", b"", "application/octet-stream")})
        assert response.status_code == 303
        edited = await promotions.get(pool, pid)
        assert edited is not None and edited["status"] == "pending" and edited["program"] == "ALLY"
        assert edited["image_id"] == found["image_id"]  # kept when no new file is chosen
        assert "Spring sale" not in (await public.get("/m/M0001")).text
        await post_form(platform, f"/promotions/{pid}", f"/promotions/{pid}/review", decision="approve")
        assert "Spring sale, longer" in (await public.get("/m/M0001")).text
        assert await pool.fetchval("SELECT count(*) FROM loyalty.transactions WHERE txn_type = 'fee'") == 1
        # A member of another program does not see a program-targeted one.
        cafe_member = await member_in(pool, 2, "CAFE")
        assert await promotions.promotions_for_member(pool, cafe_member) == []
        # Delete withdraws it; the record stays.
        assert (await post_form(admin, f"/promotions/{pid}", f"/promotions/{pid}/delete")).status_code == 303
        assert "Spring sale" not in (await public.get("/m/M0001")).text
        withdrawn = await promotions.get(pool, pid)
        assert withdrawn is not None and withdrawn["status"] == "withdrawn"
        assert (await pool.fetchval("SELECT count(*) FROM portal.audit WHERE object_kind = 'promotion'")) >= 4


async def test_rejection_drafts_and_bad_input(pool: asyncpg.Pool) -> None:
    async with community_env(pool, promotion_fee_minor=FEE) as env:
        admin = await logged_in(env, "m0001-admin")
        pid = await _create(admin, "Loud ad")
        platform = await logged_in(env, "admin")
        await post_form(platform, f"/promotions/{pid}", f"/promotions/{pid}/review", decision="reject",
                        note="Too loud")
        view = (await admin.get(f"/promotions/{pid}")).text
        assert "Rejected" in view and "Too loud" in view
        draft = await _create(admin, "Later", action="draft")
        assert (await promotions.get(pool, draft))["status"] == "draft"  # type: ignore[index]
        page = await admin.get("/promotions/new")
        response = await admin.post("/promotions/new", data={
            "csrf_token": csrf_of(page.text), "title": "Backwards", "body": "", "audience": "all",
            **_days(5, 1)}, files={"image": ("x.svg", b"<svg/>", "image/svg+xml")})
        assert response.status_code == 400 and "The end of the validity must come after its start." in response.text
        assert await pool.fetchval("SELECT count(*) FROM portal.images") == 1  # the first promotion's only
        page = await admin.get("/promotions/new?lang=zh_CN")
        response = await admin.post("/promotions/new", data={
            "csrf_token": csrf_of(page.text), "title": "Backwards", "body": "", "audience": "all", **_days(5, 1)})
        assert response.status_code == 400 and "截止日期须晚于生效日期。" in response.text
        response = await admin.post("/promotions/new", data={
            "csrf_token": csrf_of(page.text), "title": "Vector", "body": "", "audience": "all", **_days(0, 1)},
            files={"image": ("x.svg", b"<svg/>", "image/svg+xml")})
        assert response.status_code == 400
        assert await pool.fetchval("SELECT count(*) FROM loyalty.transactions WHERE txn_type = 'fee'") == 0
        assert (await platform.get("/promotions/999999999")).status_code == 404
        assert (await platform.get("/promotions/99999999999999999999")).status_code == 404


async def test_without_approval_a_submission_publishes_and_pays(pool: asyncpg.Pool) -> None:
    async with community_env(pool, promotions_need_approval=False, promotion_fee_minor=FEE) as env:
        admin = await logged_in(env, "m0002-admin")
        pid = await _create(admin, "Coffee week")
        found = await promotions.get(pool, pid)
        assert found is not None and found["published"] and found["reviewed_by"] == "auto"
        assert await pool.fetchval("SELECT fee_minor FROM loyalty.transactions WHERE txn_type = 'fee' "
                                   "AND merchant_id = 'M0002'") == FEE
        assert "Coffee week" in (await env.client().get("/m/M0002")).text
        listed = await promotions.list_published(pool, program="ALLY")
        assert [p["id"] for p in listed["promotions"]] == [pid]
