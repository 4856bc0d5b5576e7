"""In-platform mail pages: a merchant's inbox (read, delete), what a sender sent, and the form
to write: the platform to one merchant or all, a merchant to one of its members or all.

Through portal.mail: a message another inbox got answers 404 here. With SMTP configured
each message also gets e-mail copies (portal.mail_sender), sent in the background.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portal import audit, mail
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.refusals import said
from portal.web import FORM, GET, POST, Page, page, redirect, render

AUDIENCE_NAMES = {"merchant": N_("One merchant"), "merchants": N_("Every merchant"), "member": N_("One member"),
                  "members": N_("Every member of our program")}


def audience_name(audience: str) -> str:
    """To whom a message went, in the request's language."""
    return _(AUDIENCE_NAMES.get(audience, audience))


def _box(pg: Page) -> mail.Inbox:
    merchant_id = pg.own_merchant()
    if merchant_id is None:
        raise HTTPException(404)
    return mail.Inbox.merchant(merchant_id)


def _after(request: Request) -> int | None:
    value = request.query_params.get("after", "")[:19]
    return int(value) if value.isdigit() else None


def nudge_sender(request: Request) -> None:
    """Tell the e-mail sender (when there is one) that a message is waiting."""
    sender = getattr(request.app.state, "mail_sender", None)
    if sender is not None:
        sender.nudge()


@page("mail_inbox")
async def mail_inbox(request: Request, pg: Page) -> Response:
    """The merchant's inbox, newest first; unread ones marked."""
    box = _box(pg)
    result = await mail.inbox(pg.pool, box, after_id=_after(request), limit=pg.portal.settings.page_size_default)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(after=result["next_after_id"]))
    return render(request, "mail/inbox.html", {"messages": result["messages"], "next_url": next_url,
                                               "unread": await mail.unread_count(pg.pool, box)}, session=pg.session)


@page("mail_view")
async def mail_view(request: Request, pg: Page) -> Response:
    """One message of the inbox; reading it marks it read."""
    box = _box(pg)
    message_id = request.path_params["message_id"]
    if message_id >= 2**63 or not await mail.mark_read(pg.pool, box, message_id):
        raise HTTPException(404)
    message = await mail.get(pg.pool, box, message_id)
    if message is None:
        raise HTTPException(404)
    # The header's count was taken before this message was read.
    request.state.unread_mail = await mail.unread_count(pg.pool, box)
    return render(request, "mail/view.html", {"m": message}, session=pg.session)


@page("mail_delete")
async def mail_delete(request: Request, pg: Page) -> Response:
    """Delete a message from this inbox (others who got it keep theirs)."""
    message_id = request.path_params["message_id"]
    if message_id >= 2**63 or not await mail.delete(pg.pool, _box(pg), message_id):
        raise HTTPException(404)
    return redirect("/mail")


@page("mail_sent")
async def mail_sent(request: Request, pg: Page) -> Response:
    """What this merchant (the platform, for its users) sent, with how many have read each."""
    result = await mail.sent(pg.pool, pg.own_merchant(), after_id=_after(request),
                             limit=pg.portal.settings.page_size_default)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(after=result["next_after_id"]))
    return render(request, "mail/sent.html", {"messages": result["messages"], "next_url": next_url,
                                              "audience_name": audience_name}, session=pg.session)


@page("mail_new")
async def mail_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: send (the platform to merchants, a merchant to its members)."""
    merchant_id = pg.own_merchant()
    values = {"to": request.query_params.get("to", "")[:20], "subject": "", "body": ""}
    context: dict[str, Any] = {"values": values, "error": None, "to_merchants": merchant_id is None}
    if request.method == "GET":
        return render(request, "mail/new.html", context, session=pg.session)
    values = {"to": pg.field("to", 20), "subject": pg.field("subject", mail.SUBJECT_CHARS_MAX + 1),
              "body": pg.field("body", mail.BODY_CHARS_MAX + 1)}
    context["values"] = values
    copies = bool(pg.portal.settings.smtp_host)
    to = values["to"]
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            if merchant_id is None:
                sent = await mail.send_to_merchants(conn, None if to in ("", "*") else to, values["subject"],
                                                    values["body"], pg.actor, email_copies=copies)
            else:
                if to not in ("", "*") and not to.isdigit():
                    raise mail.MailError(_("Enter a member number, or * for every member."))
                found = await mail.send_to_members(conn, merchant_id, None if to in ("", "*") else int(to),
                                                   values["subject"], values["body"], pg.actor, email_copies=copies)
                if found is None:
                    raise mail.MailError(_("No member of our program has that number."))
                sent = found
            await audit.record(conn, pg.actor, pg.session.user_id, "mail_new", "mail", str(sent["id"]), merchant_id,
                               None, {"audience": sent["audience"], "to": to or "*", "subject": sent["subject"]})
    except mail.MailError as exc:
        context["error"] = said(exc)
        return render(request, "mail/new.html", context, status_code=400, session=pg.session)
    nudge_sender(request)
    return redirect("/mail/sent")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/mail", mail_inbox, GET, "mail_inbox"),
    ("/mail/sent", mail_sent, GET, "mail_sent"),
    ("/mail/new", mail_new, FORM, "mail_new"),
    ("/mail/{message_id:int}", mail_view, GET, "mail_view"),
    ("/mail/{message_id:int}/delete", mail_delete, POST, "mail_delete"),
]
