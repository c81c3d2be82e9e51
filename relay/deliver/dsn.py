"""Tell the app's sender: build RFC 3464 delivery status notifications (pure, bytes out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate

from relay.render import headers


@dataclass(frozen=True)
class Failure:
    """One recipient the DSN reports on."""

    recipient: str
    status: str  # enhanced code, e.g. 5.1.1
    diagnostic: str  # the remote reply, e.g. "550 5.1.1 user unknown"
    remote: str  # remote host, or "" when none was reached
    expired: bool = False


def should_notify(mail_from: str, kind: str) -> bool:
    """Never to the null sender, never about a DSN: no loops (RFC 3464 / RFC 5321 6.1)."""
    return bool(mail_from) and kind == "mail"


def build_dsn(
    *,
    hostname: str,
    queue_id: str,
    mail_from: str,
    original: bytes,
    failures: Sequence[Failure],
    arrival: float,
    now: float,
    boundary_seed: str,
) -> bytes:
    """A multipart/report (report-type=delivery-status) returning the original's headers."""
    boundary = f"{queue_id}.{boundary_seed}/{hostname}"
    expired = all(f.expired for f in failures)
    text = [
        f"This is the mail system at host {hostname}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients."
        + (" It stayed in the queue for too long." if expired else ""),
        "",
    ]
    for f in failures:
        text.append(
            f"<{f.recipient}>: {f.diagnostic}" + (f" (host {f.remote})" if f.remote else "")
        )
    per_message = [
        f"Reporting-MTA: dns; {hostname}",
        f"X-Outpost-Queue-ID: {queue_id}",
        f"Arrival-Date: {formatdate(arrival, usegmt=True)}",
    ]
    per_recipient = []
    for f in failures:
        block = [
            f"Final-Recipient: rfc822; {f.recipient}",
            "Action: failed",
            f"Status: {f.status}",
        ]
        if f.remote:
            block.append(f"Remote-MTA: dns; {f.remote}")
        if f.diagnostic:
            block.append(f"Diagnostic-Code: smtp; {f.diagnostic}")
        per_recipient.append("\r\n".join(block))
    original_headers, _ = headers.split(original)
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{mail_from}>",
        "Subject: Undelivered Mail Returned to Sender",
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
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    return head + original_headers.rstrip(b"\r\n") + f"\r\n\r\n--{boundary}--\r\n".encode()
