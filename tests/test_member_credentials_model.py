"""Random sequences of a member's credential changes, through the pages, against a model.

The platform resets the member's password and makes activation codes from the card's page; the
member activates with the newest code, an older one or a used one, logs in with the current or
a wrong password, and changes its password. The model knows the one password that works, whether
it must be changed, the one code that works, and which browser sessions are alive. After every
step each live session opens the member's pages (or only the password page, when a change is
due) and every ended one is sent to the login page.
"""

from __future__ import annotations

import itertools
import re

import httpx
import soak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from model_support import SERVER, DatabaseMachine
from portal_support import csrf_of
from portal_support import test_settings as portal_settings

from ledger.loyalty import card_numbers
from ledger.loyalty import demo as ledger_demo
from portal import demo as portal_demo
from portal.app import create_app

PAN1 = ledger_demo.demo_pan(1)
PASSWORDS = ("alpha-river-0001", "bravo-river-0002", "charlie-rv-0003")
_CODE = re.compile(r'<code class="code-once">([A-Z0-9-]+)</code>')


class CredentialMachine(DatabaseMachine):
    pool_size_max = 4

    def __init__(self) -> None:
        self.addresses = (f"10.{i // 250}.{i % 250}.1" for i in itertools.count(1))
        # The model.
        self.password: str = portal_demo.DEMO_PASSWORD
        self.must_change = False
        self.code: str | None = None
        self.spent_codes: list[str] = []
        self.live: list[httpx.AsyncClient] = []
        self.ended: list[httpx.AsyncClient] = []
        super().__init__()

    async def open(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await ledger_demo.seed(conn, cards=2)
            await portal_demo.seed_users(conn)
        # Throttles out of the way: this model is about credentials, not guessing.
        self.app = create_app(portal_settings(login_account_failures_max=10_000, login_address_failures_max=10_000),
                              self.pool)
        self.card = int(await card_numbers.card_id_by_number(self.pool, PAN1) or 0)
        self.admin = self._client()
        page = await self.admin.get("/login")
        await self.admin.post("/login", data={"login": "admin", "password": portal_demo.DEMO_PASSWORD,
                                              "csrf_token": csrf_of(page.text), "next": "/"})

    def _client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(next(self.addresses), 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver", follow_redirects=False)


    def _end_sessions(self) -> None:
        self.ended += self.live
        self.live = []

    async def _admin_post(self, action: str, **form: str) -> httpx.Response:
        page = await self.admin.get(f"/members/{self.card}")
        return await self.admin.post(f"/members/{self.card}/{action}", data={"csrf_token": csrf_of(page.text), **form})

    # ---------------------------------------------------------------- the platform's side

    @rule(password=st.sampled_from(PASSWORDS))
    def reset(self, password: str) -> None:
        answer = self.run(self._admin_post("password", password=password))
        assert answer.status_code == 303
        self.password, self.must_change = password, True
        self._end_sessions()

    @rule()
    def new_code(self) -> None:
        answer = self.run(self._admin_post("activation"))
        found = _CODE.search(answer.text)
        assert answer.status_code == 200 and found
        if self.code is not None:
            self.spent_codes.append(self.code)  # replaced: it no longer works
        self.code = found.group(1)

    # ---------------------------------------------------------------- the member's side

    @rule(which=st.sampled_from(["newest", "spent", "bogus"]), password=st.sampled_from(PASSWORDS))
    def activate(self, which: str, password: str) -> None:
        code = {"newest": self.code, "spent": self.spent_codes[-1] if self.spent_codes else None,
                "bogus": "ABCD-EFGH-JKMN"}[which]
        if code is None:
            return
        client = self._client()

        async def go() -> httpx.Response:
            page = await client.get("/member/activate")
            return await client.post("/member/activate", data={
                "csrf_token": csrf_of(page.text), "login": "13800000001", "code": code, "new": password,
                "again": password})

        answer = self.run(go())
        if which == "newest":
            assert answer.status_code == 303, answer.text
            self.spent_codes.append(code)
            self.code = None
            self.password, self.must_change = password, False
            self._end_sessions()
            self.live.append(client)  # activation logs the member in
        else:
            assert answer.status_code == 401

    @rule(right=st.booleans())
    def log_in(self, right: bool) -> None:
        client = self._client()
        password = self.password if right else "not-the-password-1"

        async def go() -> httpx.Response:
            page = await client.get("/member/login")
            return await client.post("/member/login", data={
                "csrf_token": csrf_of(page.text), "login": PAN1, "password": password, "next": "/member"})

        answer = self.run(go())
        assert answer.status_code == (303 if right else 401)
        if right:
            self.live.append(client)

    @precondition(lambda self: bool(self.live))
    @rule(password=st.sampled_from(PASSWORDS), index=st.integers(min_value=0))
    def change_password(self, password: str, index: int) -> None:
        client = self.live[index % len(self.live)]

        async def go() -> httpx.Response:
            page = await client.get("/member/password")
            return await client.post("/member/password", data={
                "csrf_token": csrf_of(page.text), "current": self.password, "new": password, "again": password})

        answer = self.run(go())
        if password == self.password:
            assert answer.status_code == 400  # the new password must differ
            return
        assert answer.status_code == 303
        self.password, self.must_change = password, False
        self.live.remove(client)
        self._end_sessions()
        self.live.append(client)  # its own session goes on, under a new token

    # ---------------------------------------------------------------- after every step

    @invariant()
    def sessions_are_the_models(self) -> None:
        async def check() -> None:
            for client in self.live:
                answer = await client.get("/member/balances")
                if self.must_change:
                    assert answer.status_code == 303 and answer.headers["location"] == "/member/password"
                else:
                    assert answer.status_code == 200
            for client in self.ended[-3:]:  # the latest ended ones: each was checked when it ended
                answer = await client.get("/member/balances")
                assert answer.status_code == 303 and answer.headers["location"].startswith("/member/login")

        self.run(check())

    @invariant()
    def login_state_is_the_models(self) -> None:
        row = self.run(self.pool.fetchrow("SELECT l.must_change_password, (SELECT count(*) FROM portal.member_activations a "
            "WHERE a.member_id = l.member_id AND a.used_at IS NULL AND a.expires_at > now()) AS codes "
            "FROM portal.member_logins l JOIN loyalty.cards c ON c.member_id = l.member_id WHERE c.id = $1", self.card))
        assert (row["must_change_password"], row["codes"]) == (self.must_change, int(self.code is not None))


def test_member_credentials_model(admin_dsn: str, template_db: str) -> None:
    SERVER.update(admin=admin_dsn, template=template_db)
    CredentialMachine.TestCase.settings = settings(
        max_examples=soak.examples(6), stateful_step_count=soak.steps(12), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    CredentialMachine.TestCase().runTest()
