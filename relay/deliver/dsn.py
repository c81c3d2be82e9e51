"""Tell the app's sender: build RFC 3464 delivery status notifications (pure, bytes out).

Which notices a recipient gets follows its DSN request (RFC 3461): NOTIFY=NEVER none, FAILURE
(also when NOTIFY was not given) a failure notice, DELAY one notice at the first deferral,
SUCCESS a notice on delivery, unless the next hop took the request (it offers DSN: notifying is
then its job). RET=FULL returns the whole message, otherwise its headers; ENVID and ORCPT come
back as Original-Envelope-Id and Original-Recipient.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate

from relay.render import headers

ACTIONS = ("failed", "delayed", "delivered", "relayed")


@dataclass(frozen=True)
class Notice:
    """One recipient a DSN reports on."""

    recipient: str
    status: str  # enhanced code, e.g. 5.1.1
    diagnostic: str  # the remote reply, e.g. "550 5.1.1 user unknown"
    remote: str  # remote host, or "" when none was reached
    expired: bool = False
    orcpt: str = ""  # the ORCPT parameter as given (addr-type;xtext)


def should_notify(mail_from: str, kind: str) -> bool:
    """Never to the null sender, never about a DSN: no loops (RFC 3464 / RFC 5321 6.1)."""
    return bool(mail_from) and kind == "mail"


def notice_action(
    state: str, notify: str, first_attempt: bool, passed_on: bool, final: bool
) -> str | None:
    """The DSN action this outcome calls for under NOTIFY (RFC 3461 5.2), or None."""
    wanted = set(notify.split(",")) if notify else {"FAILURE"}
    if state in ("bounced", "expired"):
        return "failed" if "FAILURE" in wanted else None
    if state == "deferred":
        return "delayed" if "DELAY" in wanted and first_attempt else None
    if state == "delivered" and "SUCCESS" in wanted and not passed_on:
        return "delivered" if final else "relayed"
    return None


def xtext_decode(text: str) -> str:
    """RFC 3461 xtext: '+XX' is the character 0xXX."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _original_recipient(orcpt: str) -> str:
    kind, _, address = orcpt.partition(";")
    decoded = xtext_decode(address)
    plain = decoded.isascii() and decoded.isprintable()  # never a CR/LF into the report
    return f"{kind}; {decoded if plain else address}"


_WORDING = {
    "failed": (
        "Undelivered Mail Returned to Sender",
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.",
        "Undelivered Message",
    ),
    "delayed": (
        "Delayed Mail (still being retried)",
        "This is a warning only: your message has not been delivered yet\r\n"
        "to the recipients below. It is still being retried; do not send it again.",
        "Delayed Message",
    ),
    "delivered": (
        "Successful Mail Delivery Report",
        "Your message was delivered to the recipients below.",
        "Delivered Message",
    ),
    "relayed": (
        "Successful Mail Delivery Report",
        "Your message was passed on to the recipients' servers below, which\r\n"
        "send no delivery notifications: this is the last notice about them.",
        "Relayed Message",
    ),
}


def build_dsn(
    *,
    hostname: str,
    queue_id: str,
    mail_from: str,
    original: bytes,
    failures: Sequence[Notice],
    arrival: float,
    now: float,
    boundary_seed: str,
    action: str = "failed",
    ret: str = "",
    envid: str = "",
) -> bytes:
    """A multipart/report (report-type=delivery-status): headers returned, or all with RET=FULL."""
    subject, intro, returned = _WORDING[action]
    boundary = f"{queue_id}.{boundary_seed}/{hostname}"
    expired = action == "failed" and all(f.expired for f in failures)
    text = [
        f"This is the mail system at host {hostname}.",
        "",
        intro + (" It stayed in the queue for too long." if expired else ""),
        "",
    ]
    for f in failures:
        text.append(
            f"<{f.recipient}>: {f.diagnostic}" + (f" (host {f.remote})" if f.remote else "")
        )
    per_message = [f"Reporting-MTA: dns; {hostname}"]
    if envid:
        per_message.append(f"Original-Envelope-Id: {envid}")
    per_message += [
        f"X-Outpost-Queue-ID: {queue_id}",
        f"Arrival-Date: {formatdate(arrival, usegmt=True)}",
    ]
    per_recipient = []
    for f in failures:
        block = [f"Original-Recipient: {_original_recipient(f.orcpt)}"] if f.orcpt else []
        block += [
            f"Final-Recipient: rfc822; {f.recipient}",
            f"Action: {action}",
            f"Status: {f.status}",
        ]
        if f.remote:
            block.append(f"Remote-MTA: dns; {f.remote}")
        if f.diagnostic:
            block.append(f"Diagnostic-Code: smtp; {f.diagnostic}")
        per_recipient.append("\r\n".join(block))
    if ret == "FULL":
        third = ["Content-Description: " + returned, "Content-Type: message/rfc822"]
        content = original.rstrip(b"\r\n")
    else:
        third = [f"Content-Description: {returned} Headers", "Content-Type: text/rfc822-headers"]
        content = headers.split(original)[0].rstrip(b"\r\n")
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{mail_from}>",
        f"Subject: {subject}",
        f"Date: {formatdate(now, usegmt=True)}",
        f"Message-ID: <{queue_id}.dsn.{boundary_seed}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *text,
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        "\r\n".join(per_message),
        "",
        "\r\n\r\n".join(per_recipient),
        "",
        f"--{boundary}",
        *third,
        "",
    ]
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    return head + content + f"\r\n\r\n--{boundary}--\r\n".encode()
