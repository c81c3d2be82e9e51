"""Accept: read control headers, check suppression, complete headers, queue durably in one go."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import formatdate

from relay.config import AppConfig, Config, StreamsConfig
from relay.learn import scopes
from relay.receive import apps as tenants
from relay.receive import policy, recipients
from relay.render import headers
from relay.store import NewMessage, Store

log = logging.getLogger("outpost.accept")

TRACK_MODES = ("all", "opens", "clicks", "none")
MAX_CAMPAIGN = 200  # characters
MAX_TAGS = 50  # tags per message, each at most MAX_CAMPAIGN characters
_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U


@dataclass(frozen=True)
class Controls:
    campaign: str = ""
    tags: tuple[str, ...] = ()
    track: str = "all"
    stream: str = "transactional"


def display_subject(value: str | None, most: int = 300) -> str:
    """A Subject as people read it: RFC 2047 words decoded, controls gone, shortened."""
    if not value:
        return ""
    try:
        text = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        text = value
    return "".join(c if c.isprintable() else " " for c in text).strip()[:most]


@dataclass(frozen=True)
class Submission:
    """One SMTP transaction as the receive stage hands it over."""

    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    client_addr: str
    helo: str = ""
    auth_user: str = ""
    smtputf8: bool = False
    body_8bit: bool = False
    tls: bool = False
    esmtp: bool = True
    dsn_ret: str = ""  # DSN requests (RFC 3461), '' where not given
    dsn_envid: str = ""
    dsn_recipients: tuple[tuple[str, str, str], ...] = ()  # (recipient, NOTIFY, ORCPT)
    stream: str = ""  # the door's stream (HTTP send field, the app's default); "" = none
    app: str = ""  # the [[apps]] entry it comes from ('' = none): its sender domains apply
    protocol: str = ""  # the Received: 'with' word where not SMTP's (the HTTP door: "HTTP")


@dataclass(frozen=True)
class Queued:
    """What accept kept: the queue id, the Message-ID, and each recipient's role and fate."""

    queue_id: str
    message_id: str
    recipients: tuple[tuple[str, str, str], ...]  # (address, to|cc|bcc, queued|suppressed)


class Rejected(Exception):
    """The message can't be accepted; args[0] is the SMTP reply (the HTTP door answers with
    its text and policy.refusal_reason as the error code)."""


class RateLimited(Rejected):
    """Over the app's rate limit (a 451): it may try again in ``retry_after`` seconds."""

    def __init__(self, reply: str, retry_after: float) -> None:
        super().__init__(reply)
        self.retry_after = retry_after


def limits_of(config: Config) -> policy.Limits:
    """The [relay] limits both doors hold a submission to."""
    r = config.relay
    return policy.Limits(r.max_message_size, r.max_recipients, r.bare_newline)


