"""E-mail copies of in-platform mail: the outbox and the portal's bounded background sender.

When ``[portal] smtp_host`` is set, every message written gets a ``portal.mail_fanout``
row (portal.mail). The sender, one asyncio task in the portal process, repeats:

1. expand: for a few pending fan-outs, add the next page of recipients that have an
   e-mail address to ``portal.mail_outbox`` (a merchant's contact e-mail, a member's
   ``loyalty.members.email``), remembering where it stopped;
2. send: take the outbox rows that are due (``FOR UPDATE SKIP LOCKED``: two portals
   never send one twice at once), send each over SMTP in a worker thread with a
   timeout; a failure is retried later with exponential back-off, up to
   ``smtp_attempts_max`` attempts, then the row is ``failed``.

Nothing here runs in a page's request, so a slow or dead SMTP server never blocks a page.
A copy is sent at least once: a portal stopped between the SMTP server's acceptance and the
outbox row's update sends that copy again when it is back.
The SMTP password is read from its file when the sender starts and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import structlog

from portal.mail import MEMBER_PROGRAMS_SQL

log = structlog.get_logger("portal.mail")

FANOUT_PAGE_MAX = 500  # recipients added to the outbox per fan-out step
FANOUTS_PER_ROUND_MAX = 10
SENDS_PER_ROUND_MAX = 50
BACKOFF_BASE_S = 30
BACKOFF_MAX_S = 3600
ERROR_CHARS_MAX = 300


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how copies are sent (``[portal] smtp_*``)."""

    host: str
    port: int = 25
    sender: str = ""
    starttls: bool = False
    username: str = ""
    password: str = ""
    timeout_s: float = 10.0
    attempts_max: int = 5
    poll_interval_s: float = 5.0

    def __repr__(self) -> str:  # the password never reaches a log line
        return f"SmtpSettings(host={self.host!r}, port={self.port}, sender={self.sender!r}, starttls={self.starttls})"


def read_password(path: str) -> str:
    """The SMTP password from its file (stripped); empty for no file."""
    return Path(path).read_text(encoding="utf-8").strip() if path else ""


def backoff_s(attempts: int) -> int:
    """Seconds to wait before the next attempt after ``attempts`` failures.

    >>> [backoff_s(n) for n in (1, 2, 3)], backoff_s(20)
    ([30, 60, 120], 3600)
    """
    return int(min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S))


# The next page of a message's recipients with an address, in key order: (key, address).
# Merchants by id ($1 message, $2 after this merchant id); members by id ($2 after this
# member id, as text), so a page of a million members' broadcast is an index range, not a scan.
_MERCHANT_RECIPIENTS_SQL = f"""
SELECT m.merchant_id AS k, m.contact_email AS address FROM portal.mail_messages g
  JOIN loyalty.merchants m ON (g.audience = 'merchant' AND m.merchant_id = g.recipient_merchant_id)
                           OR (g.audience = 'merchants' AND m.status = 'active')
 WHERE g.id = $1 AND m.contact_email <> '' AND m.merchant_id > $2
 ORDER BY m.merchant_id LIMIT {FANOUT_PAGE_MAX}
"""
_MEMBER_RECIPIENTS_SQL = f"""
SELECT mb.id::text AS k, mb.email AS address FROM portal.mail_messages g
  JOIN loyalty.members mb ON (g.audience = 'member' AND mb.id = g.recipient_member_id)
                          OR (g.audience = 'members' AND g.program IN ({MEMBER_PROGRAMS_SQL.replace('$1::bigint', 'mb.id')}))
 WHERE g.id = $1 AND mb.email <> '' AND mb.status = 'active' AND mb.id > coalesce(nullif($2, '')::bigint, 0)
 ORDER BY mb.id LIMIT {FANOUT_PAGE_MAX}
"""


