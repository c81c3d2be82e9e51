"""Render one recipient's copy at delivery time: strip control and Bcc headers, track, sign last.

Order matters: links and pixel (body), then List-Unsubscribe (headers), then the DKIM signature
over the exact bytes that are sent. Rendering is deterministic: the same delivery always gets the
same links and tokens, so a retry sends what the first attempt sent (the signature's t= aside).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import cast

from relay.config import BouncesConfig, Config, ConfigError, FeedbackConfig, TrackingConfig
from relay.render import headers, mime
from relay.render.dkim import Algorithm, DkimError, DkimSigner, load_key
from relay.render.feedback import feedback_id
from relay.render.rewrite import rewrite_html
from relay.render.textlinks import extract_text_links, rewrite_text
from relay.render.tokens import HONEYPOT_LINK, Claims, TokenKind, TokenSigner, load_secrets
from relay.store import Lease
from relay.store.batching import GroupCommit

log = logging.getLogger("outpost.render")

_REMOVED = set(headers.CONTROL_HEADERS | headers.BLIND_HEADERS)


@dataclass(frozen=True)
class Rendered:
    """The envelope sender and bytes to send; personal=False lets recipients share one copy."""

    mail_from: str
    data: bytes
    links: tuple[str, ...] = ()
    personal: bool = False
    render_seconds: float = 0.0  # the whole render, DKIM included (metrics)
    dkim_seconds: float = 0.0


@dataclass(frozen=True)
class Tracking:
    """What this copy gets, from the global switches, the message's X-Outpost-Track and the
    recipient's tracking opt-out."""

    opens: bool
    clicks: bool
    unsubscribe: bool

    @classmethod
    def of(cls, config: TrackingConfig, lease: Lease, signer: TokenSigner | None) -> Tracking:
        if signer is None or lease.kind != "mail":  # our own DSNs are never tracked
            return cls(False, False, False)
        mode = lease.track
        return cls(
            # an opted-out recipient (relay.learn.optout) keeps its unsubscribe link, nothing else
            opens=config.opens and mode in ("all", "opens") and not lease.untracked,
            clicks=config.clicks and mode in ("all", "clicks") and not lease.untracked,
            # X-Outpost-Track: none marks transactional mail: no list headers on a password reset
            unsubscribe=config.unsubscribe and mode != "none",
        )


