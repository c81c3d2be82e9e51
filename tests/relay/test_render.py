"""Render end to end: what a recipient receives is tracked, unsubscribable, VERP'd and signed."""

from __future__ import annotations

import email
import email.policy
import quopri
import re
from pathlib import Path

import pytest

from relay.config import BouncesConfig, TrackingConfig
from relay.render import headers
from relay.render.dkim import DkimKey, dns_record
from relay.render.dkimkeys import generate_key
from relay.render.render import Renderer
from relay.render.tokens import HONEYPOT_LINK, TokenKind, TokenSigner, load_secrets
from relay.store import Lease
from tests import storeview
from tests.conftest import Sink, SinkScript, make_config, smarthost
from tests.relay.dkim_verify import verify_with_opendkim

TRACK_ON = {"opens": True, "clicks": True, "unsubscribe": True}
BASE = "http://t.example.net"

HTML_MSG = (
    b"From: News <news@example.com>\r\n"
    b"To: reader@example.org\r\n"
    b"Subject: Weekly\r\n"
    b"X-Outpost-Campaign: weekly-47\r\n"
    b"X-Outpost-Tags: news, weekly\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Read it at https://example.com/post?a=1&b=2\r\n"
    b"--b1\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b'<html><body><p><a href="https://example.com/post?a=1&amp;b=2">Post</a> '
    b"<a href='mailto:x@example.com'>mail</a> "
    b'<a href="https://example.com/other" data-notrack>raw</a> '
    b'<A HREF="https://example.com/post?a=1&amp;b=2">again</A></p></body></html>\r\n'
    b"--b1--\r\n"
)


def tracked_config(tmp_path: Path, sink: Sink, **extra: dict) -> object:
    sections = {
        "delivery": smarthost(sink),
        "tracking": TRACK_ON | {"base_url": BASE},
        "streams": {"default": "broadcast"},  # list mail: tracked, with List-Unsubscribe
    }
    for name, values in extra.items():
        sections[name] = sections.get(name, {}) | values
    return make_config(tmp_path, **sections)


def signer(tmp_path: Path) -> TokenSigner:
    return TokenSigner(load_secrets(tmp_path / "tracking.secrets"))


