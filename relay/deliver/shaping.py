"""Traffic shaping per destination bucket: token buckets, throttle detection, adaptive rates.

Destinations are grouped into buckets by MX provider (built-in rules for the large ones,
[[shaping]] entries over them). Each bucket spends tokens at its current rate (messages per
minute and per hour, GCRA so that a batch learns when each message may go). A throttling reply
halves the bucket's rate for a cooldown, then it comes back a step at a time (AIMD). The clock
is always passed in: nothing here reads the time or sleeps.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.config import ShapingConfig
from relay.deliver.routes import domain_matches, host_suffix_matches
from relay.store import Result

# Built-in buckets for the large mailbox providers, by the names their MX hosts end in.
# Rates are per bucket (all of Outpost's mail to that provider), conservative for one IP.
BUILTIN: tuple[ShapingConfig, ...] = (
    ShapingConfig(
        name="google",
        mx_suffixes=("google.com", "googlemail.com"),
        max_connections=10,
        per_minute=600,
        connect_error_delay=60.0,
    ),
    ShapingConfig(
        name="microsoft",
        mx_suffixes=("outlook.com", "hotmail.com"),
        max_connections=5,
        per_minute=300,
        connect_error_delay=60.0,
    ),
    ShapingConfig(
        name="yahoo",
        mx_suffixes=("yahoodns.net", "yahoo.com"),
        max_connections=5,
        per_minute=300,
        connect_error_delay=60.0,
    ),
    ShapingConfig(
        name="apple",
        mx_suffixes=("icloud.com",),
        max_connections=5,
        per_minute=300,
        connect_error_delay=60.0,
    ),
)
DEFAULT = ShapingConfig(name="default")  # every other destination, each its own bucket
REACTION_GAP = 10.0  # throttles this close to the last decrease are the same episode
RECOVER_INTERVAL = 60.0  # after the cooldown, one additive step per interval
MAX_DOMAINS = 1000  # destinations remembered per bucket (for reports), not a limit on mail
IDLE_FORGET = 3600.0  # an unused default bucket with nothing to remember is dropped after this

_THROTTLE_TEXT = re.compile(
    r"rate.?limit|too many (messages|connections|recipients|mails)|throttl|unexpected volume"
    r"|temporarily rate|\bTSS0\d|4\.7\.28|4\.7\.650|4\.7\.66\b|reduce .*rate",
    re.IGNORECASE,
)
_GREYLIST = re.compile(r"gr[ae]y.?list", re.IGNORECASE)


def rules(overrides: Sequence[ShapingConfig]) -> tuple[ShapingConfig, ...]:
    """[[shaping]] entries first (an entry named like a built-in replaces it, keeping the
    built-in's matching when it lists none), then the remaining built-ins, then default."""
    builtin = {b.name: b for b in BUILTIN}
    out: list[ShapingConfig] = []
    default = DEFAULT
    for rule in overrides:
        base = builtin.pop(rule.name, None)
        if base is not None and not (rule.mx_suffixes or rule.domains):
            rule = dataclasses.replace(rule, mx_suffixes=base.mx_suffixes, domains=base.domains)
        if rule.name == "default":
            default = rule
            continue
        out.append(rule)
    return (*out, *builtin.values(), default)


def classify(
    table: Sequence[ShapingConfig], domain: str, mx_hosts: Sequence[str]
) -> tuple[ShapingConfig, str]:
    """The rule for a recipient domain (given its MX host names) and the bucket's name.

    A rule's bucket is shared by every destination it matches; the default rule gives each
    recipient domain a bucket of its own ("default:" + domain).
    """
    for rule in table:
        if rule.name == "default":
            break
        if rule.domains and domain_matches(domain, rule.domains):
            return rule, rule.name
        if rule.mx_suffixes and any(host_suffix_matches(h, rule.mx_suffixes) for h in mx_hosts):
            return rule, rule.name
    return table[-1], f"default:{domain}"


def is_throttle(result: Result) -> bool:
    """A receiver asking us to slow down: 421 ("try again later, closing"), 451 4.7.x, or a
    rate-limit text with any 4xx (Gmail 4.7.28, Microsoft 4.7.650, Yahoo TSS04, ...).

    Not throttling: our own connection trouble (4.4.x), local TLS/AUTH failures, greylisting
    (a once-per-sender delay the retry schedule handles), a plain 451 4.3.0.
    """
    if result.cls != 4 or result.status.startswith("4.4."):
        return False
    if result.status == "4.7.4" or result.text.startswith("smarthost "):
        return False
    if _GREYLIST.search(result.text):
        return False
    if result.code == 421 or (result.code == 451 and result.status.startswith("4.7.")):
        return True
    return bool(_THROTTLE_TEXT.search(result.text))


def is_connect_error(result: Result) -> bool:
    return result.cls == 4 and result.status in ("4.4.1", "4.4.2")


@dataclass
class _Gcra:
    """One token bucket (generic cell rate algorithm): `rate` per `period`, `burst` at once."""

    tat: float = 0.0  # theoretical arrival time of the next message

    @staticmethod
    def earliest(tat: float, interval: float, burst: int, now: float) -> float:
        return max(now, tat - interval * (burst - 1))


@dataclass
class Bucket:
    """One bucket's live state."""

    name: str
    rule: ShapingConfig
    rate: float  # messages per minute now; 0 = no limit
    ceiling: float  # the rate it recovers to (configured, or what it ran at when throttled)
    reason: str = "configured"
    changed_at: float = 0.0
    cooldown_until: float = 0.0
    next_step_at: float = 0.0
    blocked_until: float = 0.0
    last_decrease: float = float("-inf")
    throttles: int = 0
    minute: _Gcra = field(default_factory=_Gcra)
    hour: _Gcra = field(default_factory=_Gcra)
    sent: deque[float] = field(default_factory=deque)
    domains: set[str] = field(default_factory=set)
    last_used: float = 0.0
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20))

    def burst(self) -> int:
        if self.rule.burst:
            return self.rule.burst
        return max(1, int(self.rate / 10))

    def state(self) -> dict[str, Any]:
        """What the API, metrics and `outpostctl shaping show` report."""
        r = self.rule
        return {
            "bucket": self.name,
            "rule": r.name,
            "rate_per_minute": self.rate,
            "configured_per_minute": r.per_minute,
            "per_hour": r.per_hour,
            "max_connections": r.max_connections,
            "max_per_connection": r.max_per_connection,
            "reason": self.reason,
            "changed_at": self.changed_at,
            "cooldown_until": self.cooldown_until,
            "blocked_until": self.blocked_until,
            "throttles": self.throttles,
            "domains": sorted(self.domains)[:50],
            "history": list(self.history),
        }


