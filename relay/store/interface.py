"""The store's interface: every async function the rest of Outpost calls, grouped by concern.

A backend (``sqlite.py``, ``postgres.py``) implements all of it; callers type against
``Store`` and get one from ``relay.store.open_store(config.store)``, so nothing outside
``relay/store/`` knows which database holds the data or writes a line of SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from relay.store.model import Event, Lease, NewMessage, OutboundAttempt, Outcome


class Store(Protocol):
    """What a store backend provides. Times are Unix seconds; every write is durable on return."""

    # --- lifecycle

    async def close(self) -> None: ...

    async def __aenter__(self) -> Store: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def ping(self) -> bool: ...

    # --- accept

    async def queue_message(self, msg: NewMessage) -> int:
        """Store the message, one delivery per recipient and their events; durable on return."""
        ...

    async def record_links(self, message_pk: int, urls: Sequence[str]) -> None:
        """Remember the link targets of a message (the only URLs a click may redirect to)."""
        ...

    # --- leases and results

    async def recover_leases(self, owner: str) -> int:
        """At start, return to the queue the leases ``owner`` (this node) still holds, and those
        taken before leases named their holder: the process that took them is gone. Leases of
        other live nodes are left alone; they expire if their holder died."""
        ...

    async def lease_due_deliveries(
        self,
        now: float,
        limit: int,
        lease_until: float,
        exclude_domains: Sequence[str] = (),
        owner: str = "",
    ) -> list[Lease]:
        """Atomically move up to `limit` due deliveries to 'leased' by `owner` until
        `lease_until`, and return them. Leases of another holder whose expiry passed (it died
        or stalled) are due again first: a live node takes them over."""
        ...

    async def renew_leases(
        self, delivery_ids: Iterable[int], owner: str, lease_until: float
    ) -> list[int]:
        """Extend `owner`'s leases still held on these deliveries (an attempt outlasting
        lease_time); returns the ids of those it still held."""
        ...

    async def message_raw(self, message_pk: int) -> bytes: ...

    async def next_due_at(self) -> float | None:
        """When the earliest queued or deferred delivery becomes due, or the earliest lease
        expires (None: nothing waits)."""
        ...

    async def record_results(self, outcomes: Sequence[Outcome], now: float) -> None:
        """Write attempts, new delivery states and their events (group-committed)."""
        ...

    async def release_leases(self, delivery_ids: Iterable[int], owner: str | None = None) -> None:
        """Give leases back untried (draining at SIGTERM): due again at once, no attempt counted.
        With owner, only leases it still holds (not one another node took over meanwhile)."""
        ...

    # --- deliverability (shaping, warm-up, health pauses)

    async def postpone(self, items: Sequence[tuple[int, float, str]], now: float) -> None:
        """Give leases (id, until, why) back untried, due at `until`: no attempt is counted and
        the wait is not part of the queue lifetime (shaping, warm-up and pauses never expire
        mail)."""
        ...

    async def release_waiting(self, why_prefix: str, now: float) -> int:
        """Make deliveries we hold back for a reason starting so due now (a bucket sped up)."""
        ...

    async def take_daily(self, key: str, day: str, limit: int, n: int) -> int:
        """Take up to n from a day's allowance of `limit` for `key`, atomically: how many."""
        ...

    async def daily_counts(self, key: str, since_day: str = "") -> dict[str, int]:
        """day -> count of one key's allowance used, from since_day on."""
        ...

    async def save_shaping(self, states: Sequence[dict[str, Any]], now: float) -> None:
        """Publish shaping buckets' state (each with a 'bucket' key) for other processes."""
        ...

    async def shaping_states(self) -> list[dict[str, Any]]:
        """The shaping buckets the relay published, by name, with when it last wrote each."""
        ...

    async def pause_sender(self, scope: str, value: str, reason: str, now: float) -> bool:
        """Stop sending mail of a domain or campaign; False when it was paused already."""
        ...

    async def resume_sender(self, scope: str, value: str, now: float) -> bool:
        """An operator's resume: True when a pause in force was lifted."""
        ...

    async def sender_pauses(self, include_resumed: bool = False) -> list[dict[str, Any]]:
        """Pauses in force (and, asked, lifted ones with resumed_at), oldest first."""
        ...

    async def sender_counts(self, since: float, until: float) -> list[dict[str, Any]]:
        """Outcome counts in [since, until) per sending domain, campaign and recipient domain:
        delivered, deferred, hard, soft (bounces and expiries), complaint, open_human."""
        ...

    async def egress_counts(self, since: float, until: float) -> dict[str, dict[str, int]]:
        """Per source address mail left from (the 'egress' of its attempt events): bounced
        (bounces and expiries) and complaint counts of events in [since, until). Reports
        that came later count for the address their delivery left from."""
        ...

    async def count_waiting(self) -> dict[str, int]:
        """Queued deliveries held back by us, per reason (warm-up, shaping, pause)."""
        ...

    # --- events

    async def record_events(self, events: Sequence[Event]) -> None:
        """Group-committed event writes (tracking hits arrive in bursts)."""
        ...

    async def record_tracking(self, events: Sequence[Event]) -> int:
        """Write a batch of tracking events in one transaction; returns how many were written."""
        ...

    async def tracking_targets(self, delivery_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """What a tracking hit needs of each known delivery (unknown ids are left out)."""
        ...

    async def message_links(self, message_pk: int) -> dict[int, str]:
        """Link index -> target URL of one message, as the relay recorded them."""
        ...

    async def events_after(self, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        """Recorded events with an id above ``after_id``, in id order (the shape is the API's)."""
        ...

    async def last_event_id(self) -> int:
        """The id of the newest recorded event (0: none yet): where a new reader starts."""
        ...

    async def first_event_after(self, at: float) -> int:
        """The cursor that replays events recorded at or after ``at``: the id before the first
        of them (the newest id when there is none)."""
        ...

    # --- events out (one cursor per destination; read the feed with events_after)

    async def outbound_open(self, name: str, kind: str, start_id: int, now: float) -> None:
        """Create a destination's cursor at ``start_id`` unless it exists (then unchanged)."""
        ...

    async def outbound_lease(
        self, name: str, owner: str, now: float, until: float
    ) -> dict[str, Any] | None:
        """Take or renew the lease of a destination for ``owner`` until ``until`` and return its
        cursor; None when another owner's lease is still running (or no such cursor)."""
        ...

    async def outbound_release(self, name: str, owner: str) -> None:
        """Give up a lease (clean shutdown): another node may take the destination at once."""
        ...

    async def outbound_record(self, attempt: OutboundAttempt) -> dict[str, Any] | None:
        """Log an attempt, move the cursor and extend the lease, in one transaction; returns
        the cursor after it, or None (nothing moved) when the lease or the epoch is no longer
        the attempt's (a replay meanwhile). A pause stays a pause."""
        ...

    async def outbound_cursor(self, name: str) -> dict[str, Any] | None:
        """One destination's cursor row, read without taking the write lock."""
        ...

    async def outbound_cursors(self) -> list[dict[str, Any]]:
        """Every destination's cursor row, by name."""
        ...

    async def outbound_attempts(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest attempts of a destination, newest first."""
        ...

    async def outbound_set_state(self, name: str, state: str, now: float) -> bool:
        """Operator: 'paused' or 'active' (resume; also after disabled or failing, which
        starts a new retry period). False when there is no such cursor."""
        ...

    async def outbound_rewind(self, name: str, after_id: int, now: float) -> bool:
        """Operator replay: set the cursor to ``after_id`` (a new epoch). False: no cursor."""
        ...

    # --- retention

    async def purge_batch(self, kind: str, before: float, limit: int) -> int:
        """Delete (or, for ``bodies``, cut to the header block) at most ``limit`` rows of one
        kind older than ``before``, in one short transaction; how many. Kinds: bodies (of
        messages whose deliveries are all final, last tried before), events, deliveries (final
        ones, with their attempts; a message left with none goes too), attempts,
        webhook_replay (provider event ids), outbound_attempts. The dashboard's hourly counters
        are kept, so all-time stats stay what they were."""
        ...

    async def compact(self) -> int:
        """Give free pages back to the file system where the backend can do so in small steps
        (SQLite: incremental vacuum, on stores created with it); pages freed."""
        ...

    # --- access and erasure (privacy)

    async def privacy_export(self, address: str) -> dict[str, Any]:
        """Everything the store holds that names an address (an access request), by table:
        deliveries, messages_sent, attempts, events, links, suppressions (``erased`` true for
        one kept under its hash), tracking_optouts, unmatched_reports."""
        ...

    async def privacy_erase(self, address: str, now: float) -> dict[str, int]:
        """Delete or anonymise every row that names an address (an erasure request): messages
        it alone received, its deliveries, events, links and reports; other messages naming it
        get a placeholder address. Its suppressions stay, under a salted hash that the
        suppression check still finds. Rows removed or changed, by table."""
        ...

    # --- suppression

    async def suppressed(
        self,
        addresses: Iterable[str],
        now: float,
        scopes: Sequence[str] = ("all",),
        app: str = "",
    ) -> dict[str, tuple[str, str]]:
        """Which of these addresses an entry of one of these scopes stops now for mail of
        ``app``: global entries (app '') and that app's own. address -> (reason, scope), the
        entry of the earliest scope listed when several match, a global one before the app's
        (relay.learn.scopes.covering gives a message's scopes, strongest first)."""
        ...

    async def suppress(
        self,
        address: str,
        reason: str,
        now: float,
        expires_at: float | None = None,
        detail: str = "",
        scope: str = "all",
        app: str = "",
    ) -> None:
        """One entry per (address, scope, app); app '' stops every app's mail, a name only
        that app's. A temporary entry never replaces a permanent one."""
        ...

    async def soft_bounces_since(self, address: str, since: float) -> int:
        """Soft bounces (and expiries) of an address since a time: the soft-bounce rule's input."""
        ...

    async def unsuppress(
        self,
        address: str,
        reasons: Sequence[str] | None = None,
        scope: str | None = None,
        app: str | None = None,
    ) -> bool:
        """Remove an address (optionally only for these reasons, only this scope's entry, or
        only the entries of this app, '' = the global ones); True if a row went away."""
        ...

    async def list_suppressions(
        self,
        *,
        now: float,
        reason: str | None = None,
        search: str | None = None,
        limit: int = 100,
        offset: int = 0,
        include_expired: bool = False,
        scope: str | None = None,
        apps: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Entries (address, scope, app, reason, detail, created_at, expires_at), by address;
        with ``apps``, only entries of those apps ('' = the global ones)."""
        ...

    # --- tracking opt-outs (relay.learn.optout gives the stored form: lowercase)

    async def add_tracking_optout(self, target: str, now: float, detail: str = "") -> bool:
        """Mark an address or a domain "no tracking"; False when it was already marked."""
        ...

    async def remove_tracking_optout(self, target: str) -> bool:
        """Track it again; True if an entry went away."""
        ...

    async def list_tracking_optouts(
        self, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Entries (target, created_at, detail), by target."""
        ...

    async def tracking_opted_out(self, recipients: Iterable[str]) -> set[str]:
        """Which of these recipients (lowercased) an opt-out of their address or domain covers."""
        ...

    # --- reports in (bounces, complaints, provider webhooks)

    async def delivery_by_id(self, delivery_id: int) -> dict[str, Any] | None:
        """A delivery with its message's ids: what a VERP or tracking token resolves to.

        Keys: delivery_id, message_pk, queue_id, recipient, state, campaign, kind, mail_from,
        received_at, stream, and the DSN request: dsn_notify, dsn_orcpt, dsn_ret, dsn_envid."""
        ...

    async def delivery_event_count(self, delivery_id: int, types: Sequence[str]) -> int:
        """How many events of these types a delivery has (e.g. reports already taken in)."""
        ...

    async def delivery_by_message_id(
        self, header_message_id: str, recipient: str
    ) -> dict[str, Any] | None:
        """Find a delivery from a returned message's Message-ID and the failed recipient."""
        ...

    async def deliveries_to(self, recipient: str, limit: int = 50) -> list[dict[str, Any]]:
        """A recipient's latest deliveries, newest first, shaped like delivery_by_id."""
        ...

    async def recent_delivery_to(self, recipient: str, since: float) -> dict[str, Any] | None:
        """The newest delivery to this address that was tried since then (as delivery_by_id)."""
        ...

    async def record_unmatched(
        self, at: float, kind: str, recipient: str, details: dict[str, Any]
    ) -> None:
        """Keep a report that names no delivery of ours (kind: bounced | complaint)."""
        ...

    async def list_unmatched(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Unmatched reports, newest first: id, at, kind, recipient, details."""
        ...

    async def remember_webhook(self, provider: str, event_id: str, now: float) -> bool:
        """Record a provider event id; False when it was seen before (a replay)."""
        ...

    async def forget_webhook(self, provider: str, event_id: str) -> None:
        """Undo remember_webhook when the events couldn't be stored (the provider retries)."""
        ...

    # --- queue operations

    async def flush(
        self,
        now: float,
        queue_id: str | None = None,
        domain: str | None = None,
        app: str | None = None,
    ) -> int:
        """Make waiting deliveries due now (postqueue -f / -i / -s); with ``app``, only those
        of that app's messages."""
        ...

    async def hold(self, queue_id: str) -> int:
        """Set waiting deliveries of a message aside (postsuper -h); in-flight ones finish."""
        ...

    async def release(self, queue_id: str, now: float) -> int:
        """Put held deliveries back in the queue, due now (postsuper -H)."""
        ...

    async def delete(self, queue_id: str, now: float) -> int:
        """Stop delivering a message (postsuper -d): waiting deliveries become 'dropped' (with
        an event, so history and stats stay whole); deliveries in flight finish."""
        ...

    async def pause(self, now: float, domain: str | None = None) -> None:
        """Stop leasing deliveries for a domain, or for everything (domain None)."""
        ...

    async def resume(self, domain: str | None = None) -> int: ...

    async def paused(self) -> list[str]: ...

    # --- stats and admin queries

    async def delivery_states(self, queue_id: str) -> dict[str, str]:
        """recipient -> state for one message."""
        ...

    async def count_deliveries(self) -> dict[str, int]: ...

    async def attempts_for(self, queue_id: str) -> list[dict[str, Any]]: ...

    async def list_deliveries(
        self,
        *,
        state: str | None = None,
        domain: str | None = None,
        limit: int = 10_000,
        app: str | None = None,
    ) -> list[dict[str, Any]]:
        """Deliveries not yet final (or of one state), oldest first: the operator's queue view.

        From here on, ``app`` (None = every app) limits a query to the messages of one app
        (messages.app) and to what belongs to them: deliveries, events, counts."""
        ...

    # --- the apps' rate limits (both doors)

    async def take_rate(self, key: str, window_start: float, limit: int) -> bool:
        """Count one message against ``key``'s allowance of ``limit`` in the fixed window that
        starts at ``window_start`` (a count of an earlier window is forgotten): True when it
        was within the allowance and is counted, False (nothing counted) when it is used up."""
        ...

    # --- the HTTP send door's Idempotency-Key (per app)

    async def idempotency_claim(
        self, app: str, key: str, now: float, since: float
    ) -> tuple[int, str] | None:
        """Claim (app, key) for a first request (None), or return the answer kept for it:
        (status, body), status 0 while the first request is still being answered. Entries
        created before ``since`` are forgotten first."""
        ...

    async def idempotency_answer(self, app: str, key: str, status: int, body: str) -> None:
        """Keep the answer of a claimed key; status 0 forgets the claim (a retry runs again)."""
        ...

    async def tracking_stats(
        self,
        campaign: str | None = None,
        since: float | None = None,
        until: float | None = None,
        app: str | None = None,
    ) -> dict[str, int]:
        """The raw counts behind /api/stats for events in [since, until) (None: unbounded).

        Keys: processed, delivered, bounced, expired, dropped, unsubscribe, complaint (events of
        that type), deferred (deliveries with at least one deferred event), and for open and
        click: <t>_total and <t>_unique (human + proxy hits, and distinct deliveries with one),
        <t>_privacy and <t>_scanner (hits).
        """
        ...

    async def campaign_summaries(
        self, since: float | None = None, until: float | None = None, app: str | None = None
    ) -> list[dict[str, Any]]:
        """One row per campaign ('' = mail sent without one), newest activity first: messages
        received in [since, until), event counts as in tracking_stats for the same window."""
        ...

    async def campaign_exists(self, campaign: str, app: str | None = None) -> bool:
        """Has a message (of ``app``) been received with this campaign?"""
        ...

    async def campaign_link_clicks(
        self,
        campaign: str,
        since: float | None = None,
        until: float | None = None,
        app: str | None = None,
    ) -> list[dict[str, Any]]:
        """Clicks of one campaign in [since, until) per URL, link index and source group
        ('engaged' = human + proxy, else the source): hits and distinct deliveries."""
        ...

    async def message_history(self, queue_id: str) -> dict[str, Any] | None:
        """A message (without its bytes), its deliveries and all its events in time order."""
        ...

    # --- dashboard (counters kept as events are written; searches)

    async def event_hours(
        self, campaign: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Event counts per hour, type and source, of one campaign or (None) of all mail, for
        the hours that overlap [since, until): ``hour`` (Unix seconds / 3600), ``type``,
        ``source``, ``n`` (events) and ``first`` (events that were their delivery's first
        deferral, or first human/proxy open or click)."""
        ...

    async def campaign_hour_totals(
        self, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Per campaign, type and source, the sums of event_hours over the window, with the
        first and last hour that had events: ``campaign, type, source, n, first, first_hour,
        last_hour``."""
        ...

    async def campaign_facets(self, campaign: str, facet: str) -> list[dict[str, Any]]:
        """A campaign's counts by ``facet``: 'domain' (kind = delivered | deferred | bounced |
        expired), 'reason' (bounces; kind = hard | soft), 'client' | 'os' | 'device' (human and
        proxy opens and clicks; kind = open | click). Rows: ``value, kind, n``, largest first."""
        ...

    async def search_messages(
        self, query: str, limit: int = 50, app: str | None = None
    ) -> list[dict[str, Any]]:
        """Messages whose queue id or Message-ID is ``query``, that went to the address
        ``query``, or whose Subject contains it (case-insensitive), newest first."""
        ...

    async def recipient_history(
        self, address: str, limit: int = 500, app: str | None = None
    ) -> dict[str, Any]:
        """Every delivery to an address (newest first, with its message) and its events."""
        ...

    async def campaign_deliveries(
        self,
        campaign: str,
        after: tuple[float, int] = (0.0, 0),
        limit: int = 500,
        app: str | None = None,
    ) -> list[dict[str, Any]]:
        """The deliveries of a campaign's messages received after ``after`` = (received_at,
        message_pk) of the last row already read, up to ``limit`` messages, in that order;
        each with its human/proxy open and click counts (pages of a CSV export)."""
        ...

    async def bounce_events(
        self, since: float | None = None, until: float | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Bounces in [since, until), newest first: ``at, queue_id, recipient, campaign,
        bounce_type, reason, status, text, remote``."""
        ...

    async def waiting_deliveries(
        self, limit: int = 1000, app: str | None = None
    ) -> list[dict[str, Any]]:
        """Deferred and held deliveries, oldest first, with their last reply (the queue page):
        the keys of list_deliveries plus ``last_code`` and ``last_remote``."""
        ...
