"""A member's community pages: the promotions meant for the member, the mailbox (merchants'
messages: read, delete) and feedback to merchants (write, reply, close, delete).

Every object is checked against the member's session by portal.mail and portal.feedback:
another member's message or thread answers 404, exactly as one that does not exist.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portal import feedback, mail, member_web, promotions
from portal.feedback import FeedbackError, Party
from portal.member_web import MemberPage, member_page
from portal.pages.feedback import side_name, status_name
from portal.refusals import said
from portal.web import FORM, GET, POST, redirect, render

MERCHANTS_SHOWN_MAX = 200  # the merchants a member may write to, in one select


def path_id(request: Request, name: str) -> int:
    """A numeric id from the path (anything else, or past bigint: 404, as an id that does not exist)."""
    value = request.path_params[name]
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise HTTPException(404)
    return int(value)


def _after(request: Request) -> int | None:
    value = request.query_params.get("after", "")[:19]
    return int(value) if value.isdigit() else None


def _next_url(request: Request, after_id: int | None) -> str | None:
    return None if after_id is None else str(request.url.include_query_params(after=after_id))


async def promotions_for_member(conn: Any, member_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """The published promotions a member sees, for ``promotions/_member_list.html`` (``promotions``)."""
    return await promotions.promotions_for_member(conn, member_id, limit)


async def home_promotions(pool: Any, member_id: int) -> dict[str, Any]:
    """The member home page's promotions (``member/home_promotions.html``) and unread count."""
    return {"promotions": await promotions_for_member(pool, member_id),
            "unread_messages": await mail.unread_count(pool, mail.Inbox.member(member_id))}


# The member home page shows them where it takes other areas' parts (MEMBER_HOME_PARTS).
_HOME_PARTS = getattr(member_web, "MEMBER_HOME_PARTS", None)
if _HOME_PARTS is not None and home_promotions not in _HOME_PARTS:
    _HOME_PARTS.append(home_promotions)


@member_page("member_promotions")
async def member_promotions(request: Request, pg: MemberPage) -> Response:
    """The published promotions meant for the member (every member's, and its programs')."""
    return render(request, "member/promotions.html",
                  {"promotions": await promotions_for_member(pg.pool, pg.member_id, 50)}, session=pg.session)


@member_page("member_mail")
async def member_mail(request: Request, pg: MemberPage) -> Response:
    """The member's mailbox, newest first; unread ones marked."""
    box = mail.Inbox.member(pg.member_id)
    result = await mail.inbox(pg.pool, box, after_id=_after(request), limit=pg.portal.settings.page_size_default)
    return render(request, "member/mail.html", {
        "messages": result["messages"], "next_url": _next_url(request, result["next_after_id"]),
        "unread": await mail.unread_count(pg.pool, box)}, session=pg.session)


@member_page("member_mail_view")
async def member_mail_view(request: Request, pg: MemberPage) -> Response:
    """One message of the member's mailbox; reading it marks it read."""
    box = mail.Inbox.member(pg.member_id)
    message_id = path_id(request, "message_id")
    if not await mail.mark_read(pg.pool, box, message_id):
        raise HTTPException(404)
    message = await mail.get(pg.pool, box, message_id)
    if message is None:
        raise HTTPException(404)
    # The header's count was taken before this message was read.
    request.state.unread_mail = await mail.unread_count(pg.pool, box)
    return render(request, "member/mail_view.html", {"m": message}, session=pg.session)


@member_page("member_mail_delete")
async def member_mail_delete(request: Request, pg: MemberPage) -> Response:
    """Delete a message from the member's mailbox."""
    if not await mail.delete(pg.pool, mail.Inbox.member(pg.member_id), path_id(request, "message_id")):
        raise HTTPException(404)
    return redirect("/member/mail")


async def _thread(request: Request, pg: MemberPage) -> dict[str, Any]:
    found = await feedback.get(pg.pool, Party.member(pg.member_id), path_id(request, "thread_id"))
    if found is None:
        raise HTTPException(404)
    return found


@member_page("member_feedback")
async def member_feedback(request: Request, pg: MemberPage) -> Response:
    """The member's feedback threads, newest first."""
    result = await feedback.list_member_feedback(pg.pool, pg.member_id, after_id=_after(request),
                                                 limit=pg.portal.settings.page_size_default)
    return render(request, "member/feedback.html", {
        "threads": result["threads"], "next_url": _next_url(request, result["next_after_id"]),
        "status_name": status_name}, session=pg.session)


