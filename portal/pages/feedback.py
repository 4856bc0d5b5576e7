"""Feedback pages: a merchant's threads (from its members, and its own to the platform), the
platform's (from merchants); a thread with its replies; reply, close, delete.

Through portal.feedback, which scopes every thread to the party asking: another's
thread answers 404, exactly as one that does not exist.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portal import audit, feedback
from portal.feedback import FeedbackError, Party
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.refusals import said
from portal.web import FORM, GET, POST, Page, page, redirect, render

STATUS_NAMES = {"open": N_("Open"), "answered": N_("Answered"), "closed": N_("Closed")}
SIDE_NAMES = {"member": N_("Member"), "merchant": N_("Merchant"), "platform": N_("Platform")}
KIND_NAMES = {"member": N_("From members"), "merchant": N_("To the platform")}


def status_name(status: str) -> str:
    """A thread's status in the request's language."""
    return _(STATUS_NAMES.get(status, status))


def kind_name(kind: str) -> str:
    """Whose threads these are, in the request's language."""
    return _(KIND_NAMES.get(kind, kind))


def side_name(side: str) -> str:
    """Who wrote a message, in the request's language."""
    return _(SIDE_NAMES.get(side, side))


def party_of(pg: Page) -> Party:
    """The party a portal user acts as: its merchant, or the platform."""
    merchant_id = pg.own_merchant()
    return Party.merchant(merchant_id) if merchant_id else Party.platform()


async def _thread(request: Request, pg: Page) -> dict[str, Any]:
    thread_id = request.path_params["thread_id"]
    found = await feedback.get(pg.pool, party_of(pg), thread_id) if thread_id < 2**63 else None
    if found is None:
        raise HTTPException(404)
    return found


@page("feedback")
async def feedback_list(request: Request, pg: Page) -> Response:
    """The threads this user's side sees, newest first, by kind and status."""
    q = request.query_params
    party = party_of(pg)
    kind = q.get("kind", "")[:10] if party.side == "merchant" else "merchant"
    kind = kind if kind in KIND_NAMES else ""
    status = q.get("status", "")[:10]
    status = status if status in feedback.STATUSES else ""
    after = q.get("after", "")[:19]
    result = await feedback.search(pg.pool, party, kind=kind or None, status=status or None,
                                   after_id=int(after) if after.isdigit() else None,
                                   limit=pg.portal.settings.page_size_default)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(after=result["next_after_id"]))
    return render(request, "feedback/list.html", {
        "threads": result["threads"], "kind": kind, "status": status, "statuses": feedback.STATUSES,
        "kinds": KIND_NAMES if party.side == "merchant" else {}, "status_name": status_name,
        "kind_name": kind_name, "next_url": next_url}, session=pg.session)


@page("feedback_new")
async def feedback_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: a merchant's new thread to the platform."""
    merchant_id = pg.own_merchant()
    if merchant_id is None:
        raise HTTPException(404)
    values = {"subject": "", "body": ""}
    if request.method == "GET":
        return render(request, "feedback/new.html", {"values": values, "error": None}, session=pg.session)
    values = {"subject": pg.field("subject", feedback.SUBJECT_CHARS_MAX + 1),
              "body": pg.field("body", feedback.BODY_CHARS_MAX + 1)}
    try:
        async with pg.pool.acquire() as conn:
            thread = await feedback.create_merchant_feedback(conn, merchant_id, values["subject"], values["body"],
                                                             pg.actor)
            await audit.record(conn, pg.actor, pg.session.user_id, "feedback_new", "feedback", str(thread["id"]),
                               merchant_id, None, {"subject": thread["subject"]})
    except FeedbackError as exc:
        return render(request, "feedback/new.html", {"values": values, "error": said(exc)}, status_code=400,
                      session=pg.session)
    return redirect(f"/feedback/{thread['id']}")


@page("feedback_view")
async def feedback_view(request: Request, pg: Page) -> Response:
    """One thread: its messages, a reply form (unless closed), close and delete."""
    thread = await _thread(request, pg)
    party = party_of(pg)
    author_side = "member" if thread["kind"] == "member" else "merchant"
    deletable = (party.side == author_side
                 and all(m["side"] == party.side for m in thread["thread"]))
    return render(request, "feedback/view.html", {
        "t": thread, "mine": party.side, "status_name": status_name, "side_name": side_name,
        "deletable": deletable, "error": request.query_params.get("error", "")[:10] == "closed",
        "body_max": feedback.BODY_CHARS_MAX}, session=pg.session)


@page("feedback_reply")
async def feedback_reply(request: Request, pg: Page) -> Response:
    """Add a message to a thread this user's side sees."""
    thread = await _thread(request, pg)
    try:
        async with pg.pool.acquire() as conn:
            await feedback.reply(conn, party_of(pg), thread["id"], pg.field("body", feedback.BODY_CHARS_MAX + 1),
                                 pg.actor)
    except FeedbackError:
        return redirect(f"/feedback/{thread['id']}?error=closed")
    return redirect(f"/feedback/{thread['id']}")


@page("feedback_close")
async def feedback_close(request: Request, pg: Page) -> Response:
    """Close a thread (either side)."""
    thread = await _thread(request, pg)
    await feedback.close(pg.pool, party_of(pg), thread["id"])
    return redirect(f"/feedback/{thread['id']}")


@page("feedback_delete")
async def feedback_delete(request: Request, pg: Page) -> Response:
    """Delete a thread this merchant opened, while nobody has replied."""
    thread = await _thread(request, pg)
    async with pg.pool.acquire() as conn:
        done = await feedback.delete(conn, party_of(pg), thread["id"])
        if done is None:
            raise HTTPException(404)
        if not done:
            raise HTTPException(400)
        await audit.record(conn, pg.actor, pg.session.user_id, "feedback_delete", "feedback", str(thread["id"]),
                           thread["merchant_id"], {"subject": thread["subject"]}, None)
    return redirect("/feedback")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/feedback", feedback_list, GET, "feedback"),
    ("/feedback/new", feedback_new, FORM, "feedback_new"),
    ("/feedback/{thread_id:int}", feedback_view, GET, "feedback_view"),
    ("/feedback/{thread_id:int}/reply", feedback_reply, POST, "feedback_reply"),
    ("/feedback/{thread_id:int}/close", feedback_close, POST, "feedback_close"),
    ("/feedback/{thread_id:int}/delete", feedback_delete, POST, "feedback_delete"),
]