class MailSender:
    """The background sender of e-mail copies (one per portal process)."""

    def __init__(self, pool: asyncpg.Pool, smtp: SmtpSettings) -> None:
        self.pool = pool
        self.smtp = smtp
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self.sent_total = 0
        self.failed_total = 0
        self._tried_last = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="portal-mail-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def nudge(self) -> None:
        """Run a round soon (a message was just written)."""
        self._wakeup.set()

    async def _loop(self) -> None:
        while True:
            busy = False
            try:
                added = await self.expand()
                await self.send_due()
                # A round that found work goes again at once (a large broadcast drains at the
                # speed of the SMTP server); an idle one waits for a nudge or the poll interval.
                busy = added > 0 or self._tried_last > 0
            except Exception as exc:  # noqa: BLE001 - the sender outlives any one round
                # The database is away, or a row is not as expected: the rows stay; next round.
                log.warning("mail_round_failed", error=type(exc).__name__)
            if busy:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.smtp.poll_interval_s)
            self._wakeup.clear()

    async def run_once(self) -> tuple[int, int]:
        """One round: expand pending fan-outs by a page, send what is due. Returns (sent, failed now)."""
        await self.expand()
        return await self.send_due()

    async def expand(self) -> int:
        """Add the next page of recipients of a few pending fan-outs to the outbox; returns rows added."""
        added = 0
        async with self.pool.acquire() as conn:
            for _ in range(FANOUTS_PER_ROUND_MAX):
                async with conn.transaction():
                    fan = await conn.fetchrow(
                        "SELECT f.message_id, f.after_key, g.audience FROM portal.mail_fanout f "
                        "JOIN portal.mail_messages g ON g.id = f.message_id WHERE NOT f.done "
                        "ORDER BY f.message_id LIMIT 1 FOR UPDATE OF f SKIP LOCKED")
                    if fan is None:
                        return added
                    sql = (_MERCHANT_RECIPIENTS_SQL if fan["audience"] in ("merchant", "merchants")
                           else _MEMBER_RECIPIENTS_SQL)
                    rows = await conn.fetch(sql, fan["message_id"], fan["after_key"])
                    if rows:
                        await conn.executemany(
                            "INSERT INTO portal.mail_outbox(message_id, to_address) VALUES ($1, $2) "
                            "ON CONFLICT DO NOTHING", [(fan["message_id"], r["address"]) for r in rows])
                        added += len(rows)
                    await conn.execute(
                        "UPDATE portal.mail_fanout SET after_key = $2, done = $3 WHERE message_id = $1",
                        fan["message_id"], rows[-1]["k"] if rows else fan["after_key"], len(rows) < FANOUT_PAGE_MAX)
        return added

    async def send_due(self) -> tuple[int, int]:
        """Send the outbox rows that are due, up to SENDS_PER_ROUND_MAX; returns (sent, failed for good)."""
        sent = failed = 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT o.id, o.to_address, o.attempts, g.subject, g.body, sm.name AS sender_name "
                "FROM portal.mail_outbox o JOIN portal.mail_messages g ON g.id = o.message_id "
                "LEFT JOIN loyalty.merchants sm ON sm.merchant_id = g.sender_merchant_id "
                "WHERE o.status = 'pending' AND o.next_attempt_at <= now() ORDER BY o.next_attempt_at "
                f"LIMIT {SENDS_PER_ROUND_MAX} FOR UPDATE OF o SKIP LOCKED")
            self._tried_last = len(rows)
            for r in rows:
                attempts = r["attempts"] + 1
                try:
                    await asyncio.to_thread(self._send, r["to_address"], r["subject"], r["body"], r["sender_name"])
                except (OSError, smtplib.SMTPException, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS_MAX]
                    final = attempts >= self.smtp.attempts_max
                    await conn.execute(
                        "UPDATE portal.mail_outbox SET attempts = $2, last_error = $3, status = $4, "
                        "next_attempt_at = now() + make_interval(secs => $5) WHERE id = $1",
                        r["id"], attempts, error, "failed" if final else "pending", backoff_s(attempts))
                    failed += final
                    log.warning("mail_copy_failed", outbox_id=r["id"], attempts=attempts, final=final,
                                error=type(exc).__name__)
                    continue
                await conn.execute("UPDATE portal.mail_outbox SET attempts = $2, status = 'sent', sent_at = now(), "
                                   "last_error = NULL WHERE id = $1", r["id"], attempts)
                sent += 1
        self.sent_total += sent
        self.failed_total += failed
        return sent, failed

    def _send(self, to_address: str, subject: str, body: str, sender_name: str | None) -> None:
        """One message over SMTP (in a worker thread; bounded by the connection timeout)."""
        msg = EmailMessage()
        msg["From"] = self.smtp.sender
        msg["To"] = to_address
        msg["Subject"] = subject
        msg.set_content(body + ("\n\n-- \n" + sender_name if sender_name else "") + "\n")
        with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=self.smtp.timeout_s) as client:
            if self.smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if self.smtp.username:
                client.login(self.smtp.username, self.smtp.password)
            client.send_message(msg)
