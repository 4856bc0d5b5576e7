"""The web trading seat and the transaction page over HTTP: receipts, declines in words, one post
per form, voids and partial refunds from the page, other merchants' transactions not found."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
from portal_support import (
    PortalEnv,
    csrf_of,
    logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
)

from ledger.loyalty import card_numbers, demo
from ledger.terminals import add_terminal

PAN1, PAN2 = demo.demo_pan(1), demo.demo_pan(2)
MASKED1 = "621234******0019"
_REQUEST_ID = re.compile(r'name="request_id" value="([^"]+)"')
_RRN = re.compile(r"<dt>RRN</dt><dd>([0-9]*)</dd>")


async def seat_form(client: httpx.AsyncClient, path: str = "/seat") -> tuple[str, str]:
    """A fresh form's CSRF token and one-time request id."""
    page = await client.get(path)
    assert page.status_code == 200, page.text
    m = _REQUEST_ID.search(page.text)
    assert m
    return csrf_of(page.text), m.group(1)


async def take(client: httpx.AsyncClient, kind: str, pan: str = PAN1, amount: str = "",
               original_rrn: str = "", form: tuple[str, str] | None = None) -> httpx.Response:
    token, request_id = form or await seat_form(client)
    return await client.post("/seat", data={"csrf_token": token, "request_id": request_id, "kind": kind,
                                            "pan": pan, "amount": amount, "original_rrn": original_rrn})


def rrn_of(page: str) -> str:
    m = _RRN.search(page)
    assert m and m.group(1), page
    return m.group(1)


async def _count(env: PortalEnv, sql: str = "SELECT count(*) FROM loyalty.transactions") -> int:
    return int(await env.pool.fetchval(sql))