async def _merchants_of(pg: MemberPage) -> list[dict[str, Any]]:
    """The active merchants of the programs the member's cards belong to (whom it may write to)."""
    rows = await pg.pool.fetch(
        f"SELECT m.merchant_id, m.name FROM loyalty.merchants m WHERE m.status = 'active' "
        f"AND m.program IN ({mail.MEMBER_PROGRAMS_SQL}) ORDER BY m.name, m.merchant_id LIMIT {MERCHANTS_SHOWN_MAX}",
        pg.member_id)
    return [dict(r) for r in rows]


@member_page("member_feedback_new")
async def member_feedback_new(request: Request, pg: MemberPage) -> Response:
    """GET: the form. POST: a new thread to one of the member's merchants."""
    merchants = await _merchants_of(pg)
    values = {"merchant_id": request.query_params.get("merchant", "")[:15], "subject": "", "body": ""}
    context: dict[str, Any] = {"merchants": merchants, "values": values, "error": None}
    if request.method == "GET":
        return render(request, "member/feedback_new.html", context, session=pg.session)
    values = {"merchant_id": pg.field("merchant_id", 15), "subject": pg.field("subject", feedback.SUBJECT_CHARS_MAX + 1),
              "body": pg.field("body", feedback.BODY_CHARS_MAX + 1)}
    context["values"] = values
    if values["merchant_id"] not in {m["merchant_id"] for m in merchants}:
        raise HTTPException(404)
    try:
        async with pg.pool.acquire() as conn:
            thread = await feedback.create_member_feedback(conn, pg.member_id, values["merchant_id"],
                                                           values["subject"], values["body"])
    except FeedbackError as exc:
        context["error"] = said(exc)
        return render(request, "member/feedback_new.html", context, status_code=400, session=pg.session)
    return redirect(f"/member/feedback/{thread['id']}")


@member_page("member_feedback_view")
async def member_feedback_view(request: Request, pg: MemberPage) -> Response:
    """One of the member's threads with its replies."""
    thread = await _thread(request, pg)
    deletable = all(m["side"] == "member" for m in thread["thread"])
    return render(request, "member/feedback_view.html", {
        "t": thread, "status_name": status_name, "side_name": side_name, "deletable": deletable,
        "error": request.query_params.get("error", "")[:10] == "closed", "body_max": feedback.BODY_CHARS_MAX},
        session=pg.session)


@member_page("member_feedback_reply")
async def member_feedback_reply(request: Request, pg: MemberPage) -> Response:
    """The member writes again in one of its threads."""
    thread = await _thread(request, pg)
    try:
        async with pg.pool.acquire() as conn:
            await feedback.reply(conn, Party.member(pg.member_id), thread["id"],
                                 pg.field("body", feedback.BODY_CHARS_MAX + 1), pg.actor)
    except FeedbackError:
        return redirect(f"/member/feedback/{thread['id']}?error=closed")
    return redirect(f"/member/feedback/{thread['id']}")


@member_page("member_feedback_close")
async def member_feedback_close(request: Request, pg: MemberPage) -> Response:
    """The member closes one of its threads."""
    thread = await _thread(request, pg)
    await feedback.close(pg.pool, Party.member(pg.member_id), thread["id"])
    return redirect(f"/member/feedback/{thread['id']}")


@member_page("member_feedback_delete")
async def member_feedback_delete(request: Request, pg: MemberPage) -> Response:
    """The member deletes one of its threads while the merchant has not replied."""
    thread = await _thread(request, pg)
    async with pg.pool.acquire() as conn:
        done = await feedback.delete(conn, Party.member(pg.member_id), thread["id"])
    if done is None:
        raise HTTPException(404)
    if not done:
        raise HTTPException(400)
    return redirect("/member/feedback")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py lists them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/member/promotions", member_promotions, GET, "member_promotions"),
    ("/member/mail", member_mail, GET, "member_mail"),
    ("/member/mail/{message_id}", member_mail_view, GET, "member_mail_view"),
    ("/member/mail/{message_id}/delete", member_mail_delete, POST, "member_mail_delete"),
    ("/member/feedback", member_feedback, GET, "member_feedback"),
    ("/member/feedback/new", member_feedback_new, FORM, "member_feedback_new"),
    ("/member/feedback/{thread_id}", member_feedback_view, GET, "member_feedback_view"),
    ("/member/feedback/{thread_id}/reply", member_feedback_reply, POST, "member_feedback_reply"),
    ("/member/feedback/{thread_id}/close", member_feedback_close, POST, "member_feedback_close"),
    ("/member/feedback/{thread_id}/delete", member_feedback_delete, POST, "member_feedback_delete"),
]
