"""Rendering in worker processes gives the same copy as rendering inline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relay.render import headers
from tests.conftest import Sink, make_config, new_store, smarthost
from tests.relay.dkim_verify import verify_with_opendkim
from tests.relay.test_render import BASE, HTML_MSG, TRACK_ON, _keys

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on both backends


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
        await new_store()  # the same ids as the first run: a second, fresh store
        (run / "tracking.secrets").write_text("test-secret-0123456789abcdef\n")
        config = make_config(
            run,
            delivery=smarthost(sink) | {"render_processes": processes},
            tracking=TRACK_ON | {"base_url": BASE},
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