class _Sequence:
    """The low 25 bits of queue ids: a counter from a random start, drawn anew in every
    process (and after a fork, as the relay's workers are), so two messages of one process
    never share an id. Random bits alone let two accepts in one millisecond collide (one in
    2**25 pairs: seen under load), which failed the whole group commit holding them."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.next = int.from_bytes(os.urandom(4), "big") >> 7

    def take(self) -> int:
        n = self.next
        self.next = (n + 1) & 0x1FFFFFF
        return n


_SEQUENCE = _Sequence()


def new_queue_id(now: float) -> str:
    """Sortable, unique queue id: 9 chars of milliseconds + 5 of a per-process sequence that
    starts at random, Crockford base32."""
    n = (int(now * 1000) << 25) | _SEQUENCE.take()
    out = []
    for _ in range(14):
        out.append(_B32[n & 31])
        n >>= 5
    return "".join(reversed(out))


def read_controls(
    values: Mapping[str, str],
    *,
    default_stream: str = "transactional",
    streams: StreamsConfig | None = None,
) -> Controls:
    """The X-Outpost-* values (from headers.first_values); raises Rejected on a bad one.

    The stream is X-Outpost-Stream, else ``default_stream``; X-Outpost-Track, when absent, is
    the stream's tracking default ([streams] <stream>_track; "all" without a streams config).
    """
    campaign = values.get("x-outpost-campaign", "").strip()
    tags_value = values.get("x-outpost-tags", "")
    tags = tuple(t.strip() for t in tags_value.split(",") if t.strip())
    stream = values.get("x-outpost-stream", default_stream).strip().lower()
    if stream not in scopes.STREAMS:
        raise Rejected(
            f"550 5.6.0 Error: X-Outpost-Stream must be one of {', '.join(scopes.STREAMS)}"
        )
    default_track = streams.track(stream) if streams is not None else "all"
    track = values.get("x-outpost-track", default_track).strip().lower()
    if track not in TRACK_MODES:
        raise Rejected(f"550 5.6.0 Error: X-Outpost-Track must be one of {', '.join(TRACK_MODES)}")
    if len(campaign) > MAX_CAMPAIGN:
        raise Rejected(
            f"550 5.6.0 Error: X-Outpost-Campaign is longer than {MAX_CAMPAIGN} characters"
        )
    if len(tags) > MAX_TAGS:
        raise Rejected(f"550 5.6.0 Error: X-Outpost-Tags holds more than {MAX_TAGS} tags")
    if any(len(t) > MAX_CAMPAIGN for t in tags):
        raise Rejected(
            f"550 5.6.0 Error: an X-Outpost-Tags tag is longer than {MAX_CAMPAIGN} characters"
        )
    return Controls(campaign, tags, track, stream)


def trace_word(text: str, *, ascii_only: bool = True, limit: int = 255) -> str:
    """A client-supplied value made safe for one word of a trace field: no control character
    (CR and LF above all: a header injection), no space, no comment or quoting character, no
    lone surrogate (undecodable bytes); each such character becomes '?'. Bounded in length."""
    out = []
    for ch in text[:limit]:
        code = ord(ch)
        bad = code <= 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF or ch in '()<>\\"'
        out.append("?" if bad or (ascii_only and code > 0x7E) else ch)
    return "".join(out)


def received_field(sub: Submission, *, queue_id: str, hostname: str, now: float) -> bytes:
    """The Received: trace field this hop adds (RFC 5321 4.4); 'for' only with one recipient.

    Every value the client chose (HELO name, recipient) goes through trace_word: whatever the
    receive stage let through, this field is one header and nothing else.
    """
    proto = "UTF8SMTP" if sub.smtputf8 else ("ESMTP" if sub.esmtp else "SMTP")
    if sub.protocol:
        proto = sub.protocol
    elif sub.esmtp:
        proto += ("S" if sub.tls else "") + ("A" if sub.auth_user else "")
    helo = trace_word(sub.helo) or "unknown"
    text = f"from {helo} ([{trace_word(sub.client_addr)}])\r\n\tby {hostname} (Outpost)"
    text += f" with {proto} id {queue_id}"
    if len(sub.recipients) == 1:
        text += f"\r\n\tfor <{trace_word(sub.recipients[0], ascii_only=not sub.smtputf8)}>"
    text += f"; {formatdate(now, usegmt=True)}"
    return headers.field("Received", text)


def complete(
    block: bytes,
    body: bytes,
    values: Mapping[str, str],
    sub: Submission,
    *,
    queue_id: str,
    hostname: str,
    now: float,
) -> tuple[bytes, str]:
    """Add the trace field, and Message-ID and Date when the app left them out (RFC 5322 3.6).

    Returns the message and its Message-ID (the app's, or the one added here).
    """
    added = []
    message_id = values.get("message-id")
    if message_id is None:
        message_id = f"<{queue_id}@{hostname}>"
        added.append(headers.field("Message-ID", message_id))
    if "date" not in values:
        added.append(headers.field("Date", formatdate(now, usegmt=True)))
    if not block:  # a message with no header block at all: start one
        block = b"\r\n"
    block = headers.append(block, *added) if added else block
    trace = received_field(sub, queue_id=queue_id, hostname=hostname, now=now)
    return headers.prepend(block, trace) + body, message_id


class Acceptor:
    """Turns a Submission into a durably queued message and wakes the delivery workers."""

    def __init__(
        self,
        store: Store,
        *,
        hostname: str,
        clock: Callable[[], float] = time.time,
        on_queued: Callable[[], None] = lambda: None,
        streams: StreamsConfig | None = None,
        reject_all_streams: bool = False,
        limits: policy.Limits,
        apps: tenants.Apps | None = None,
    ) -> None:
        self._store = store
        self._limits = limits
        self.apps = apps or tenants.Apps()
        self._hostname = hostname
        self._clock = clock
        self._on_queued = on_queued
        self._streams = streams or StreamsConfig()
        rejecting = set(scopes.STREAMS if reject_all_streams else self._streams.reject_suppressed)
        self._rejecting = frozenset(rejecting)
        self._limited: dict[str, float] = {}  # app -> until when its rate window is used up

    @classmethod
    def for_config(
        cls,
        config: Config,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        on_queued: Callable[[], None] = lambda: None,
    ) -> Acceptor:
        """The accept path as configured: the one both doors (relay, sidecar) build."""
        return cls(
            store,
            hostname=config.relay.hostname,
            clock=clock,
            on_queued=on_queued,
            streams=config.streams,
            reject_all_streams=config.relay.reject_suppressed,
            limits=limits_of(config),
            apps=tenants.Apps(config.apps),
        )

    def session_stream(self, auth_user: str = "") -> str:
        """The stream of a session's mail before its headers say otherwise: [streams] default.

        The per-app default ([[apps]], found by the AUTH user) belongs here.
        """
        return self._streams.default

    async def refusal_at_rcpt(
        self, recipient: str, auth_user: str = "", app: str = ""
    ) -> str | None:
        """The 550 for a recipient suppressed in what is known at RCPT, or None.

        Known at RCPT: the session's stream (the headers come later). So 'all' entries are
        refused there, and 'broadcast' ones when the session's stream is broadcast; campaign and
        list entries need the headers: those recipients are dropped at the end of DATA with a
        'dropped' event naming reason and scope (SMTP can't refuse one recipient after DATA).
        """
        stream = self.session_stream(auth_user)
        if stream not in self._rejecting:
            return None
        found = await self._store.suppressed(
            [recipient], self._clock(), scopes.covering(stream), app
        )
        hit = found.get(recipient.lower())
        if hit is None:
            return None
        return f"550 5.7.1 <{recipient}>: suppressed ({scopes.describe(*hit)})"

    def rate_refusal_now(self, app: AppConfig) -> str | None:
        """The 451 for a new transaction of an app this process already found over its rate
        limit in the current window (so MAIL FROM can say it before the body is sent)."""
        wait = self._limited.get(app.name, 0.0) - self._clock()
        return tenants.rate_refusal(app, wait) if wait > 0 else None

    async def _count_rate(self, app: AppConfig, now: float) -> None:
        """Count the message against the app's rate limit, or raise RateLimited."""
        if not app.rate_limit[0]:
            return
        start, wait = tenants.rate_window(app, now)
        if await self._store.take_rate(f"app:{app.name}", start, app.rate_limit[0]):
            return
        self._limited[app.name] = now + wait
        raise RateLimited(tenants.rate_refusal(app, wait), wait)

    async def queue_local(self, mail_from: str, recipient: str, raw: bytes, kind: str) -> str:
        """Queue a message Outpost wrote itself (a DSN): same durable path, never tracked."""
        now = self._clock()
        queue_id = new_queue_id(now)
        message_id = headers.get(headers.split(raw)[0], "Message-ID") or ""
        await self._store.queue_message(
            NewMessage(
                queue_id=queue_id,
                received_at=now,
                mail_from=mail_from,
                client_addr="127.0.0.1",
                raw=raw,
                recipients=(recipient,),
                helo=self._hostname,
                header_message_id=message_id,
                track="none",
                kind=kind,
                smtputf8=not recipient.isascii(),
                dsn_recipients=((recipient, "NEVER", ""),),  # no notification about a notice
            )
        )
        log.info("queued queue_id=%s from=<%s> nrcpt=1 kind=%s", queue_id, mail_from, kind)
        self._on_queued()
        return queue_id

    async def accept(self, sub: Submission) -> Queued:
        """Queue the message with all its recipients or not at all; say what was kept.

        The one accept path of both doors (SMTP, HTTP send): the receive limits, the app's
        sender domains (envelope and From:) and rate limit, suppression, one durable commit.
        Raises Rejected with the SMTP reply of the first check that fails.
        """
        now = self._clock()
        raw = sub.raw
        reply, raw = policy.check_submission(
            sub.mail_from, sub.recipients, raw, smtputf8=sub.smtputf8, limits=self._limits
        )
        if reply:
            raise Rejected(reply)
        app = self.apps.get(sub.app)
        if app is not None:
            reply = tenants.sender_refusal(app, sub.mail_from)
            if reply:
                raise Rejected(reply)
        block, body = headers.split(raw)
        values = headers.first_values(block)  # the one parse of the header block
        controls = read_controls(
            values,
            default_stream=sub.stream or self.session_stream(sub.auth_user),
            streams=self._streams,
        )
        if app is not None:
            reply = tenants.from_refusal(app, values)
            if reply:
                raise Rejected(reply)
            campaign = tenants.campaign_of(app, controls.campaign)
            controls = Controls(campaign, controls.tags, controls.track, controls.stream)
        list_id = scopes.list_id_of(values.get("list-id", ""))
        queue_id = new_queue_id(now)
        raw, message_id = complete(
            block, body, values, sub, queue_id=queue_id, hostname=self._hostname, now=now
        )
        covering = scopes.covering(controls.stream, controls.campaign, list_id)
        suppressed = await self._store.suppressed(sub.recipients, now, covering, sub.app)
        keep = tuple(r for r in sub.recipients if r.lower() not in suppressed)
        dropped = tuple(
            (r, f"suppressed: {suppressed[r.lower()][0]}", suppressed[r.lower()][1])
            for r in sub.recipients
            if r.lower() in suppressed
        )
        roles = recipients.roles(values, sub.recipients)
        if app is not None:
            await self._count_rate(app, now)  # the last check: a refused message counts not
        await self._store.queue_message(
            NewMessage(
                queue_id=queue_id,
                received_at=now,
                mail_from=sub.mail_from,
                client_addr=sub.client_addr,
                raw=raw,
                recipients=keep,
                dropped=dropped,
                helo=sub.helo,
                auth_user=sub.auth_user,
                header_message_id=message_id,
                campaign=controls.campaign,
                tags=controls.tags,
                track=controls.track,
                smtputf8=sub.smtputf8,
                body_8bit=sub.body_8bit,
                dsn_ret=sub.dsn_ret,
                dsn_envid=sub.dsn_envid,
                dsn_recipients=sub.dsn_recipients,
                stream=controls.stream,
                list_id=list_id,
                roles=roles,
                subject=display_subject(values.get("subject")),
                app=app.name if app is not None else "",
            )
        )
        log.info(
            "queued queue_id=%s from=<%s> nrcpt=%d dropped=%d size=%d client=%s stream=%s",
            queue_id,
            sub.mail_from,
            len(keep),
            len(dropped),
            len(raw),
            sub.client_addr,
            controls.stream,
        )
        for rcpt, reason, scope in dropped:
            log.info(
                "dropped queue_id=%s to=<%s> reason=%r scope=%s", queue_id, rcpt, reason, scope
            )
        if keep:
            self._on_queued()
        fates = tuple(
            (r, roles[r.lower()], "suppressed" if r.lower() in suppressed else "queued")
            for r in sub.recipients
        )
        return Queued(queue_id, message_id, fates)
