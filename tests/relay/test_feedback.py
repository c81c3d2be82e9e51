"""Feedback loops: a signed Feedback-ID on outgoing mail; ARF (Yahoo CFL) and JMRP reports matched
to the delivery by VERP return path, Feedback-ID or the original Message-ID."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, parse_config
from relay.learn.ingest import ingest
from relay.learn.suppression import Rules
from relay.render import headers
from relay.render.dkim import dns_record, load_key
from relay.render.dkimkeys import generate_key, write_key
from relay.render.feedback import read_feedback_id
from tests.conftest import RunningRelay, Sink, make_config, smarthost
from tests.relay.test_dkim import dkimpy_verify

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

DOMAIN = "bounce.example.com"
FORMAT = "{campaign}:{app}:{mailtype}:{sender}"
MSG = (
    b"From: news@example.com\r\nTo: reader@example.org\r\nSubject: June\r\n"
    b"X-Outpost-Campaign: june news\r\n\r\nHello.\r\n"
)


def test_read_feedback_id_by_its_template() -> None:
    assert read_feedback_id(FORMAT, "june_news:-:bulk:example.com") == {
        "campaign": "june_news",
        "app": "",
        "mailtype": "bulk",
        "sender": "example.com",
    }
    assert read_feedback_id(FORMAT, "only:three:parts") == {}


@pytest.mark.parametrize("fmt", ["{campaign}", "{campaign}:{colour}", "a:b:c:d:e"])
def test_bad_feedback_format_is_refused(fmt: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"feedback": {"format": fmt}}, source="f.toml")
    assert str(info.value).startswith(f"f.toml: feedback.format: {fmt!r}: 2 to 4 colon-separated")


async def relay_with_keys(tmp_path: Path, sink: Sink, start_relay) -> tuple[RunningRelay, str]:  # type: ignore[no-untyped-def]
    key_file = tmp_path / "example.com.s1.pem"
    write_key(key_file, generate_key("ed25519-sha256"))
    config = make_config(
        tmp_path,
        delivery=smarthost(sink),
        bounces={"domain": DOMAIN, "notify_sender": False},
        feedback={"feedback_id": True},
        dkim={
            "keys": [
                {
                    "domain": "example.com",
                    "selector": "s1",
                    "key_file": str(key_file),
                    "algorithm": "ed25519-sha256",
                }
            ]
        },
    )
    relay = await start_relay(config)
    record = dns_record(load_key("example.com", "s1", "ed25519-sha256", str(key_file)))
    return relay, record


async def test_feedback_id_is_added_and_signed(tmp_path: Path, sink: Sink, start_relay) -> None:
    relay, record = await relay_with_keys(tmp_path, sink, start_relay)
    await relay.send(MSG, mail_from="news@example.com", rcpts=("reader@example.org",))
    (got,) = await sink.wait_for(1)
    block, _ = headers.split(got.data)
    assert headers.get(block, "Feedback-ID") == "june_news:-:bulk:example.com"
    signature = headers.get(block, "DKIM-Signature") or ""
    signed = signature.replace(" ", "").split("h=", 1)[1].split(";", 1)[0].lower().split(":")
    assert "feedback-id" in signed
    assert dkimpy_verify(got.data, {"s1._domainkey.example.com": record}) == [True]


def arf(original: str, rcpt_line: str = "") -> bytes:
    """A Yahoo CFL-style ARF report (RFC 5965) around an original message's header block."""
    return (
        "From: feedback@arf.mail.yahoo.com\r\nTo: fbl@example.com\r\nSubject: FW: June\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: Yahoo!-Mail-Feedback/2.0\r\nVersion: 0.1\r\n"
        f"{rcpt_line}\r\n"
        "--b\r\nContent-Type: message/rfc822\r\n\r\n"
        f"{original}\r\nHello.\r\n--b--\r\n"
    ).encode()


