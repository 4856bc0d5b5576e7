"""Network management (0800): sign-on 001, sign-off 002, echo 301 (specs/HOST-INTERFACE.md §10).

Answered 0810 with 39 = 00, echoing 7, 11, 41 and 70. Never MACed: sign-on
precedes key agreement. An unknown network management code is answered 40.

Only a terminal signs itself off: a sign-off takes effect on the connection that
signed the terminal on (in this daemon process) and is answered 63 on any other,
changing nothing. Otherwise anyone who knows a terminal id could make its next
requests fail with 58. A terminal that lost its connection signs on again first.

A terminal with a master key receives fresh working keys at every sign-on (switch.keyexchange):
they are installed with the sign-on itself, and its 0810 carries them in field 48 under the
master key. From then on its MACs and PIN blocks are checked with them.
"""

from __future__ import annotations

from specs.vocabulary import (
    APPROVED,
    ECHO,
    FUNCTION_NOT_SUPPORTED,
    SECURITY_VIOLATION,
    SIGN_OFF,
    SIGN_ON,
    SYSTEM_MALFUNCTION,
    Fields,
)
from switch import keyexchange
from switch.context import RequestContext


async def handle(ctx: RequestContext) -> Fields:
    """Sign the terminal on or off, or just answer an echo."""
    code = ctx.fields.get("70")
    if code == ECHO:
        return ctx.reply(APPROVED)
    if code in (SIGN_ON, SIGN_OFF):
        assert ctx.terminal is not None, "the server checks the terminal before routing"
        tid = ctx.terminal.terminal_id
        connection = f"{ctx.listener.name}/{ctx.peer}"
        if code == SIGN_OFF and ctx.terminals.signed_on_by(tid) != connection:
            ctx.log.warning("sign_off_refused", terminal=tid, peer=ctx.peer, listener=ctx.listener.name)
            return ctx.reply(SECURITY_VIOLATION)
        if code == SIGN_ON and ctx.terminal.tmk_alg is not None:
            return await _sign_on_with_keys(ctx, connection)
        await ctx.terminals.set_signed_on(tid, code == SIGN_ON, connection)
        return ctx.reply(APPROVED)
    return ctx.reply(FUNCTION_NOT_SUPPORTED)


async def _sign_on_with_keys(ctx: RequestContext, connection: str) -> Fields:
    term = ctx.terminal
    assert term is not None and term.tmk_alg is not None
    if term.tmk is None:  # sealed under no key we hold: the operator must see it
        ctx.log.warning("sign_on_failed", terminal=term.terminal_id, reason=term.key_error)
        return ctx.reply(SYSTEM_MALFUNCTION)
    working = keyexchange.generate(term.tmk_alg)
    if not await ctx.terminals.install_working_keys(term, working, connection):
        return ctx.reply(SYSTEM_MALFUNCTION)
    return ctx.reply(APPROVED, **{"48": keyexchange.field_48(term.tmk, working)})
