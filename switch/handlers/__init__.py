"""Message handlers: one plain async function per transaction type.

A handler takes a :class:`switch.context.RequestContext` and returns the
response fields (``ctx.reply(code, ...)``). The routing table in
:mod:`switch.routing` says which handler answers which (MTI, transaction type).
"""

from __future__ import annotations

from switch.context import RequestContext

Fields = dict[str, str]

FUNCTION_NOT_SUPPORTED = "40"


async def not_supported(ctx: RequestContext) -> Fields:
    """Answer 40 (function not supported): the transaction type is known but not offered yet."""
    return ctx.reply(FUNCTION_NOT_SUPPORTED)