class Renderer:
    """Turns a stored message and a lease into the bytes for that recipient."""

    def __init__(
        self,
        tracking: TrackingConfig | None = None,
        bounces: BouncesConfig | None = None,
        signer: TokenSigner | None = None,
        dkim: DkimSigner | None = None,
        *,
        honeypot: bool = True,
        feedback: FeedbackConfig | None = None,
    ) -> None:
        self._feedback = feedback
        self._tracking = tracking or TrackingConfig()
        self._bounces = bounces or BouncesConfig()
        self.signer = signer  # also what the bounce door reads VERP tokens with
        self._dkim = dkim
        self._honeypot = honeypot
        self._base = self._tracking.base_url.rstrip("/")

    def _url(self, path: str, kind: TokenKind, delivery_id: int, link: int = 0) -> str:
        assert self.signer is not None
        return f"{self._base}/{path}/{self.signer.make(Claims(kind, delivery_id, link))}"

    def render(self, lease: Lease, raw: bytes) -> Rendered:
        started = time.perf_counter()
        block, body = headers.split(raw)
        block = headers.remove(block, _REMOVED)
        data = block + body
        track = Tracking.of(self._tracking, lease, self.signer)
        personal = False
        links: tuple[str, ...] = ()
        if track.opens or track.clicks:
            data, links = self._track_body(data, lease.delivery_id, track)
            personal = True
        if track.unsubscribe:
            data = self._list_unsubscribe(data, lease.delivery_id)
            personal = True
        mail_from = lease.mail_from
        if self._bounces.domain and mail_from and self.signer is not None:
            token = self.signer.make(Claims(TokenKind.BOUNCE, lease.delivery_id))
            mail_from = f"bounces+{token}@{self._bounces.domain}"
            personal = True
        if self._feedback is not None and self._feedback.feedback_id and lease.kind == "mail":
            data = self._feedback_id(data, lease)  # before DKIM, so it is signed
        signing = 0.0
        if self._dkim is not None:
            signed_at = time.perf_counter()
            try:
                data = self._dkim.sign(data)
            except DkimError as exc:  # malformed headers: still deliver, unsigned, and say so
                log.warning("not signed queue_id=%s reason=%r", lease.queue_id, str(exc))
            signing = time.perf_counter() - signed_at
        took = time.perf_counter() - started
        return Rendered(mail_from, data, links, personal, took, signing)

    def _track_body(
        self, data: bytes, delivery_id: int, track: Tracking
    ) -> tuple[bytes, tuple[str, ...]]:
        # message-wide link indices, assigned as the HTML parts go by in document order (the
        # same URL in two parts keeps one index): one walk of the MIME tree, not two
        index: dict[str, int] = {}
        pixel = self._url("o", TokenKind.OPEN, delivery_id) if track.opens else None
        trap = None
        if track.clicks and self._honeypot:
            trap = self._url("c", TokenKind.CLICK, delivery_id, HONEYPOT_LINK)

        def transform(html: str) -> str:
            if not track.clicks:
                return rewrite_html(html, click_url=None, pixel_url=pixel).html
            return rewrite_html(
                html,
                click_url=lambda i: self._url("c", TokenKind.CLICK, delivery_id, i),
                pixel_url=pixel,
                trap_url=trap,
                links=index,
            ).html

        def transform_text(text: str) -> str:
            for url in extract_text_links(text):
                index.setdefault(url, len(index))
            return rewrite_text(
                text, lambda url: self._url("c", TokenKind.CLICK, delivery_id, index[url])
            )

        transforms: dict[str, Callable[[str], str]] = {"text/html": transform}
        if track.clicks and self._tracking.text_links:
            transforms["text/plain"] = transform_text
        data = mime.transform_text_parts(data, transforms)
        return data, tuple(index)

    def _feedback_id(self, data: bytes, lease: Lease) -> bytes:
        """Gmail's Feedback-ID; an app's own is kept."""
        assert self._feedback is not None
        block, body = headers.split(data)
        if headers.get(block, "Feedback-ID") is not None:
            return data
        value = feedback_id(self._feedback.format, lease)
        return headers.append(block, headers.field("Feedback-ID", value)) + body

    def _list_unsubscribe(self, data: bytes, delivery_id: int) -> bytes:
        """RFC 2369 + RFC 8058 one-click; an app's own List-Unsubscribe is kept, not doubled."""
        block, body = headers.split(data)
        if headers.get(block, "List-Unsubscribe") is not None:
            return data
        targets = [f"<{self._url('u', TokenKind.UNSUBSCRIBE, delivery_id)}>"]
        if self._tracking.unsubscribe_mailto:
            targets.append(f"<mailto:{self._tracking.unsubscribe_mailto}?subject=unsubscribe>")
        block = headers.append(
            block,
            headers.field("List-Unsubscribe", ",\r\n ".join(targets)),
            headers.field("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        )
        return block + body


# --- building a renderer, and running it inline or in worker processes


def build_signer(config: Config) -> TokenSigner | None:
    """The token signer when anything needs tokens (tracking, VERP); secrets read now."""
    t = config.tracking
    if not (t.opens or t.clicks or t.unsubscribe or config.bounces.domain):
        return None
    try:
        return TokenSigner(load_secrets(t.secrets_file))
    except ValueError as exc:
        raise ConfigError(f"{config.source}: tracking.secrets_file: {exc}") from None


def build_renderer(config: Config) -> Renderer:
    """A Renderer with the tracking secrets and DKIM keys read now (start-up, SIGHUP, workers)."""
    dkim = None
    if config.dkim.keys:
        try:
            keys = [
                load_key(k.domain, k.selector, cast(Algorithm, k.algorithm), k.key_file)
                for k in config.dkim.keys
            ]
            dkim = DkimSigner(keys, fallback_domain=config.dkim.fallback_domain or None)
        except ValueError as exc:
            raise ConfigError(f"{config.source}: dkim.keys: {exc}") from None
    t = config.tracking
    return Renderer(
        t, config.bounces, build_signer(config), dkim, honeypot=t.honeypot, feedback=config.feedback
    )


class Rendering:
    """Where rendering runs. Inline: on the event loop (tests, one core)."""

    def __init__(self, renderer: Renderer) -> None:
        self._renderer = renderer

    async def render(self, lease: Lease, raw: bytes) -> Rendered:
        return self._renderer.render(lease, raw)

    def close(self) -> None:
        return None


_worker: Renderer | None = None
GROUP = 32  # copies per worker task at most


def _die_with_parent(parent: int) -> None:
    """A SIGKILLed relay leaves no worker behind: the kernel kills us when our parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):  # not Linux: the pool's shutdown still ends us
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _init_worker(config: Config, parent: int) -> None:
    global _worker
    _die_with_parent(parent)
    # the parent's drain decides when workers end (pool shutdown): a SIGTERM or Ctrl-C sent to
    # the whole process group must not kill them mid-drain
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = build_renderer(config)


def _render_in_worker(jobs: list[tuple[Lease, bytes]]) -> list[Rendered | Exception]:
    """Several copies in one task: a task's round trip (pickling, the pool's threads, two
    pipes) is paid once for all the copies that were waiting."""
    assert _worker is not None
    out: list[Rendered | Exception] = []
    for lease, raw in jobs:
        try:
            out.append(_worker.render(lease, raw))
        except Exception as exc:  # this copy's failure, not its neighbours'
            out.append(exc)
    return out


class PooledRendering(Rendering):
    """Rendering in worker processes: MIME rewriting and DKIM are pure CPU (bytes in, bytes
    out), so they can use the other cores while the event loop keeps accepting and talking SMTP.

    Workers build their own Renderer from the config (keys and secrets never cross a pipe) and
    are started with "spawn" (the parent has threads: forking it is unsafe). They exit when
    the parent goes away. Copies asked for while a worker's task runs go to it together in
    its next task (a group, as the store's group commit): one queue per worker process.
    """

    def __init__(self, config: Config, processes: int) -> None:
        super().__init__(build_renderer(config))  # fails early on a bad key, in the parent
        self._config = config
        self._processes = processes
        self._closed = False
        self._pool = self._start()
        self._queues = [GroupCommit(self._render_group, max_batch=GROUP) for _ in range(processes)]
        self._next = 0

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._config, os.getpid()),
        )

    async def render(self, lease: Lease, raw: bytes) -> Rendered:
        self._next = (self._next + 1) % len(self._queues)
        done = await self._queues[self._next].submit((lease, raw))
        if isinstance(done, Exception):
            raise done
        return done

    async def _render_group(self, jobs: list[tuple[Lease, bytes]]) -> list[Rendered | Exception]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, _render_in_worker, jobs)
        except BrokenProcessPool:  # a worker died: render these inline, start afresh
            if not self._closed:
                log.error("render worker died; restarting the pool")
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._start()
            return [self._inline(lease, raw) for lease, raw in jobs]

    def _inline(self, lease: Lease, raw: bytes) -> Rendered | Exception:
        try:
            return self._renderer.render(lease, raw)
        except Exception as exc:
            return exc

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_rendering(config: Config) -> Rendering:
    n = config.delivery.render_processes
    return PooledRendering(config, n) if n > 0 else Rendering(build_renderer(config))
