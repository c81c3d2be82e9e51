"""Rendering in worker processes gives the same copy as rendering inline."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from relay.render import headers
from relay.render.render import PooledRendering, build_renderer
from relay.store import Lease
from tests.conftest import Sink, make_config, smarthost
from tests.relay.dkim_verify import verify_with_opendkim
from tests.relay.test_render import BASE, HTML_MSG, TRACK_ON, _keys


def _rendered_parts(data: bytes) -> tuple[bytes, str | None]:
    """What rendering decides: the body and the list header (trace fields and the signature's
    t= and b= differ between two runs)."""
    block, body = headers.split(data)
    return body, headers.get(block, "List-Unsubscribe")


async def test_pooled_rendering_matches_inline(tmp_path: Path, sink: Sink, start_relay) -> None:
    entries, records = _keys(tmp_path, ["rsa-sha256", "ed25519-sha256"])
    copies = []
    for processes in (0, 1):
        run = tmp_path / f"run{processes}"
        run.mkdir()
        (run / "tracking.secrets").write_text("test-secret-0123456789abcdef\n")
        config = make_config(
            run,
            delivery=smarthost(sink) | {"render_processes": processes},
            tracking=TRACK_ON | {"base_url": BASE},
            streams={"default": "broadcast"},
            dkim={"keys": entries},
        )
        relay = await start_relay(config)
        await relay.send(HTML_MSG)
        got = (await sink.wait_for(processes + 1))[-1]
        ok, output = verify_with_opendkim(got.data, records, tmp_path)
        assert ok, output
        copies.append(_rendered_parts(got.data))
        await relay.stop()
    assert re.search(rb'href="http://t\.example\.net/c/[a-z2-7]+"', copies[1][0])
    assert copies[0] == copies[1]  # same store layout, same secret: the same delivery's copy


async def test_copies_asked_for_together_match_inline_and_fail_alone(tmp_path: Path) -> None:
    """Forty copies asked for at once go to the worker in groups; each is the copy inline
    rendering gives, and one that fails (no message bytes) fails alone."""
    (tmp_path / "tracking.secrets").write_text("test-secret-0123456789abcdef\n")
    config = make_config(tmp_path, tracking=TRACK_ON | {"base_url": BASE})
    leases = [
        Lease(i, 1, "Q", f"r{i}@example.org", "example.org", 0, 0.0, "a@example.com", "", "all",
              False, False, "mail")
        for i in range(1, 41)
    ]  # fmt: skip
    pooled = PooledRendering(config, 1)
    try:
        got = await asyncio.gather(
            *(pooled.render(x, HTML_MSG) for x in leases),
            pooled.render(leases[0], None),  # type: ignore[arg-type]
            return_exceptions=True,
        )
    finally:
        pooled.close()
    inline = build_renderer(config)
    assert isinstance(got[-1], AttributeError)  # from the worker, for this copy only
    want = [inline.render(x, HTML_MSG) for x in leases]
    assert [(r.mail_from, r.data) for r in got[:-1]] == [(r.mail_from, r.data) for r in want]
    assert len({r.data for r in want}) == 40  # each its own tokens
