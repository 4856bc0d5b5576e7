"""The member API for apps: JSON under /api/v1, bearer tokens, problem+json errors (docs/api.md).

One module per job: problems (errors), tokens (sessions), ratelimit, idempotency,
paging, body (reading requests), endpoint (what every handler shares), openapi
(the document, as data), and the routes by resource (sessions, me, catalog,
orders, inbox); app builds the sub-application mounted at /api/v1.
"""
