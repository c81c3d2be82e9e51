"""The HTTP send door: an app's API key, the SMTP door's accept path, JSON answers, and the
Idempotency-Key; every refusal's exact status and JSON, with nothing accepted lost."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.config import Config
from relay.receive.apikeys import new_key
from relay.store import open_store
from tests import storeview
from tests.conftest import make_config
from tests.sidecar.helpers import ADMIN, sidecar

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

JOBS_APP = {
    "name": "jobs",
    "sender_domains": ["jobs.example.com"],
    "campaign_prefix": "jobs-",
}


def app_config(tmp_path: Path, **relay: Any) -> tuple[Config, dict[str, str]]:
    """One app, jobs, with one API key; returns the config and its Authorization header."""
    key, line = new_key("jobs1")
    keys = tmp_path / "jobs.keys"
    keys.write_text(line + "\n")
    app = {**JOBS_APP, "api_keys_file": str(keys), **relay.pop("app", {})}
    config = make_config(tmp_path, apps=[app], relay=relay)
    return config, {"Authorization": f"Bearer {key}"}


MAIL = {
    "from": "Jobs <cron@jobs.example.com>",
    "to": ["Ann <ann@example.org>"],
    "cc": "cc@example.org",
    "bcc": ["hidden@example.org"],
    "reply_to": "help@jobs.example.com",
    "subject": "Nightly run — done",
    "text": "All 3 jobs ran.\n",
    "html": "<p>All <b>3</b> jobs ran.</p>",
    "headers": {"X-Job": "nightly"},
    "attachments": [
        {
            "filename": "log.txt",
            "content_type": "text/plain",
            "content": base64.b64encode(b"line 1\nline 2\n").decode(),
        }
    ],
    "campaign": "nightly",
    "tags": ["cron", "report"],
}


async def stored(config: Config, queue_id: str) -> tuple[dict[str, Any], bytes]:
    async with await open_store(config.store, durable=False) as store:
        history = await store.message_history(queue_id)
        assert history is not None
        return history, await store.message_raw(history["message"]["message_pk"])


def message_count(config: Config) -> int:
    """Messages in the store (read on a connection of its own)."""
    return int(storeview.value(config, "SELECT count(*) FROM messages"))


async def test_send_queues_the_message_with_roles_and_no_bcc_header(tmp_path: Path) -> None:
    config, key = app_config(tmp_path)
    async with sidecar(config) as client:
        answer = await client.post("/api/send", json=MAIL, headers=key)
        body = await answer.json()
        assert answer.status == 202, body
    assert body["recipients"] == [
        {"address": "ann@example.org", "role": "to", "status": "queued"},
        {"address": "cc@example.org", "role": "cc", "status": "queued"},
        {"address": "hidden@example.org", "role": "bcc", "status": "queued"},
    ]
    assert body["message_id"] == f"<{body['queue_id']}@relay.test>"
    history, raw = await stored(config, body["queue_id"])
    assert history["message"]["app"] == "jobs"
    assert history["message"]["campaign"] == "jobs-nightly"
    assert history["message"]["tags"] == ["cron", "report"]
    roles = {d["recipient"]: d["role"] for d in history["deliveries"]}
    assert roles == {"ann@example.org": "to", "cc@example.org": "cc", "hidden@example.org": "bcc"}
    assert b"hidden@example.org" not in raw and b"\nBcc:" not in raw
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF lines only
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Received"].startswith("from api ([127.0.0.1])")
    assert " with HTTP id " + body["queue_id"] in raw.decode()
    assert parsed["Subject"] == "Nightly run — done"
    assert parsed["To"] == "Ann <ann@example.org>" and parsed["Cc"] == "cc@example.org"
    assert parsed["Reply-To"] == "help@jobs.example.com" and parsed["X-Job"] == "nightly"
    assert parsed.get_content_type() == "multipart/mixed"
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and text.get_content() == "All 3 jobs ran.\r\n"
    assert html is not None and html.get_content().strip() == "<p>All <b>3</b> jobs ran.</p>"
    (attachment,) = parsed.iter_attachments()
    assert attachment.get_filename() == "log.txt"
    assert attachment.get_content() == "line 1\nline 2\n"


async def test_send_raw_keeps_the_message_and_takes_the_envelope(tmp_path: Path) -> None:
    config, key = app_config(tmp_path)
    message = (
        "From: cron@jobs.example.com\r\nTo: ann@example.org\r\nSubject: raw\r\n"
        "Message-ID: <raw-1@jobs.example.com>\r\n\r\nbody line\r\n"
    )
    async with sidecar(config) as client:
        answer = await client.post(
            "/api/send/raw",
            json={
                "mail_from": "bounces@jobs.example.com",
                "to": ["ann@example.org", "archive@example.org"],
                "message": message,
            },
            headers=key,
        )
        body = await answer.json()
        assert answer.status == 202, body
        assert body["message_id"] == "<raw-1@jobs.example.com>"
        assert [(r["address"], r["role"]) for r in body["recipients"]] == [
            ("ann@example.org", "to"),
            ("archive@example.org", "bcc"),
        ]
        encoded = base64.b64encode(message.encode().replace(b"raw-1", b"raw-2")).decode()
        again = await client.post(
            "/api/send/raw",
            json={
                "mail_from": "cron@jobs.example.com",
                "to": "ann@example.org",
                "message_base64": encoded,
            },
            headers=key,
        )
        assert again.status == 202, await again.text()
    history, raw = await stored(config, body["queue_id"])
    assert history["message"]["from"] == "bounces@jobs.example.com"
    # the message as given, after the trace field this hop adds, with the Date it lacked
    assert raw.startswith(b"Received: from api ([127.0.0.1])\r\n\tby relay.test (Outpost)")
    rest = raw[raw.index(b"\r\n", raw.index(b" with HTTP id ")) + 2 :]
    head = re.escape(message.split("\r\n\r\n")[0].encode())
    assert re.fullmatch(head + rb"\r\nDate: [^\r\n]+ GMT\r\n\r\nbody line\r\n", rest), rest


async def test_an_idempotency_key_sends_once_and_replays_the_first_answer(tmp_path: Path) -> None:
    config, key = app_config(tmp_path)
    headers = {**key, "Idempotency-Key": "order-1234"}
    async with sidecar(config) as client:
        first = await client.post("/api/send", json=MAIL, headers=headers)
        assert first.status == 202
        second = await client.post("/api/send", json=MAIL, headers=headers)
        assert second.status == 202
        assert second.headers["Idempotent-Replayed"] == "true"
        assert await second.json() == await first.json()
        assert "Idempotent-Replayed" not in first.headers
        other = await client.post(
            "/api/send", json=MAIL, headers={**key, "Idempotency-Key": "order-1235"}
        )
        assert other.status == 202
        assert (await other.json())["queue_id"] != (await first.json())["queue_id"]
        bad = await client.post(
            "/api/send", json=MAIL, headers={**key, "Idempotency-Key": "has space"}
        )
        assert bad.status == 400
        assert await bad.json() == {
            "error": "invalid_field",
            "message": "Idempotency-Key: 1-200 printable ASCII characters",
        }
    assert message_count(config) == 2


async def test_a_refused_request_keeps_no_key_so_its_corrected_retry_sends(tmp_path: Path) -> None:
    config, key = app_config(tmp_path)
    headers = {**key, "Idempotency-Key": "k-9"}
    async with sidecar(config) as client:
        # a 4xx is the answer to keep: the same key answers it again, even with a new body
        bad = await client.post("/api/send", json={**MAIL, "subject": 7}, headers=headers)
        assert bad.status == 400
        replay = await client.post("/api/send", json=MAIL, headers=headers)
        assert replay.status == 400 and replay.headers["Idempotent-Replayed"] == "true"
    assert message_count(config) == 0


async def test_rate_limited_is_429_with_retry_after_and_not_kept(tmp_path: Path) -> None:
    config, key = app_config(tmp_path, app={"rate_limit": "1/h"})
    async with sidecar(config) as client:
        assert (await client.post("/api/send", json=MAIL, headers=key)).status == 202
        headers = {**key, "Idempotency-Key": "again"}
        over = await client.post("/api/send", json=MAIL, headers=headers)
        assert over.status == 429
        assert 0 < int(over.headers["Retry-After"]) <= 3600
        body = await over.json()
        assert body["error"] == "rate_limited"
        assert body["message"].startswith(
            "Error: app jobs is over its rate limit (1 per 1h messages); try again in"
        )
        # a 429 is not kept: the same key runs again (and is refused again, not replayed)
        again = await client.post("/api/send", json=MAIL, headers=headers)
        assert again.status == 429 and "Idempotent-Replayed" not in again.headers
    assert message_count(config) == 1


SENDER_REFUSED = (
    "<ceo@other.example>: Sender address rejected: 'other.example' is not a sender domain of"
    " app jobs (allowed: jobs.example.com)"
)


@pytest.mark.parametrize(
    ("path", "body", "status", "error", "message"),
    [
        ("/api/send", b"not json", 400, "invalid_json", "the body must be a JSON object"),
        ("/api/send", b"[1, 2]", 400, "invalid_json", "the body must be a JSON object"),
        (
            "/api/send",
            {**MAIL, "to": [], "cc": [], "bcc": []},
            400,
            "invalid_field",
            "to: required: at least one recipient in to, cc or bcc",
        ),
        (
            "/api/send",
            {**MAIL, "to": ["a@example.org, b@example.org"]},
            400,
            "invalid_field",
            "to[0]: 'a@example.org, b@example.org' is not one address ('a@b.example' or"
            " 'Name <a@b>')",
        ),
        (
            "/api/send",
            {**MAIL, "subject": "hi\r\nBcc: x@evil.example"},
            400,
            "invalid_field",
            "subject: must be one line (no CR, LF or NUL)",
        ),
        (
            "/api/send",
            {**MAIL, "headers": {"X-A": "1\r\nX-B: 2"}},
            400,
            "invalid_field",
            "headers.X-A: must be one line (no CR, LF or NUL)",
        ),
        (
            "/api/send",
            {**MAIL, "headers": {"Bcc": "x@evil.example"}},
            400,
            "invalid_field",
            "headers.Bcc: is set by its own field or by Outpost, not in headers",
        ),
        (
            "/api/send",
            {**MAIL, "headers": {"X-Outpost-Track": "none"}},
            400,
            "invalid_field",
            "headers.X-Outpost-Track: is set by its own field or by Outpost, not in headers",
        ),
        (
            "/api/send",
            {**MAIL, "text": "", "html": ""},
            400,
            "invalid_field",
            "text: text or html is required",
        ),
        (
            "/api/send",
            {**MAIL, "track": "maybe"},
            400,
            "invalid_field",
            "track: must be one of all, opens, clicks, none",
        ),
        (
            "/api/send",
            {**MAIL, "attachments": [{"filename": "a", "content": "%%"}]},
            400,
            "invalid_field",
            "attachments[0].content: must be base64",
        ),
        (
            "/api/send",
            {**MAIL, "from": "ceo@other.example"},
            422,
            "sender_domain_not_allowed",
            SENDER_REFUSED,
        ),
        (
            "/api/send",
            {**MAIL, "to": ["bad@@example.org"]},
            400,
            "invalid_field",
            "to[0]: 'bad@@example.org' is not one address ('a@b.example' or 'Name <a@b>')",
        ),
        (
            "/api/send",
            {**MAIL, "to": [f"r{i}@example.org" for i in range(6)]},
            422,
            "too_many_recipients",
            "Error: too many recipients",
        ),
        (
            "/api/send/raw",
            {"mail_from": "cron@jobs.example.com", "to": ["a@example.org"]},
            400,
            "invalid_field",
            "message: exactly one of message and message_base64 is required",
        ),
        (
            "/api/send/raw",
            {
                "mail_from": "cron@jobs.example.com",
                "to": ["a@example.org"],
                "message": "From: ceo@other.example\r\n\r\nx\r\n",
            },
            422,
            "sender_domain_not_allowed",
            "From: " + SENDER_REFUSED,
        ),
        (
            "/api/send/raw",
            {
                "mail_from": "cron@jobs.example.com",
                "to": ["a@"],
                "message": "From: cron@jobs.example.com\r\n\r\nx\r\n",
            },
            422,
            "invalid_address",
            None,
        ),
        (
            "/api/send/raw",
            {
                "mail_from": "cron@jobs.example.com",
                "to": ["a@example.org"],
                "message": "From: cron@jobs.example.com\r\n\r\nnul\x00\r\n",
            },
            422,
            "invalid_message",
            None,
        ),
    ],
)
async def test_refusals_are_exact_json_and_lose_nothing(
    tmp_path: Path,
    path: str,
    body: Any,
    status: int,
    error: str,
    message: str | None,
) -> None:
    config, key = app_config(tmp_path, max_recipients=5)
    async with sidecar(config) as client:
        first = await client.post("/api/send", json=MAIL, headers=key)
        assert first.status == 202
        kept = await first.json()
        if isinstance(body, bytes):
            answer = await client.post(path, data=body, headers=key)
        else:
            answer = await client.post(path, json=body, headers=key)
        got = await answer.json()
        assert answer.status == status, got
        assert got["error"] == error
        if message is not None:
            assert got == {"error": error, "message": message}
        else:
            assert set(got) == {"error", "message"} and got["message"]
    assert message_count(config) == 1
    history, _ = await stored(config, kept["queue_id"])
    assert len(history["deliveries"]) == 3


async def test_a_body_over_the_limit_is_413(tmp_path: Path) -> None:
    config, key = app_config(tmp_path, max_message_size=10_000)
    big = {**MAIL, "text": "x" * 200_000}
    async with sidecar(config) as client:
        answer = await client.post("/api/send", json=big, headers=key)
        assert answer.status == 413
        assert await answer.json() == {
            "error": "message_too_large",
            "message": "the request body is longer than 78869 bytes",
        }
        # under the body limit but over the message size once composed: the accept path's 552
        near = await client.post("/api/send", json={**MAIL, "text": "y" * 12_000}, headers=key)
        assert near.status == 413
        body = await near.json()
        assert body["error"] == "message_too_large"
        assert body["message"] == "Error: message file too big"
    assert message_count(config) == 0


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer test-admin-token", "Bearer jobs1.wrong-secret", "Bearer nosuch.key", "Basic x"],
)
async def test_send_needs_an_app_api_key(tmp_path: Path, authorization: str | None) -> None:
    config, _ = app_config(tmp_path)
    headers = {"Authorization": authorization} if authorization else {}
    async with sidecar(config) as client:
        answer = await client.post("/api/send", json=MAIL, headers=headers)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="outpost-send"'
        assert await answer.json() == {
            "error": "unauthorized",
            "message": "a valid 'Authorization: Bearer <key id>.<secret>' app API key is required",
        }
    assert message_count(config) == 0


async def test_an_app_key_opens_no_admin_route(tmp_path: Path) -> None:
    config, key = app_config(tmp_path)
    async with sidecar(config) as client:
        answer = await client.get("/api/stats", headers=key)
        assert answer.status == 401
        assert (await client.get("/api/stats", headers=ADMIN)).status == 200


async def _post(client: TestClient, key: dict[str, str], **fields: Any) -> Any:
    answer = await client.post("/api/send", json={**MAIL, **fields}, headers=key)
    return answer.status, await answer.json()


async def test_a_suppressed_recipient_is_reported_and_not_queued(tmp_path: Path) -> None:
    config, key = app_config(tmp_path)
    async with await open_store(config.store, durable=False) as store:
        await store.suppress("cc@example.org", "manual", 0.0, app="jobs")
    async with sidecar(config) as client:
        status, body = await _post(client, key)
    assert status == 202
    assert {r["address"]: r["status"] for r in body["recipients"]} == {
        "ann@example.org": "queued",
        "cc@example.org": "suppressed",
        "hidden@example.org": "queued",
    }
    history, _ = await stored(config, body["queue_id"])
    states = {d["recipient"]: d["state"] for d in history["deliveries"]}
    assert states == {
        "ann@example.org": "queued",
        "cc@example.org": "dropped",
        "hidden@example.org": "queued",
    }