async def test_every_kind_gives_a_receipt(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    earn = await take(client, "earn", amount="123.45")
    assert earn.status_code == 200, earn.text
    text = earn.text
    assert "Approved." in text and MASKED1 in text and PAN1 not in text
    assert "CN¥123.45" in text and "<dt>Points earned</dt><dd>123</dd>" in text
    assert "<dt>Points balance after</dt><dd>123</dd>" in text
    assert re.search(r"<dt>Approval code</dt><dd>[0-9A-Za-z]{6}</dd>", text)
    assert "<dt>Terminal</dt><dd>W" in text
    for kind, amount, expect in (("topup", "500", "<dt>Points balance after</dt><dd>623</dd>"),
                                 ("redeem", "200", "<dt>Points redeemed</dt><dd>200</dd>"),
                                 ("load", "100", "<dt>Stored value after</dt><dd>CN¥100.00</dd>"),
                                 ("sv_purchase", "25", "<dt>Stored value after</dt><dd>CN¥75.00</dd>"),
                                 ("inquiry", "", "<dt>Points balance after</dt><dd>423</dd>")):
        r = await take(client, kind, amount=amount)
        assert r.status_code == 200 and "Approved." in r.text and expect in r.text, (kind, r.text)
    rows = await portal_env.pool.fetch("SELECT DISTINCT channel, operator_ref FROM loyalty.transactions")
    assert [tuple(r) for r in rows] == [("web", "portal:m0001-operator")]


async def test_the_same_form_posted_twice_takes_one_transaction(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    form = await seat_form(client)
    first = await take(client, "earn", amount="10", form=form)
    again = await take(client, "earn", amount="10", form=form)
    assert first.status_code == again.status_code == 200
    assert rrn_of(first.text) == rrn_of(again.text)
    assert "already sent" in again.text and "already sent" not in first.text
    assert await _count(portal_env) == 1
    assert await portal_env.pool.fetchval("SELECT posted FROM ledger.accounts a JOIN loyalty.cards c ON a.owner_id = c.id::text "
        "WHERE a.owner_kind = 'card' AND c.id = $1 AND a.purpose = 'points'",
            await card_numbers.card_id_by_number(portal_env.pool, PAN1)) == 10
    # The same id with other content is refused in words, and takes nothing.
    other = await take(client, "earn", amount="11", form=form)
    assert "already sent with other values" in other.text
    assert await _count(portal_env) == 1


async def test_declines_are_shown_in_words(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    short = await take(client, "redeem", amount="5")
    assert short.status_code == 200 and "does not have enough points" in short.text
    unknown = await take(client, "earn", pan="6212349999999997", amount="1")
    assert "no such card" in unknown.text.lower() or "No such card" in unknown.text
    await portal_env.pool.execute("UPDATE loyalty.cards SET status = 'blocked' WHERE id = $1",
        await card_numbers.card_id_by_number(portal_env.pool, PAN2))
    blocked = await take(client, "earn", pan=PAN2, amount="1")
    assert "the card is blocked" in blocked.text
    other = await take(client, "void", original_rrn="000000000001")
    assert "no approved transaction of this merchant" in other.text
    zh = await client.get("/seat?lang=zh_CN")
    assert "交易" in zh.text
    assert "余额" in (await take(client, "redeem", amount="5")).text  # the decline in Chinese


async def test_bad_forms_get_a_clear_400(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    for fields, words in (({"kind": "earn", "amount": "abc"}, "12.34"),
                          ({"kind": "earn", "amount": "1.234"}, "decimals"),
                          ({"kind": "topup", "amount": "1.5"}, "whole number"),
                          ({"kind": "lottery", "amount": "1"}, "Choose a kind"),
                          ({"kind": "earn", "amount": ""}, "needs an amount"),
                          ({"kind": "earn", "amount": "1", "pan": "12"}, "card number")):
        token, request_id = await seat_form(client)
        data = {"csrf_token": token, "request_id": request_id, "pan": PAN1, **fields}
        r = await client.post("/seat", data=data)
        assert r.status_code == 400 and words in r.text, (fields, r.text)
    token, _ = await seat_form(client)
    r = await client.post("/seat", data={"csrf_token": token, "kind": "earn", "pan": PAN1, "amount": "1"})
    assert r.status_code == 400 and "request id" in r.text
    assert await _count(portal_env) == 0


async def test_csrf_is_required(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    _, request_id = await seat_form(client)
    r = await client.post("/seat", data={"csrf_token": "nope", "request_id": request_id, "kind": "earn",
                                         "pan": PAN1, "amount": "1"})
    assert r.status_code == 403
    r = await client.post("/transactions/rrn/900000000001/void", data={"request_id": request_id})
    assert r.status_code == 403
    assert await _count(portal_env) == 0


async def test_roles(portal_env: PortalEnv) -> None:
    for login in ("admin", "operator"):
        client = await logged_in(portal_env, login)
        assert (await client.get("/seat")).status_code == 403
    for login in ("m0001-admin", "m0001-operator"):
        client = await logged_in(portal_env, login)
        assert (await client.get("/seat")).status_code == 200


async def test_void_and_partial_refund_from_the_transaction_page(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    await take(client, "load", amount="100")
    buy = rrn_of((await take(client, "sv_purchase", amount="40")).text)
    listing = (await client.get("/transactions?go=1")).text
    assert f'href="/transactions/rrn/{buy}"' in listing
    page_path = f"/transactions/rrn/{buy}"
    detail = await client.get(page_path)
    assert detail.status_code == 200 and MASKED1 in detail.text and PAN1 not in detail.text
    assert "Legs" in detail.text and "Refund" in detail.text and detail.text.count("<h1") == 1
    page = detail.text
    token = csrf_of(page)
    refund_id = re.findall(r'name="request_id" value="([^"]+)"', page)[-1]
    part = await client.post(f"{page_path}/refund", data={"csrf_token": token, "request_id": refund_id,
                                                         "amount": "15"})
    assert part.status_code == 200 and "Approved." in part.text, part.text
    assert "<dt>Stored value after</dt><dd>CN¥75.00</dd>" in part.text
    again = await client.post(f"{page_path}/refund", data={"csrf_token": token, "request_id": refund_id,
                                                          "amount": "15"})
    assert rrn_of(again.text) == rrn_of(part.text)  # a reload refunds once
    too_much = await client.post(f"{page_path}/refund", data={"csrf_token": token, "request_id":
                                                             (await seat_form(client))[1], "amount": "30"})
    assert "above the limit" in too_much.text
    bad = await client.post(f"{page_path}/refund", data={"csrf_token": token, "request_id": refund_id,
                                                        "amount": "x"})
    assert bad.status_code == 400 and "12.34" in bad.text
    after = (await client.get(page_path)).text
    assert "Done against it" in after and rrn_of(part.text) in after
    # A void of an earn from its page.
    earn = rrn_of((await take(client, "earn", amount="30")).text)
    page = (await client.get(f"/transactions/rrn/{earn}")).text
    void_id = re.findall(r'name="request_id" value="([^"]+)"', page)[0]
    voided = await client.post(f"/transactions/rrn/{earn}/void", data={"csrf_token": csrf_of(page),
                                                                       "request_id": void_id})
    assert "Approved." in voided.text and "<dt>Points redeemed</dt><dd>30</dd>" in voided.text
    again = await client.post(f"/transactions/rrn/{earn}/void", data={"csrf_token": csrf_of(page),
                                                                      "request_id": void_id})
    assert rrn_of(again.text) == rrn_of(voided.text)
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.transactions WHERE txn_type = 'void'") == 1


async def test_another_merchants_transaction_is_not_found(portal_env: PortalEnv) -> None:
    own = await logged_in(portal_env, "m0001-operator")
    rrn = rrn_of((await take(own, "earn", amount="10")).text)
    other = await logged_in(portal_env, "m0002-admin")
    assert (await other.get(f"/transactions/rrn/{rrn}")).status_code == 404
    token, request_id = await seat_form(other)
    for action in ("void", "refund"):
        r = await other.post(f"/transactions/rrn/{rrn}/{action}", data={"csrf_token": token,
                                                                      "request_id": request_id, "amount": "1"})
        assert r.status_code == 404, action
    assert (await other.get("/transactions/rrn/NOPE")).status_code == 404
    assert (await other.get("/transactions/rrn/x;y")).status_code == 404
    # The platform reads it; it has no seat to void from.
    platform = await logged_in(portal_env, "operator")
    page = await platform.get(f"/transactions/rrn/{rrn}")
    assert page.status_code == 200 and "Void this transaction" not in page.text
    r = await platform.post(f"/transactions/rrn/{rrn}/void", data={"csrf_token": csrf_of(page.text),
                                                                   "request_id": request_id})
    assert r.status_code == 403
    assert await _count(portal_env) == 1


class _Page(HTMLParser):
    """What the accessibility rules look at: controls and their labels, h1, tables and header cells."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.labels: set[str] = set()
        self.h1 = self.th = self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
            self.ids.append(a.get("id") or "<no id>")
        if tag == "label":
            self.labels.add(a.get("for") or "")
        self.h1 += tag == "h1"
        self.th += tag == "th"
        self.tables += tag == "table"


def _check_page(text: str, where: str) -> None:
    parsed = _Page()
    parsed.feed(text)
    assert parsed.h1 == 1, where
    assert set(parsed.ids) <= parsed.labels, (where, set(parsed.ids) - parsed.labels)
    assert parsed.th >= parsed.tables, where
    assert "<script" not in text and " style=" not in text, where
    assert PAN1 not in text, where


async def test_every_merchant_page_has_labels_one_h1_and_no_full_card_number(portal_env: PortalEnv) -> None:
    await add_terminal(portal_env.pool, "T0000001", "M0001")
    cashier = await logged_in(portal_env, "m0001-operator")
    receipt = await take(cashier, "earn", amount="10")
    _check_page(receipt.text, "receipt")
    rrn = rrn_of(receipt.text)
    card = await portal_env.pool.fetchval("SELECT id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(portal_env.pool, PAN1))
    admin = await logged_in(portal_env, "m0001-admin")
    for lang in ("en", "zh_CN"):
        for path in ("/seat", f"/transactions/rrn/{rrn}", "/members", "/members/new", f"/members/{card}",
                     f"/members/{card}/edit", "/terminals", "/terminals/new", "/terminals/T0000001",
                     "/terminals/T0000001/edit", "/transactions?go=1"):
            response = await admin.get(f"{path}{'&' if '?' in path else '?'}lang={lang}")
            assert response.status_code == 200, path
            _check_page(response.text, path)
    drawn = await admin.post("/terminals/T0000001/edit", data={
        "csrf_token": csrf_of((await admin.get("/terminals/T0000001/edit")).text), "key_source": "generate",
        "mac_alg": "x919"}, files={"key_file": ("k", b"", "text/plain")})
    _check_page(drawn.text, "key shown once")
