"""A small, believable store for dashboard tests and screenshots: three campaigns over three days.

Written through the Store API (queue, deliver, record tracking events as the tracker would, with
the classifier's sources and the UA attribution), so every counter is maintained as in service.
"""

from __future__ import annotations

import random
import time

from relay.config import StoreConfig
from relay.store import Event, NewMessage, Outcome, Result, open_store
from sidecar.clients import attribute

XSS = "<script>alert(1)</script>"
CAMPAIGNS = ("spring-sale", "weekly-digest", XSS)
DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "example.org", "gmx.de")
PEOPLE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Mobile/15E148",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.9.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Mobile/15E148",
)
PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
LINKS = (
    "https://shop.example.com/sale?utm_source=mail&id=1",
    "https://shop.example.com/new-arrivals",
    "https://blog.example.com/how-we-ship",
    "https://example.com/account",
)


async def build(
    store_config: StoreConfig, messages: int = 240, seed: int = 7
) -> dict[str, list[str]]:
    """Fill the store (either backend); returns campaign -> queue ids."""
    rng = random.Random(seed)
    now = time.time()
    out: dict[str, list[str]] = {c: [] for c in CAMPAIGNS}
    async with await open_store(store_config, durable=False) as store:
        for i in range(messages):
            campaign = CAMPAIGNS[0 if i % 5 < 3 else (1 if i % 5 == 3 else 2)]
            sent = now - 3 * 86400 + (i / messages) * 3 * 86400 - rng.random() * 3600
            qid = f"DEMO{i:05d}"
            rcpts = tuple(
                f"user{i}-{k}@{rng.choice(DOMAINS)}" for k in range(rng.choice((1, 1, 2, 3)))
            )
            pk = await store.queue_message(
                NewMessage(
                    queue_id=qid,
                    received_at=sent,
                    mail_from="news@shop.example.com",
                    client_addr="127.0.0.1",
                    raw=b"From: news@shop.example.com\r\nSubject: demo\r\n\r\nhello\r\n",
                    recipients=rcpts,
                    header_message_id=f"<{qid}@shop.example.com>",
                    campaign=campaign,
                    subject=f"{campaign}: issue {i}",
                )
            )
            await store.record_links(pk, list(LINKS))
            out[campaign].append(qid)
            leases = [
                lease
                for lease in await store.lease_due_deliveries(now, 100, now + 60)
                if lease.queue_id == qid
            ]
            outcomes = []
            for lease in leases:
                roll = rng.random()
                if roll < 0.06:
                    res = Result(5, 550, "5.1.1", "user unknown", "mx." + lease.domain)
                    outcomes.append(
                        Outcome(lease, res, "bounced", 0.0, _bounce("hard", "userunknown"))
                    )
                elif roll < 0.09:
                    res = Result(5, 552, "5.2.2", "mailbox full", "mx." + lease.domain)
                    outcomes.append(
                        Outcome(lease, res, "bounced", 0.0, _bounce("soft", "mailboxfull"))
                    )
                elif roll < 0.13:
                    res = Result(4, 451, "4.7.0", "try again later", "mx." + lease.domain)
                    outcomes.append(Outcome(lease, res, "deferred", now + 600))
                else:
                    res = Result(2, 250, "2.0.0", "ok", "mx." + lease.domain)
                    outcomes.append(Outcome(lease, res, "delivered", 0.0))
            await store.record_results(outcomes, sent + 5)
            hits = []
            for o in outcomes:
                if o.state != "delivered":
                    continue
                lease = o.lease
                base = (pk, lease.delivery_id, lease.recipient, campaign)
                if rng.random() < 0.25:  # Apple MPP style prefetch
                    hits.append(
                        _hit("open", sent + 40, base, "privacy", "bare-mozilla", "Mozilla/5.0")
                    )
                if rng.random() < 0.04:
                    hits.append(_hit("open", sent + 8, base, "scanner", "scanner-ua", "Barracuda"))
                    hits.append(
                        _hit("click", sent + 9, base, "scanner", "scanner-ua", "Barracuda", 0)
                    )
                if rng.random() < 0.5:
                    ua = PROXY if rng.random() < 0.2 else rng.choice(PEOPLE)
                    source = "proxy" if ua == PROXY else "human"
                    at = sent + rng.expovariate(1 / 7200.0) + 60
                    for k in range(rng.choice((1, 1, 2))):
                        hits.append(_hit("open", at + k * 900, base, source, "default", ua))
                    if rng.random() < 0.3:
                        link = rng.choice((0, 0, 1, 2, 3))
                        hits.append(_hit("click", at + 30, base, "human", "default", ua, link))
            if hits:
                await store.record_tracking(hits)
    return out


def _bounce(kind: str, reason: str) -> dict[str, str]:
    return {"bounce_type": kind, "reason": reason}


def _hit(
    kind: str,
    at: float,
    base: tuple[int, int, str, str],
    source: str,
    rule: str,
    ua: str,
    link: int | None = None,
) -> Event:
    details: dict[str, object] = {
        "source": source,
        "rule": rule,
        "ua": ua,
        "ip": "192.0.2.10",
        "client": dict(attribute(ua)),
    }
    if link is not None:
        details["link"] = link
        details["url"] = LINKS[link]
    pk, did, rcpt, campaign = base
    return Event(kind, min(at, time.time()), pk, did, rcpt, campaign, details)
