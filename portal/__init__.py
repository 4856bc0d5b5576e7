"""The platform portal: the web application of the platform operator and its merchants.

An ASGI application (Starlette, server-rendered Jinja2 pages) over the same
domain functions as the CLI (``ledger/``). It never imports ``switch/``.
"""
