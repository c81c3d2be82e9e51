"""POST /ingest/dsn: the whole body is read however it arrives, and bounded (raw HTTP)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from relay.config import Config
from sidecar.ingest import MAX_REPORT
from tests.conftest import make_config
from tests.sidecar.helpers import db_events, seed, sidecar

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

TOKEN = "test-admin-token"


def dsn(recipient: str, message_id: str, padding: int = 0) -> bytes:
    """An RFC 3464 report for one recipient of ours; `padding` bytes of explanation (before the
    machine-readable part, as MTAs write it) make it big."""
    line = b"x" * 76 + b"\r\n"
    explanation = line * (padding // len(line))
    return (
        b"From: MAILER-DAEMON@mx.example.org\r\n"
        b"To: app@example.com\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        + explanation
        + b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.org\r\n\r\n"
        b"Final-Recipient: rfc822; " + recipient.encode() + b"\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: app@example.com\r\nTo: " + recipient.encode() + b"\r\n"
        b"Message-ID: " + message_id.encode() + b"\r\nSubject: hi\r\n\r\nhello\r\n\r\n--B--\r\n"
    )


async def raw_post(client: TestClient, head: bytes, pieces: list[bytes], pause: float) -> bytes:
    """POST over a plain socket: the head, then each piece `pause` seconds after the last."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)

    async def send() -> None:
        writer.write(head)
        for n, piece in enumerate(pieces):
            if n:
                await asyncio.sleep(pause)
            writer.write(piece)
            try:
                await writer.drain()
            except ConnectionError:  # the server answered and closed before the end: fine
                return

    sending = asyncio.create_task(send())
    try:
        async with asyncio.timeout(20):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            answer = head + await reader.readexactly(length)
    finally:
        sending.cancel()
        writer.close()
    return answer


def request_head(length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return (
        b"POST /ingest/dsn HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" + framing + b"\r\n\r\n"
    )


def chunked(data: bytes, size: int = 1 << 20) -> list[bytes]:
    out = [
        b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size])
        for i in range(0, len(data), size)
    ]
    return [*out, b"0\r\n\r\n"]


def status_and_json(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def seeded(tmp_path: Path) -> tuple[Config, bytes]:
    config = make_config(tmp_path)
    await seed(config, "Q1", ["reader@example.org"])
    report = dsn("reader@example.org", "<Q1@example.com>", padding=64 * 1024)
    assert len(report) > 64 * 1024
    return config, report


async def test_a_report_in_two_writes_with_content_length_is_read_whole(tmp_path: Path) -> None:
    config, report = await seeded(tmp_path)
    half = len(report) // 2
    async with sidecar(config) as client:
        answer = await raw_post(
            client, request_head(len(report)), [report[:half], report[half:]], 0.5
        )
    assert status_and_json(answer) == (
        200,
        {"kind": "bounce", "events": 1, "matched": 1, "unmatched": 0},
    )
    (bounced,) = db_events(config, "bounced")
    assert bounced["recipient"] == "reader@example.org"


async def test_a_chunked_report_in_two_writes_is_read_whole(tmp_path: Path) -> None:
    config, report = await seeded(tmp_path)
    pieces = chunked(report, 16 * 1024)
    async with sidecar(config) as client:
        answer = await raw_post(
            client, request_head(None), [b"".join(pieces[:2]), b"".join(pieces[2:])], 0.5
        )
    assert status_and_json(answer) == (
        200,
        {"kind": "bounce", "events": 1, "matched": 1, "unmatched": 0},
    )


async def test_an_11_mb_chunked_body_is_413_and_records_nothing(tmp_path: Path) -> None:
    config, report = await seeded(tmp_path)
    big = report + b"x" * (11 * 1024 * 1024)
    async with sidecar(config) as client:
        answer = await raw_post(client, request_head(None), chunked(big), 0.0)
        status, body = status_and_json(answer)
        assert (status, body["error"]) == (413, "too_large")
        assert body["detail"] == f"a report may hold at most {MAX_REPORT} bytes"
        # and by Content-Length, refused before a byte of the body is read
        answer = await raw_post(client, request_head(len(big)), [], 0.0)
        assert status_and_json(answer)[0] == 413
    assert db_events(config, "bounced") == []


async def test_a_stalled_body_is_408_and_records_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path, sidecar={"request_body_timeout": "300ms"})
    await seed(config, "Q1", ["reader@example.org"])
    report = dsn("reader@example.org", "<Q1@example.com>")
    async with sidecar(config) as client:
        # half the body, then nothing; and a chunked body whose framing breaks halfway
        for head, pieces in (
            (request_head(len(report)), [report[:100]]),
            (request_head(None), [chunked(report, 100)[0], b"zz\r\n"]),
        ):
            status, body = status_and_json(await raw_post(client, head, pieces, 0.1))
            assert (status, body["error"]) == (408, "timeout")
            assert body["detail"] == "the report did not arrive within 0.3 s"
    assert db_events(config, "bounced") == []


def feedback_report(feedback_id: str) -> bytes:
    """An ARF complaint whose attached original carries only a Feedback-ID and the recipient
    (the Message-ID was rewritten on the way: only the Feedback-ID can match)."""
    return (
        "From: feedback@arf.mail.yahoo.com\r\nTo: fbl@example.com\r\nSubject: FW: hi\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: Yahoo!-Mail-Feedback/2.0\r\nVersion: 0.1\r\n"
        "Original-Rcpt-To: reader@example.org\r\n\r\n"
        "--b\r\nContent-Type: message/rfc822\r\n\r\n"
        "Message-ID: <rewritten@forwarder.example>\r\n"
        f"Feedback-ID: {feedback_id}\r\nTo: reader@example.org\r\n\r\nHello.\r\n--b--\r\n"
    ).encode()


async def test_complaints_are_read_with_the_configured_feedback_id_format(tmp_path: Path) -> None:
    """The relay writes Feedback-ID by [feedback] format; the sidecar reads it back by the same
    one (a report in the default layout names no campaign under this format)."""
    config = make_config(
        tmp_path,
        feedback={"feedback_id": True, "format": "{mailtype}:{campaign}:{sender}"},
        bounces={"report_match_window": "0s"},  # "a delivery to them lately" can't match
    )
    ids = await seed(config, "Q1", ["reader@example.org"], campaign="spring")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with sidecar(config) as client:
        default_layout = await client.post(
            "/ingest/dsn", data=feedback_report("spring:-:bulk:example.com"), headers=auth
        )
        assert default_layout.status == 200
        assert (await default_layout.json())["matched"] == 0
        configured = await client.post(
            "/ingest/dsn", data=feedback_report("bulk:spring:example.com"), headers=auth
        )
        assert configured.status == 200
        assert await configured.json() == {
            "kind": "complaint",
            "events": 1,
            "matched": 1,
            "unmatched": 0,
        }
    (complaint,) = db_events(config, "complaint")
    assert (complaint["recipient"], complaint["delivery_id"]) == (
        "reader@example.org",
        ids["reader@example.org"],
    )
