"""Network management (0800): sign-on 001, sign-off 002, echo 301 (specs/HOST-INTERFACE.md §10).

Answered 0810 with 39 = 00, echoing 7, 11, 41 and 70. Never MACed: sign-on
precedes key agreement. An unknown network management code is answered 40.
"""

from __future__ import annotations

from specs.vocabulary import APPROVED, ECHO, FUNCTION_NOT_SUPPORTED, SIGN_OFF, SIGN_ON, Fields
from switch.context import RequestContext


async def handle(ctx: RequestContext) -> Fields:
    """Sign the terminal on or off, or just answer an echo."""
    code = ctx.fields.get("70")
    if code == ECHO:
        return ctx.reply(APPROVED)
    if code in (SIGN_ON, SIGN_OFF):
        assert ctx.terminal is not None, "the server checks the terminal before routing"
        await ctx.terminals.set_signed_on(ctx.terminal.terminal_id, code == SIGN_ON)
        return ctx.reply(APPROVED)
    return ctx.reply(FUNCTION_NOT_SUPPORTED)
