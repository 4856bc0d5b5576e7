"""Promotions (public), the member's mailbox, and feedback to merchants."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from portal import feedback, mail, promotions
from portal.api.body import Text, check
from portal.api.catalog import merchant_filter, program_filter
from portal.api.endpoint import Call, endpoint, json_response
from portal.api.problems import Problem, not_found
from portal.images import MEDIA_PREFIX

ID_DIGITS_MAX = 18


def path_id(call: Call, name: str = "id") -> int:
    """A numeric id of the path; anything else is 404, like an id that does not exist."""
    text = str(call.request.path_params.get(name, ""))
    if not (text.isascii() and text.isdigit()) or len(text) > ID_DIGITS_MAX:
        raise not_found()
    return int(text)


def _promotion_view(p: dict[str, Any]) -> dict[str, Any]:
    return {"id": p["id"], "merchant_id": p["merchant_id"], "merchant_name": p["merchant_name"],
            "title": p["title"], "body": p["body"], "program": p["program"],
            "image_url": f"{MEDIA_PREFIX}{p['image_id']}" if p["image_id"] is not None else None,
            "valid_from": p["valid_from"].isoformat(), "valid_until": p["valid_until"].isoformat()}


@endpoint(auth=False)
async def list_promotions(call: Call) -> Response:
    """GET /promotions: published promotions, newest first; ``?merchant=``, ``?program=``
    (a program's: those that target it or every member)."""
    merchant, program = merchant_filter(call), program_filter(call)
    scope = f"promotions:{merchant or ''}:{program or ''}"
    limit = call.limit()
    after = call.after(scope)
    found = await promotions.list_published(call.pool, merchant, program,
                                            after if isinstance(after, int) else None, limit)
    items = [_promotion_view(p) for p in found["promotions"]]
    return json_response({"items": items, "next_cursor": call.next_cursor(
        scope, items, "id", limit, found["next_after_id"] is not None)})


def _message_view(m: dict[str, Any]) -> dict[str, Any]:
    return {"id": m["id"], "sender_merchant_id": m["sender_merchant_id"], "sender_name": m["sender_name"],
            "subject": m["subject"], "body": m["body"], "created_at": m["created_at"].isoformat(),
            "read": m["read_at"] is not None}


@endpoint()
async def list_messages(call: Call) -> Response:
    """GET /me/messages: the member's mailbox, newest first, with the unread count."""
    scope = f"messages:{call.member_id}"
    limit = call.limit()
    after = call.after(scope)
    found = await mail.member_inbox(call.pool, call.member_id, after if isinstance(after, int) else None, limit)
    items = [_message_view(m) for m in found["messages"]]
    unread = await mail.unread_count(call.pool, mail.Inbox.member(call.member_id))
    return json_response({"items": items, "unread_count": unread, "next_cursor": call.next_cursor(
        scope, items, "id", limit, found["next_after_id"] is not None)})


@endpoint()
async def get_message(call: Call) -> Response:
    """GET /me/messages/{id}: one message of the mailbox, marked read."""
    box = mail.Inbox.member(call.member_id)
    message_id = path_id(call)
    if not await mail.mark_read(call.pool, box, message_id):
        raise not_found("No such message.")
    found = await mail.get(call.pool, box, message_id)
    if found is None:
        raise not_found("No such message.")
    return json_response(_message_view(found))


@endpoint()
async def delete_message(call: Call) -> Response:
    """DELETE /me/messages/{id}: remove a message from this mailbox. 204."""
    if not await mail.delete(call.pool, mail.Inbox.member(call.member_id), path_id(call)):
        raise not_found("No such message.")
    return Response(status_code=204)


def _thread_view(t: dict[str, Any]) -> dict[str, Any]:
    out = {"id": t["id"], "merchant_id": t["merchant_id"], "merchant_name": t["merchant_name"],
           "subject": t["subject"], "status": t["status"], "created_at": t["created_at"].isoformat(),
           "updated_at": t["updated_at"].isoformat(), "messages": t["messages"]}
    if "thread" in t:
        out["thread"] = [{"id": m["id"], "side": m["side"], "body": m["body"],
                          "created_at": m["created_at"].isoformat()} for m in t["thread"]]
    return out


_FEEDBACK = {"merchant_id": Text(15, required=True, chars_min=1),
             "subject": Text(feedback.SUBJECT_CHARS_MAX, required=True, chars_min=1),
             "body": Text(feedback.BODY_CHARS_MAX, required=True, chars_min=1)}


@endpoint(body=True)
async def create_feedback(call: Call) -> Response:
    """POST /feedback: a new thread to a merchant. 201 with the thread; 404 for no such merchant."""
    fields = check(call.body, _FEEDBACK)
    if not await call.pool.fetchval("SELECT 1 FROM loyalty.merchants WHERE merchant_id = $1 AND status = 'active'",
                                    fields["merchant_id"]):
        raise not_found("No such merchant.")
    try:
        async with call.pool.acquire() as conn:
            thread = await feedback.create_member_feedback(conn, call.member_id, fields["merchant_id"],
                                                           fields["subject"], fields["body"])
    except feedback.FeedbackError as exc:
        raise Problem(422, "refused", str(exc)) from None
    found = await feedback.get(call.pool, feedback.Party.member(call.member_id), int(thread["id"]))
    assert found is not None
    return json_response(_thread_view(found), 201)


@endpoint()
async def list_feedback(call: Call) -> Response:
    """GET /feedback: the member's threads, newest first."""
    scope = f"feedback:{call.member_id}"
    limit = call.limit()
    after = call.after(scope)
    found = await feedback.list_member_feedback(call.pool, call.member_id,
                                                after if isinstance(after, int) else None, limit)
    items = [_thread_view(t) for t in found["threads"]]
    return json_response({"items": items, "next_cursor": call.next_cursor(
        scope, items, "id", limit, found["next_after_id"] is not None)})


@endpoint()
async def get_feedback(call: Call) -> Response:
    """GET /feedback/{id}: one of the member's threads with its messages."""
    found = await feedback.get(call.pool, feedback.Party.member(call.member_id), path_id(call))
    if found is None:
        raise not_found("No such feedback.")
    return json_response(_thread_view(found))


ROUTES = [
    ("/promotions", list_promotions, ["GET"], "api_promotions"),
    ("/me/messages", list_messages, ["GET"], "api_messages"),
    ("/me/messages/{id}", get_message, ["GET"], "api_message"),
    ("/me/messages/{id}", delete_message, ["DELETE"], "api_message_delete"),
    ("/feedback", create_feedback, ["POST"], "api_feedback_new"),
    ("/feedback", list_feedback, ["GET"], "api_feedback"),
    ("/feedback/{id}", get_feedback, ["GET"], "api_feedback_thread"),
]
