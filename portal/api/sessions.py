"""Logging in and out: tokens for a card number or phone and a password, refresh, logout,
and the password change (the one thing a member whose password must be changed may do)."""

from __future__ import annotations

from starlette.responses import Response

from portal import member_auth, throttle
from portal.api.body import Text, check
from portal.api.endpoint import Call, client_address, endpoint, json_response
from portal.api.problems import Problem, unauthorized
from portal.passwords import PASSWORD_LEN_MAX, policy_problem

_LOGIN = {"login": Text(member_auth.IDENTIFIER_CHARS_MAX, required=True, chars_min=1),
          "password": Text(member_auth.PASSWORD_CHARS_MAX, required=True, chars_min=1, strip=False)}


@endpoint(auth=False, body=True)
async def create_session(call: Call) -> Response:
    """POST /sessions: log in. 201 with the tokens; 401 ``login-failed`` for every failure alike
    (wrong password, unknown login, locked member or address)."""
    fields = check(call.body, _LOGIN)
    settings = call.api.portal.settings
    who = await member_auth.authenticate(call.pool, fields["login"], fields["password"],
                                         client_address(call.request), settings)
    if who is None:
        raise Problem(401, "login-failed", "The login or the password is wrong, or logins are locked for a while.")
    tokens = await call.api.tokens.login(who.member_id, who.must_change_password)
    return json_response(tokens.body(), 201)


@endpoint(auth=False, body=True)
async def refresh_session(call: Call) -> Response:
    """POST /sessions/refresh: new tokens for a refresh token, which is used up. A used refresh
    token shown again ends the whole session (it was copied)."""
    fields = check(call.body, {"refresh_token": Text(200, required=True, chars_min=1)})
    tokens = await call.api.tokens.refresh(fields["refresh_token"])
    if tokens is None:
        raise unauthorized("The refresh token is unknown, expired, used or revoked: log in again.")
    return json_response(tokens.body(), 200)


@endpoint(password_change_ok=True)
async def delete_session(call: Call) -> Response:
    """DELETE /sessions/current: log out (this session's tokens end at once). 204."""
    assert call.caller is not None
    await call.api.tokens.logout(call.caller.family_id)
    return Response(status_code=204)


_PASSWORD = {"current_password": Text(member_auth.PASSWORD_CHARS_MAX, required=True, chars_min=1, strip=False),
             "new_password": Text(PASSWORD_LEN_MAX, required=True, chars_min=1, strip=False)}


@endpoint(body=True, password_change_ok=True)
async def change_password(call: Call) -> Response:
    """POST /me/password: change the password. 204; this session goes on (no longer limited),
    the member's other API sessions end."""
    assert call.caller is not None
    fields = check(call.body, _PASSWORD)
    address = client_address(call.request)
    # A stolen access token must not become a way to guess the password: wrong guesses count
    # against the address like failed logins, and a locked address may not try.
    if await throttle.address_locked(call.pool, address) or not await member_auth.check_password(
            call.pool, call.member_id, fields["current_password"]):
        await throttle.record_failure(call.pool, address, call.api.portal.settings)
        raise Problem(403, "forbidden", "The current password is wrong, or this address has tried too often.")
    if fields["new_password"] == fields["current_password"]:
        raise Problem(422, "refused", "The new password must differ from the current one.")
    problem = policy_problem(fields["new_password"], "")
    if problem:
        raise Problem(422, "refused", problem)
    async with call.pool.acquire() as conn, conn.transaction():
        await member_auth.set_password(conn, call.member_id, fields["new_password"], by_self=True)
        await member_auth.end_member_sessions(conn, call.member_id)
        await call.api.tokens.password_changed(conn, call.member_id, call.caller.family_id)
    return Response(status_code=204)


ROUTES = [
    ("/sessions", create_session, ["POST"], "api_sessions"),
    ("/sessions/refresh", refresh_session, ["POST"], "api_sessions_refresh"),
    ("/sessions/current", delete_session, ["DELETE"], "api_session_current"),
    ("/me/password", change_password, ["POST"], "api_me_password"),
]
