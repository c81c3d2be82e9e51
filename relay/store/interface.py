"""The store's interface: every async function the rest of Outpost calls, grouped by concern.

A backend (``sqlite.py``, ``postgres.py``) implements all of it; callers type against ``Store``
and get one from ``relay.store.open_store(config.store)``, so nothing outside ``relay/store/``
knows which database holds the data or writes a line of SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from relay.store.model import Event, Lease, NewMessage, Outcome


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
        `lease_until`, and return them. Leases whose expiry passed (their holder died or
        stalled) are due again first: any live node takes them over. Never blocks on, or
        returns, a delivery another node is leasing at the same moment."""
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
        """Recorded events with an id above ``after_id``, in id order (the shape is the API's).

        Gap-safe: event ids become visible in id order (a backend whose writers commit
        concurrently orders their commits), so a reader that keeps the last id it saw never
        misses an event committed later with a lower id."""
        ...

    async def last_event_id(self) -> int:
        """The id of the newest recorded event (0: none yet): where a new reader starts."""
        ...

    # --- suppression

    async def suppressed(self, addresses: Iterable[str], now: float) -> dict[str, str]:
        """Which of these addresses are suppressed now, with the reason."""
        ...

    async def suppress(
        self,
        address: str,
        reason: str,
        now: float,
        expires_at: float | None = None,
        detail: str = "",
    ) -> None: ...

    async def soft_bounces_since(self, address: str, since: float) -> int:
        """Soft bounces (and expiries) of an address since a time: the soft-bounce rule's input."""
        ...

    async def unsuppress(self, address: str, reasons: Sequence[str] | None = None) -> bool:
        """Remove an address (optionally only for these reasons); True if a row went away."""
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
    ) -> list[dict[str, Any]]: ...

    # --- reports in (bounces, complaints, provider webhooks)

    async def delivery_by_id(self, delivery_id: int) -> dict[str, Any] | None:
        """A delivery with its message's ids: what a VERP or tracking token resolves to."""
        ...

    async def delivery_by_message_id(
        self, header_message_id: str, recipient: str
    ) -> dict[str, Any] | None:
        """Find a delivery from a returned message's Message-ID and the failed recipient."""
        ...

    async def remember_webhook(self, provider: str, event_id: str, now: float) -> bool:
        """Record a provider event id; False when it was seen before (a replay)."""
        ...

    async def forget_webhook(self, provider: str, event_id: str) -> None:
        """Undo remember_webhook when the events couldn't be stored (the provider retries)."""
        ...

    # --- queue operations

    async def flush(
        self, now: float, queue_id: str | None = None, domain: str | None = None
    ) -> int:
        """Make waiting deliveries due now (postqueue -f / -i / -s)."""
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
        self, *, state: str | None = None, domain: str | None = None, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """Deliveries not yet final (or of one state), oldest first: the operator's queue view."""
        ...

    async def tracking_stats(
        self, campaign: str | None = None, since: float | None = None, until: float | None = None
    ) -> dict[str, int]:
        """The raw counts behind /api/stats for events in [since, until) (None: unbounded).

        Keys: processed, delivered, bounced, expired, dropped, unsubscribe, complaint (events of
        that type), deferred (deliveries with at least one deferred event), and for open and
        click: <t>_total and <t>_unique (human + proxy hits, and distinct deliveries with one),
        <t>_privacy and <t>_scanner (hits).
        """
        ...

    async def campaign_summaries(
        self, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """One row per campaign ('' = mail sent without one), newest activity first: messages
        received in [since, until), event counts as in tracking_stats for the same window."""
        ...

    async def campaign_exists(self, campaign: str) -> bool: ...

    async def campaign_link_clicks(
        self, campaign: str, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Clicks of one campaign in [since, until) per URL, link index and source group
        ('engaged' = human + proxy, else the source): hits and distinct deliveries."""
        ...

    async def message_history(self, queue_id: str) -> dict[str, Any] | None:
        """A message (without its bytes), its deliveries and all its events in time order."""
        ...