def share(rule: ShapingConfig, workers: int) -> ShapingConfig:
    """One worker's part of a rule when ``workers`` relay processes send (relay.processes):
    rates divided, connection caps and bursts divided rounding up, so that the machine as a
    whole keeps to what was configured (deliveries are leased about evenly by the workers)."""
    if workers <= 1:
        return rule

    def part(n: int) -> int:
        return -(-n // workers) if n else 0

    return dataclasses.replace(
        rule,
        per_minute=rule.per_minute / workers,
        per_hour=rule.per_hour / workers,
        min_per_minute=rule.min_per_minute / workers,
        max_connections=part(rule.max_connections),
        burst=part(rule.burst),
    )


class Shaper:
    """Every bucket of one relay process (one worker's share of each, see ``share``)."""

    def __init__(self, overrides: Sequence[ShapingConfig] = (), workers: int = 1) -> None:
        self.workers = workers
        self.table = tuple(share(rule, workers) for rule in rules(overrides))
        self.buckets: dict[str, Bucket] = {}
        self.dirty: set[str] = set()  # buckets new or with new domains: to publish

    def bucket(self, name: str, rule: ShapingConfig) -> Bucket:
        b = self.buckets.get(name)
        if b is None:
            b = Bucket(name, rule, rule.per_minute, rule.per_minute)
            self.buckets[name] = b
            self.dirty.add(name)
        return b

    def add_domain(self, name: str, domain: str) -> None:
        b = self.buckets[name]
        if domain not in b.domains and len(b.domains) < MAX_DOMAINS:
            b.domains.add(domain)
            self.dirty.add(name)

    def schedule(self, name: str, count: int, now: float) -> list[float]:
        """When each of `count` messages may go: times <= now are spent (sent now); later
        ones are estimates for returning those messages to the queue until then."""
        b = self.buckets[name]
        b.last_used = now
        self._recover(b, now)
        times: list[float] = []
        minute, hour = b.minute.tat, b.hour.tat
        m_int = 60.0 / b.rate if b.rate else 0.0
        h_int = 3600.0 / b.rule.per_hour if b.rule.per_hour else 0.0
        h_burst = max(1, int(b.rule.per_hour / 60)) if b.rule.per_hour else 1
        for _ in range(count):
            t = max(now, b.blocked_until)
            if m_int:
                t = max(t, _Gcra.earliest(minute, m_int, b.burst(), now))
            if h_int:
                t = max(t, _Gcra.earliest(hour, h_int, h_burst, now))
            if m_int:
                minute = max(minute, t) + m_int
            if h_int:
                hour = max(hour, t) + h_int
            times.append(t)
            if t <= now:  # spent
                b.minute.tat, b.hour.tat = minute, hour
                b.sent.append(now)
        while b.sent and b.sent[0] < now - 60:
            b.sent.popleft()
        return times

    def observe(self, name: str, result: Result, now: float) -> bool:
        """Learn from one result; True when the bucket's rate or block changed."""
        b = self.buckets.get(name)
        if b is None:
            return False
        if is_connect_error(result) and b.rule.connect_error_delay:
            until = now + b.rule.connect_error_delay
            if until > b.blocked_until:
                b.blocked_until = until
                delay = b.rule.connect_error_delay
                self._note(b, now, f"connection error: waiting {delay:g}s before the next try")
                return True
            return False
        if not (b.rule.adaptive and is_throttle(result)):
            return False
        if now - b.last_decrease < REACTION_GAP:
            return False
        while b.sent and b.sent[0] < now - 60:
            b.sent.popleft()
        running = b.rate or float(max(len(b.sent), 2 * b.rule.min_per_minute))
        b.ceiling = b.rule.per_minute or max(b.ceiling, running)
        b.rate = max(b.rule.min_per_minute, running / 2)
        b.last_decrease = now
        b.throttles += 1
        b.cooldown_until = now + b.rule.cooldown
        b.next_step_at = b.cooldown_until
        b.blocked_until = max(b.blocked_until, now + 60.0 / b.rate)
        b.minute.tat = max(b.minute.tat, now + 60.0 / b.rate)
        reply = f"{result.code} {result.status} {result.text}".strip()[:200]
        self._note(b, now, f"throttled: {reply}; halved until cooldown ends")
        return True

    def tick(self, now: float) -> list[str]:
        """Apply due recovery steps to every bucket; the names of those that changed. Default
        buckets idle for an hour with nothing to remember are forgotten."""
        changed = [name for name, b in self.buckets.items() if self._recover(b, now)]
        idle = [
            name
            for name, b in self.buckets.items()
            if b.rule.name == "default"
            and b.last_used < now - IDLE_FORGET
            and b.rate == b.rule.per_minute
            and b.blocked_until <= now
        ]
        for name in idle:
            del self.buckets[name]
        return changed

    def _recover(self, b: Bucket, now: float) -> bool:
        """Additive increase after the cooldown: one step of a tenth of the ceiling a minute."""
        if not b.throttles or b.rate == 0 or now < b.next_step_at:
            return False
        if b.ceiling and b.rate >= b.ceiling:
            return False
        step = max(1.0, b.ceiling / 10)
        while now >= b.next_step_at and b.rate < b.ceiling:
            b.rate = min(b.ceiling, b.rate + step)
            b.next_step_at += RECOVER_INTERVAL
        if b.rate >= b.ceiling:
            if not b.rule.per_minute:
                b.rate = 0.0  # it had no limit before the receiver asked for one
            self._note(b, now, "restored")
        else:
            self._note(b, now, f"recovering: +{step:g}/min a minute")
        return True

    def _note(self, b: Bucket, now: float, reason: str) -> None:
        b.reason = reason
        b.changed_at = now
        b.history.append({"at": now, "rate_per_minute": b.rate, "reason": reason})

    def states(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        picked = self.buckets if names is None else {n: self.buckets[n] for n in names}
        states = [b.state() for b in picked.values()]
        if self.workers > 1:  # reported for the machine: this worker's share times the workers
            for st in states:
                for key in ("rate_per_minute", "configured_per_minute", "per_hour"):
                    st[key] = round(st[key] * self.workers, 3)
                st["workers"] = self.workers
        return states