def html_of(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            return str(part.get_content())
    raise AssertionError("no html part")


@pytest.mark.usefixtures("store_backend")
async def test_links_pixel_honeypot_and_list_unsubscribe(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(tracked_config(tmp_path, sink))
    await relay.send(HTML_MSG, rcpts=("reader@example.org",))
    (got,) = await sink.wait_for(1)
    tokens = signer(tmp_path)
    html = html_of(got.data)
    clicks = re.findall(rf'href="{BASE}/c/([a-z2-7]+)"', html, re.IGNORECASE)
    claims = [tokens.read(t, TokenKind.CLICK) for t in clicks]
    assert all(c is not None for c in claims)
    # the same URL twice gets one index; the honeypot comes last; notrack and mailto untouched
    assert [c.link for c in claims if c] == [0, 0, HONEYPOT_LINK]
    assert 'href="https://example.com/other">raw</a>' in html  # data-notrack removed, kept
    assert "href='mailto:x@example.com'" in html
    pixel = re.findall(rf'<img src="{BASE}/o/([a-z2-7]+)" width="1" height="1" alt=""', html)
    assert len(pixel) == 1 and tokens.read(pixel[0], TokenKind.OPEN) is not None
    assert html.index("<img src=") < html.index("</body>")
    # the text part is byte for byte what was sent
    assert b"Read it at https://example.com/post?a=1&b=2\r\n--b1\r\n" in got.data
    block, _ = headers.split(got.data)
    unsub = headers.get(block, "List-Unsubscribe") or ""
    m = re.fullmatch(rf"<{BASE}/u/([a-z2-7]+)>", unsub)
    assert m and tokens.read(m.group(1), TokenKind.UNSUBSCRIBE) is not None
    assert headers.get(block, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert not any(name.startswith("x-outpost-") for name, _ in headers.fields(block))
    # the redirect target is the entity-decoded URL, stored for the sidecar
    assert relay.app.store is not None
    links = storeview.rows(relay.app.config, "SELECT idx, url FROM links")
    assert links == [(0, "https://example.com/post?a=1&b=2")]
    delivery = claims[0].delivery_id if claims[0] else -1
    await relay.idle()  # the sink has the message a moment before the result is recorded
    states = await relay.app.store.list_deliveries(state="delivered")
    assert [r["delivery_id"] for r in states] == [delivery]


@pytest.mark.parametrize(
    ("mode", "pixel", "links", "unsubscribe"),
    [
        ("all", True, True, True),
        ("opens", True, False, True),
        ("clicks", False, True, True),
        ("none", False, False, False),
    ],
)
async def test_x_outpost_track_modes(
    tmp_path: Path,
    sink: Sink,
    start_relay,
    mode: str,
    pixel: bool,
    links: bool,
    unsubscribe: bool,
) -> None:
    relay = await start_relay(tracked_config(tmp_path, sink))
    await relay.send(HTML_MSG.replace(b"Subject:", f"X-Outpost-Track: {mode}\r\nSubject:".encode()))
    (got,) = await sink.wait_for(1)
    html = html_of(got.data)
    assert (f"{BASE}/o/" in html) is pixel
    assert (f'href="{BASE}/c/' in html) is links
    assert (headers.get(headers.split(got.data)[0], "List-Unsubscribe") is not None) is unsubscribe
    if mode == "none":  # untracked: the body is exactly what the app sent
        assert got.data.split(b"\r\n\r\n", 1)[1] == HTML_MSG.split(b"\r\n\r\n", 1)[1]


async def test_global_switches_turn_tracking_off(tmp_path: Path, sink: Sink, start_relay) -> None:
    off = {"opens": False, "clicks": False, "unsubscribe": False}
    relay = await start_relay(tracked_config(tmp_path, sink, tracking=off))
    await relay.send(HTML_MSG)
    (got,) = await sink.wait_for(1)
    assert got.data.split(b"\r\n\r\n", 1)[1] == HTML_MSG.split(b"\r\n\r\n", 1)[1]


async def test_apps_own_list_unsubscribe_is_kept(tmp_path: Path, sink: Sink, start_relay) -> None:
    relay = await start_relay(tracked_config(tmp_path, sink))
    own = b"List-Unsubscribe: <https://app.example.com/unsub?u=1>\r\n"
    await relay.send(HTML_MSG.replace(b"Subject:", own + b"Subject:"))
    (got,) = await sink.wait_for(1)
    fields = headers.fields(headers.split(got.data)[0])
    assert [f for n, f in fields if n == "list-unsubscribe"] == [own]
    assert not any(n == "list-unsubscribe-post" for n, _ in fields)


@pytest.mark.usefixtures("store_backend")
async def test_retry_sends_the_same_bytes(tmp_path: Path, sink: Sink, start_relay) -> None:
    seen: list[bytes] = []

    def data(s: Sink, msg: object) -> str | None:
        seen.append(msg.data)  # type: ignore[attr-defined]
        return "451 4.3.0 later" if len(seen) == 1 else None

    sink.script = SinkScript(data=data)
    relay = await start_relay(tracked_config(tmp_path, sink))
    await relay.send(HTML_MSG)
    await sink.wait_for(1)
    assert len(seen) == 2 and seen[0] == seen[1]


@pytest.mark.usefixtures("store_backend")
async def test_each_recipient_gets_own_copy_when_tracked(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(tracked_config(tmp_path, sink))
    await relay.send(HTML_MSG, rcpts=("r1@example.org", "r2@example.org"))
    got = await sink.wait_for(2)
    assert sorted(m.rcpts[0] for m in got) == ["r1@example.org", "r2@example.org"]
    assert all(len(m.rcpts) == 1 for m in got)
    assert got[0].data != got[1].data


@pytest.mark.usefixtures("store_backend")
async def test_verp_return_path_names_the_delivery(tmp_path: Path, sink: Sink, start_relay) -> None:
    relay = await start_relay(
        tracked_config(tmp_path, sink, bounces={"domain": "bounce.example.com"})
    )
    await relay.send(HTML_MSG)
    (got,) = await sink.wait_for(1)
    local, _, domain = got.mail_from.partition("@")
    assert domain == "bounce.example.com" and local.startswith("bounces+")
    token = local.removeprefix("bounces+")
    claims = signer(tmp_path).read(token.upper(), TokenKind.BOUNCE)  # survives case folding
    assert relay.app.store is not None
    await relay.idle()  # the sink has the message a moment before the result is recorded
    (row,) = await relay.app.store.list_deliveries(state="delivered")
    assert claims is not None and claims.delivery_id == row["delivery_id"]


def test_message_links_span_all_html_parts() -> None:
    raw = (
        b'Content-Type: multipart/alternative; boundary="x"\r\n\r\n--x\r\n'
        b"Content-Type: text/html\r\n\r\n<a href='https://a.example/'>a</a>\r\n--x\r\n"
        b"Content-Type: text/html\r\n\r\n<a href='https://b.example/'>b</a>"
        b"<a href='https://a.example/'>a</a>\r\n--x--\r\n"
    )
    clicks_only = TrackingConfig(opens=False, clicks=True, unsubscribe=False)
    renderer = Renderer(clicks_only, BouncesConfig(), TokenSigner([b"s" * 32]), None)
    lease = Lease(
        7,
        1,
        "Q",
        "b@example.org",
        "example.org",
        0,
        0.0,
        "a@example.com",
        "",
        "all",
        False,
        False,
        "mail",
    )
    assert renderer.render(lease, raw).links == ("https://a.example/", "https://b.example/")


@pytest.mark.parametrize("cte", [b"7bit", b"quoted-printable"])
def test_html_without_body_close_gets_the_pixel_and_nothing_else(cte: bytes) -> None:
    body = b"<p>Hello <a href='https://a.example/x'>there</a></p>\r\n"
    raw = (
        b"From: a@example.com\r\nContent-Type: text/html\r\n"
        b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + body
    )
    renderer = Renderer(
        TrackingConfig(unsubscribe=False), BouncesConfig(), TokenSigner([b"s" * 32])
    )
    lease = Lease(7, 1, "Q", "b@example.org", "example.org", 0, 0.0, "a@example.com", "", "all",
                  False, False, "mail")  # fmt: skip
    out = renderer.render(lease, raw).data
    block, got = headers.split(out)
    if cte == b"quoted-printable":
        got = quopri.decodestring(got)
    # the link keeps its single quotes; the pixel and the trap link sit before the final CRLF,
    # which stays the last thing in the part: no second CRLF is added
    assert re.fullmatch(
        rb"<p>Hello <a href='http://127\.0\.0\.1:8025/c/[a-z2-7]+'>there</a></p>"
        rb"<a href=\"[^\"]+\" style=[^>]+></a><img src=\"[^\"]+\"[^>]*>\r\n",
        got,
    ), got


def _keys(tmp_path: Path, algorithms: list[str]) -> tuple[list[dict], dict[str, str]]:
    entries, records = [], {}
    for i, algorithm in enumerate(algorithms):
        pem = generate_key(algorithm)  # type: ignore[arg-type]
        path = tmp_path / f"k{i}.pem"
        path.write_bytes(pem)
        selector = f"s{i}"
        entries.append(
            {
                "domain": "example.com",
                "selector": selector,
                "key_file": str(path),
                "algorithm": algorithm,
            }
        )
        key = DkimKey("example.com", selector, algorithm, pem)  # type: ignore[arg-type]
        records[f"{selector}._domainkey.example.com"] = dns_record(key)
    return entries, records


MESSAGES = {
    "plain": (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nplain body\r\n", ""),
    "html": (HTML_MSG.replace(b"news@example.com", b"news@example.com"), ""),
    "8bit": (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Grüße aus Köln\r\n".encode()
        + b"x" * 2000
        + b"\r\n",
        "BODY=8BITMIME",
    ),
    "smtputf8": (
        "From: Jörg <jörg@example.com>\r\nTo: zoë@example.org\r\nSubject: Grüße\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n東京\r\n".encode(),
        "SMTPUTF8",
    ),
}


@pytest.mark.parametrize(
    "algorithms", [["rsa-sha256"], ["ed25519-sha256"], ["rsa-sha256", "ed25519-sha256"]]
)
@pytest.mark.parametrize("kind", list(MESSAGES))
async def test_dkim_signature_verifies_after_all_changes(
    tmp_path: Path, sink: Sink, start_relay, kind: str, algorithms: list[str]
) -> None:
    raw, option = MESSAGES[kind]
    entries, records = _keys(tmp_path, algorithms)
    config = tracked_config(
        tmp_path, sink, dkim={"keys": entries}, bounces={"domain": "bounce.example.com"}
    )
    relay = await start_relay(config)
    rcpt = "zoë@example.org" if option == "SMTPUTF8" else "b@example.org"
    options = tuple(option.split()) + (("BODY=8BITMIME",) if option == "SMTPUTF8" else ())
    await relay.send(raw, rcpts=(rcpt,), mail_options=options)
    (got,) = await sink.wait_for(1)
    assert got.data.count(b"DKIM-Signature:") == len(algorithms)
    ok, output = verify_with_opendkim(got.data, records, tmp_path)
    assert ok, output
    tampered = got.data[:-5] + bytes([got.data[-5] ^ 1]) + got.data[-4:]
    ok, output = verify_with_opendkim(tampered, records, tmp_path)
    assert not ok, output


async def test_dkim_keys_reload_on_sighup_without_dropping_connections(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    from tests.smtpclient import RawClient

    entries, records = _keys(tmp_path, ["rsa-sha256"])
    relay = await start_relay(tracked_config(tmp_path, sink, dkim={"keys": entries}))
    client, _ = await RawClient.connect(relay.host, relay.port)  # stays open across the reload
    await client.cmd("EHLO app.test")
    plain = MESSAGES["plain"][0]

    async def send_on_open_session() -> bytes:
        await client.cmd("MAIL FROM:<a@example.com>")
        await client.cmd("RCPT TO:<b@example.org>")
        assert (await client.data(plain + b".\r\n")).startswith("250 2.0.0")
        return (await sink.wait_for(len(sink.received) + 1))[-1].data

    first = await send_on_open_session()
    assert verify_with_opendkim(first, records, tmp_path)[0]
    # a rotated key in the same file; SIGHUP; the next message is signed with it
    new_pem = generate_key("rsa-sha256")
    Path(entries[0]["key_file"]).write_bytes(new_pem)
    relay.app.reload()
    second = await send_on_open_session()
    new_records = {
        "s0._domainkey.example.com": dns_record(DkimKey("example.com", "s0", "rsa-sha256", new_pem))
    }
    assert verify_with_opendkim(second, new_records, tmp_path)[0]
    assert not verify_with_opendkim(second, records, tmp_path)[0]


async def test_unparseable_mime_is_relayed_unchanged_without_tracking(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    broken = (
        b"From: news@example.com\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="never-closed"\r\n\r\n'
        b"--never-closed\r\nContent-Type: text/html\r\n\r\n"
        b'<a href="https://example.com/x">x</a>\r\n'  # no closing boundary
    )
    relay = await start_relay(tracked_config(tmp_path, sink))
    await relay.send(broken)
    (got,) = await sink.wait_for(1)
    assert got.data.split(b"\r\n\r\n", 1)[1] == broken.split(b"\r\n\r\n", 1)[1]
    # the list headers still come (they need only the header block)
    assert headers.get(headers.split(got.data)[0], "List-Unsubscribe") is not None
