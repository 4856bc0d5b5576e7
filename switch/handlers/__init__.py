"""Message handlers: one plain async function per transaction type.

A handler takes a :class:`switch.context.RequestContext` and returns the
response fields (``ctx.reply(code, ...)``). The routing table in
:mod:`switch.routing` says which handler answers which (MTI, transaction type).
"""
