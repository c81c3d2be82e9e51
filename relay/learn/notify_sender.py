"""Tell the app's sender: one RFC 3464 DSN per failed message, at delivery time or reported later.

A synchronous bounce or an expiry (relay.app) and a bounce or complaint that arrives after the
message was delivered (VERP mail, ``/ingest/dsn``, provider webhooks) produce the same DSN
(relay.deliver.dsn.build_dsn) to the message's envelope sender, never to the null sender and
never about a DSN. A late report produces one only for a delivery of ours that the sender has not
heard about yet: not one that bounced or expired at delivery (it got its DSN then), and not
twice for the same delivery and kind of report.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from relay.config import BouncesConfig
from relay.deliver.dsn import Notice, build_dsn, notice_action, should_notify
from relay.store import Event, Store

log = logging.getLogger("outpost.notify")

# (mail_from, recipient, raw, kind) -> queue id: how a DSN is queued (pipeline.Acceptor.queue_local)
QueueLocal = Callable[[str, str, bytes, str], Awaitable[str]]


@dataclass(frozen=True)
class About:
    """The message a DSN reports on."""

    message_pk: int
    queue_id: str
    mail_from: str
    kind: str
    received_at: float


async def tell_sender(
    store: Store,
    queue_local: QueueLocal,
    *,
    hostname: str,
    about: About,
    failures: Sequence[Notice],
    now: float,
    seed: str,
    action: str = "failed",
    ret: str = "",
    envid: str = "",
) -> str | None:
    """Queue the DSN about these failures of one message; its queue id, or None (not sent)."""
    if not failures or not should_notify(about.mail_from, about.kind):
        return None
    original = await store.message_raw(about.message_pk)
    dsn = build_dsn(
        hostname=hostname,
        queue_id=about.queue_id,
        mail_from=about.mail_from,
        original=original,
        failures=failures,
        arrival=about.received_at,
        now=now,
        boundary_seed=seed,
        action=action,
        ret=ret,
        envid=envid,
    )
    queue_id = await queue_local("", about.mail_from, dsn, "dsn")
    log.info(
        "dsn queue_id=%s about=%s action=%s to=<%s>",
        queue_id,
        about.queue_id,
        action,
        about.mail_from,
    )
    return queue_id


def late_failure(event: Event, orcpt: str = "") -> Notice:
    """What a late bounce or complaint event says, as one DSN recipient block (with the ORCPT
    the sender gave for that recipient)."""
    d = event.details
    if event.type == "complaint":
        kind = str(d.get("feedback_type") or "abuse")
        text = f"550 5.7.1 the recipient reported this message ({kind} complaint)"
        return Notice(event.recipient, "5.7.1", text, "", orcpt=orcpt)
    status = str(d.get("status") or ("5.0.0" if d.get("bounce_type") == "hard" else "4.0.0"))
    if not status.startswith("5"):  # a report after delivery is final for this message
        status = "5" + status[1:] if len(status) > 1 else "5.0.0"
    text = str(d.get("diagnostic") or d.get("text") or d.get("reason") or "reported after delivery")
    return Notice(event.recipient, status, text, str(d.get("remote") or ""), orcpt=orcpt)


class LateNotifier:
    """Late reports to DSNs: ``select`` before the events are recorded, ``send`` after."""

    def __init__(self, hostname: str, config: BouncesConfig, queue_local: QueueLocal) -> None:
        self._hostname = hostname
        self._config = config
        self._queue_local = queue_local

    def _wanted(self, event_type: str) -> bool:
        if event_type == "bounced":
            return self._config.notify_sender and self._config.notify_late
        if event_type == "complaint":
            return self._config.notify_sender and self._config.notify_complaints
        return False

    async def select(
        self, store: Store, events: Sequence[Event]
    ) -> list[tuple[Event, dict[str, Any]]]:
        """The events the sender should hear about, each with its delivery."""
        out: list[tuple[Event, dict[str, Any]]] = []
        seen: set[tuple[int, str]] = set()
        for e in events:
            if e.delivery_id is None or not self._wanted(e.type):
                continue
            if (e.delivery_id, e.type) in seen:
                continue
            delivery = await store.delivery_by_id(e.delivery_id)
            if delivery is None or delivery["recipient"].lower() != e.recipient.lower():
                continue  # not one of our deliveries, or a report about someone else
            if delivery["state"] in ("bounced", "expired", "dropped"):
                continue  # told at delivery time, or never sent
            if notice_action("bounced", delivery["dsn_notify"], False, False, True) is None:
                continue  # the sender asked for no failure notices (NOTIFY=NEVER, SUCCESS, ...)
            if await store.delivery_event_count(e.delivery_id, [e.type]):
                continue  # an earlier report of this kind already told the sender
            seen.add((e.delivery_id, e.type))
            out.append((e, delivery))
        return out

    async def send(
        self, store: Store, selected: Sequence[tuple[Event, dict[str, Any]]], now: float
    ) -> list[str]:
        """One DSN per message, naming its recipients the reports were about."""
        by_message: dict[int, list[tuple[Event, dict[str, Any]]]] = {}
        for e, delivery in selected:
            by_message.setdefault(int(delivery["message_pk"]), []).append((e, delivery))
        sent = []
        for message_pk, group in by_message.items():
            d = group[0][1]
            about = About(message_pk, d["queue_id"], d["mail_from"], d["kind"], d["received_at"])
            queue_id = await tell_sender(
                store,
                self._queue_local,
                hostname=self._hostname,
                about=about,
                failures=[late_failure(e, str(dl.get("dsn_orcpt") or "")) for e, dl in group],
                now=now,
                seed=f"late.{d['delivery_id']}",
                ret=str(d.get("dsn_ret") or ""),
                envid=str(d.get("dsn_envid") or ""),
            )
            if queue_id is not None:
                sent.append(queue_id)
        return sent