async def complaint_events(relay: RunningRelay) -> list[tuple[str, int | None]]:
    assert relay.app.store is not None
    events = await relay.app.store.events_after(0, 1000)
    return [(e["recipient"], e["delivery_id"]) for e in events if e["type"] == "complaint"]


async def take(relay: RunningRelay, raw: bytes, rules: Rules | None = None) -> int:
    assert relay.app.store is not None
    done = await ingest(
        relay.app.store,
        raw,
        signer=relay.app.signer,
        bounce_domain=DOMAIN,
        rules=rules or Rules(),
        now=relay.app.clock(),
    )
    return done.matched


async def test_yahoo_cfl_with_redacted_recipient_matches_by_verp_return_path(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay, _ = await relay_with_keys(tmp_path, sink, start_relay)
    await relay.send(MSG, mail_from="news@example.com", rcpts=("reader@example.org",))
    (got,) = await sink.wait_for(1)
    await relay.idle()
    original = f"Return-Path: <{got.mail_from}>\r\nFrom: news@example.com\r\nTo: redacted\r\n"
    assert await take(relay, arf(original)) == 1
    assert relay.app.store is not None
    (row,) = await relay.app.store.list_deliveries(state="delivered")
    assert await complaint_events(relay) == [("reader@example.org", row["delivery_id"])]


async def test_arf_matches_by_feedback_id_when_message_id_was_rewritten(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay, _ = await relay_with_keys(tmp_path, sink, start_relay)
    await relay.send(MSG, mail_from="news@example.com", rcpts=("reader@example.org",))
    await sink.wait_for(1)
    await relay.idle()
    original = (
        "Return-Path: <news@example.com>\r\nMessage-ID: <rewritten@forwarder.example>\r\n"
        "Feedback-ID: june_news:-:bulk:example.com\r\nTo: reader@example.org\r\n"
    )
    raw = arf(original, "Original-Rcpt-To: reader@example.org\r\n")
    no_recent = Rules(match_window=0.0)  # "a delivery to them lately" can't match: only Feedback-ID
    assert await take(relay, raw, no_recent) == 1
    assert relay.app.store is not None
    (row,) = await relay.app.store.list_deliveries(state="delivered")
    assert await complaint_events(relay) == [("reader@example.org", row["delivery_id"])]
    # an unknown campaign matches nothing: kept as an unmatched report, no complaint event
    other = original.replace("june_news", "other")
    assert await take(relay, arf(other, "Original-Rcpt-To: reader@example.org\r\n"), no_recent) == 0
    assert len(await complaint_events(relay)) == 1
    (kept,) = await relay.app.store.list_unmatched()
    assert (kept["kind"], kept["recipient"]) == ("complaint", "reader@example.org")


async def test_jmrp_recognised_by_its_format_and_matched_by_message_id(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay, _ = await relay_with_keys(tmp_path, sink, start_relay)
    await relay.send(
        b"Message-ID: <june-1@example.com>\r\n" + MSG,
        mail_from="news@example.com",
        rcpts=("subscriber@outlook.example",),
    )
    await sink.wait_for(1)
    await relay.idle()
    raw = (
        b"From: postmaster@notifications.example\r\nTo: fbl@example.com\r\n"
        b"Subject: report 2024-06-08\r\n"  # no "complaint" in the subject
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="j"\r\n\r\n'
        b"--j\r\nContent-Type: text/plain\r\n\r\nJunk Mail Reporting Program\r\n"
        b"--j\r\nContent-Type: message/rfc822\r\n\r\n"
        b"X-HmXmrOriginalRecipient: <subscriber@outlook.example>\r\n"
        b"From: news@example.com\r\nMessage-ID: <june-1@example.com>\r\n\r\nHello.\r\n--j--\r\n"
    )
    assert await take(relay, raw) == 1
    assert relay.app.store is not None
    (row,) = await relay.app.store.list_deliveries(state="delivered")
    assert await complaint_events(relay) == [("subscriber@outlook.example", row["delivery_id"])]
