"""Provider webhooks: real signatures (ECDSA P-256, HMAC-SHA256, RSA certificates), real HTTP on
loopback, a real SQLite store. Keys are generated here and payloads signed exactly as the
providers document it; the fixtures under tests/data/webhooks follow the providers' examples."""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from relay.config import ConfigError
from relay.store import NewMessage, Outcome, Result, Store
from relay.store.sqlite import SqliteStore
from sidecar.webhooks import (
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    MemoryDedup,
    StoreDedup,
    WebhookConfig,
    WebhookHandler,
    WebhookSecrets,
    add_routes,
    mailgun_events,
    seen_before,
    sendgrid_events,
    ses_bounce_verdict,
    sns_string_to_sign,
    verify_mailgun,
    verify_sendgrid,
    verify_sns,
)

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

DATA = Path(__file__).resolve().parent.parent / "data" / "webhooks"
NOW = 1_760_000_000.0
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
MAILGUN_KEY = secrets.token_hex(16)


# ---------------------------------------------------------------------------------------------
# keys, certificates and signing, exactly as the providers do it
# ---------------------------------------------------------------------------------------------


def spki_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """SendGrid shows its verification key as base64 DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def self_signed(key: rsa.RSAPrivateKey, name: str) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sendgrid_headers(
    key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str | None = None
) -> dict[str, str]:
    """ECDSA P-256 over SHA-256 of the timestamp header value followed by the raw body."""
    ts = timestamp if timestamp is not None else str(int(NOW))
    signature = key.sign(ts.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        SENDGRID_SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
        SENDGRID_TIMESTAMP_HEADER: ts,
    }


def mailgun_signature(
    event_data: dict[str, Any],
    key: str = MAILGUN_KEY,
    timestamp: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """{"signature": {timestamp, token, hex HMAC-SHA256(key, timestamp + token)}, "event-data"}."""
    ts = timestamp if timestamp is not None else str(int(NOW))
    tok = token if token is not None else secrets.token_hex(25)  # 50 characters, as Mailgun's
    digest = hmac.new(key.encode(), (ts + tok).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": ts, "token": tok, "signature": digest},
        "event-data": event_data,
    }


def doc_string_to_sign(message: dict[str, Any]) -> bytes:
    """Written from the SNS documentation, independently of the module under test."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId"]
        if "Subject" in message:
            names.append("Subject")
        names += ["Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{name}\n{message[name]}\n" for name in names).encode("utf-8")


def sns_time(at: float) -> str:
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sns_sign(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "2") -> dict[str, Any]:
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signed = dict(message, SignatureVersion=version)
    signature = key.sign(doc_string_to_sign(signed), padding.PKCS1v15(), algorithm)
    signed["Signature"] = base64.b64encode(signature).decode("ascii")
    return signed


def sns_notification(
    content: dict[str, Any] | str,
    key: rsa.RSAPrivateKey,
    *,
    version: str = "2",
    at: float = NOW,
    subject: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id or f"{secrets.token_hex(4)}-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Message": content if isinstance(content, str) else json.dumps(content),
        "Timestamp": sns_time(at),
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&x=y",
    }
    if subject is not None:
        message["Subject"] = subject
    return sns_sign(message, key, version)


def fixture(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# the app under test: real store, real server on loopback
# ---------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def config(
    tmp_path: Path, sendgrid_key: ec.EllipticCurvePrivateKey, sns_key: rsa.RSAPrivateKey
) -> WebhookConfig:
    (tmp_path / "sendgrid.key").write_text(spki_b64(sendgrid_key) + "\n")
    (tmp_path / "mailgun.key").write_text(MAILGUN_KEY + "\n")
    (tmp_path / "sns.pem").write_bytes(self_signed(sns_key, "sns.us-east-1.amazonaws.com"))
    return WebhookConfig(
        sendgrid_verification_key_file=str(tmp_path / "sendgrid.key"),
        mailgun_signing_key_file=str(tmp_path / "mailgun.key"),
        ses_certificate_file=str(tmp_path / "sns.pem"),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await SqliteStore.open(tmp_path / "outpost.db", durable=False)
    yield s
    await s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dedup() -> MemoryDedup:
    return MemoryDedup()


async def serve(handler: WebhookHandler) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    add_routes(app, handler)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(
    store: Store, config: WebhookConfig, dedup: MemoryDedup, clock: Clock
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    c = await serve(WebhookHandler(store, config, dedup, clock=clock))
    yield c
    await c.close()


Client = TestClient[web.Request, web.Application]


async def rows(tmp_path: Path) -> list[dict[str, Any]]:
    async with aiosqlite.connect(tmp_path / "outpost.db") as db:
        async with db.execute(
            "SELECT type, at, message_id, delivery_id, recipient, campaign, details"
            " FROM events ORDER BY id"
        ) as cur:
            keys = ("type", "at", "message_pk", "delivery_id", "recipient", "campaign", "details")
            out = [dict(zip(keys, r, strict=True)) for r in await cur.fetchall()]
    for r in out:
        r["details"] = json.loads(r["details"])
    return out


async def suppressions(tmp_path: Path) -> dict[str, tuple[str, float | None]]:
    async with aiosqlite.connect(tmp_path / "outpost.db") as db:
        async with db.execute("SELECT address, reason, expires_at FROM suppressions") as cur:
            return {r[0]: (r[1], r[2]) for r in await cur.fetchall()}


async def nothing_recorded(tmp_path: Path) -> None:
    assert await rows(tmp_path) == []
    assert await suppressions(tmp_path) == {}


def by_recipient(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["recipient"], []).append(e)
    return out


# ---------------------------------------------------------------------------------------------
# SendGrid
# ---------------------------------------------------------------------------------------------


async def test_sendgrid_batch_maps_events_and_suppresses(
    client: Client, sendgrid_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    body = (DATA / "sendgrid_events.json").read_bytes()
    resp = await client.post(
        "/webhooks/sendgrid", data=body, headers=sendgrid_headers(sendgrid_key, body)
    )
    assert resp.status == 200
    assert await resp.json() == {"accepted": 13, "duplicates": 0, "recorded": 11}

    events = by_recipient(await rows(tmp_path))
    assert "processed@example.com" not in events  # the relay records processed itself
    [delivered] = events["delivered@example.com"]
    assert delivered["type"] == "delivered"
    assert (delivered["campaign"], delivered["delivery_id"], delivered["message_pk"]) == (
        "spring-sale",
        42,
        7,
    )
    assert delivered["at"] == 1513299569.0
    assert delivered["details"]["provider"] == "sendgrid"
    assert delivered["details"]["provider_event_id"] == "ZUxlVrhCl-qDaBdP5lKdSg=="
    assert delivered["details"]["raw_type"] == "delivered"
    assert delivered["details"]["text"] == "250 OK"

    [deferred] = events["deferred@example.com"]
    assert (deferred["type"], deferred["details"]["bounce_type"]) == ("deferred", "soft")

    [hard] = events["nobody@example.com"]
    assert hard["type"] == "bounced"
    assert hard["details"]["bounce_type"] == "hard"
    assert hard["details"]["reason"] == "userunknown"
    assert hard["details"]["status"] == "5.1.1"
    assert hard["delivery_id"] == 43

    [blocked] = events["blocked@example.com"]
    assert (blocked["type"], blocked["details"]["bounce_type"]) == ("bounced", "soft")
    assert blocked["details"]["reason"] == "blocked"

    [dropped] = events["dropped@example.com"]
    assert (dropped["type"], dropped["details"]["reason"]) == ("dropped", "Bounced Address")

    human, machine = events["opener@example.com"]
    assert human["type"] == machine["type"] == "open"
    assert human["details"]["source"] == "human"
    # [privacy] defaults: the network of the IP, the client family / OS / device of the UA
    assert human["details"]["ip"] == "255.255.255.0"
    assert "ua" not in human["details"] and set(human["details"]["client"]) == {
        "client",
        "os",
        "device",
    }
    assert human["campaign"] == "spring-sale"
    assert machine["details"]["source"] == "privacy"

    [click] = events["clicker@example.com"]
    assert (click["type"], click["details"]["url"]) == ("click", "http://www.sendgrid.com/")

    assert [e["type"] for e in events["complainer@example.com"]] == ["complaint"]
    assert [e["type"] for e in events["leaver@example.com"]] == ["unsubscribe"]
    [group] = events["groupleaver@example.com"]  # group_resubscribe maps to nothing
    assert (group["type"], group["details"]["asm_group_id"]) == ("unsubscribe", "10")

    assert await suppressions(tmp_path) == {
        "nobody@example.com": ("hard-bounce", None),
        "complainer@example.com": ("complaint", None),
        "leaver@example.com": ("unsubscribe", None),
        "groupleaver@example.com": ("unsubscribe", None),
    }


async def test_sendgrid_replay_is_deduplicated(
    client: Client, sendgrid_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    body = (DATA / "sendgrid_events.json").read_bytes()
    headers = sendgrid_headers(sendgrid_key, body)
    first = await client.post("/webhooks/sendgrid", data=body, headers=headers)
    assert first.status == 200
    recorded = await rows(tmp_path)
    again = await client.post("/webhooks/sendgrid", data=body, headers=headers)
    assert again.status == 200
    assert await again.json() == {"accepted": 0, "duplicates": 13, "recorded": 0}
    assert await rows(tmp_path) == recorded

    # the same events re-signed later (SendGrid's own retry) are still duplicates
    resigned = sendgrid_headers(sendgrid_key, body, str(int(NOW) + 60))
    third = await client.post("/webhooks/sendgrid", data=body, headers=resigned)
    assert (await third.json())["duplicates"] == 13
    assert await rows(tmp_path) == recorded


def _flip_one_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize(
    "tamper",
    ["body", "wrong-key", "no-signature", "no-timestamp", "stale", "future", "signature-byte"],
)
async def test_sendgrid_bad_signature_is_401_and_records_nothing(
    client: Client, sendgrid_key: ec.EllipticCurvePrivateKey, tmp_path: Path, tamper: str
) -> None:
    body = (DATA / "sendgrid_events.json").read_bytes()
    headers = sendgrid_headers(sendgrid_key, body)
    if tamper == "body":
        body = _flip_one_byte(body, body.index(b"nobody@example.com"))
    elif tamper == "wrong-key":
        headers = sendgrid_headers(ec.generate_private_key(ec.SECP256R1()), body)
    elif tamper == "no-signature":
        del headers[SENDGRID_SIGNATURE_HEADER]
    elif tamper == "no-timestamp":
        del headers[SENDGRID_TIMESTAMP_HEADER]
    elif tamper == "stale":
        headers = sendgrid_headers(sendgrid_key, body, str(int(NOW) - 301))
    elif tamper == "future":
        headers = sendgrid_headers(sendgrid_key, body, str(int(NOW) + 301))
    elif tamper == "signature-byte":
        raw = base64.b64decode(headers[SENDGRID_SIGNATURE_HEADER])
        headers[SENDGRID_SIGNATURE_HEADER] = base64.b64encode(
            _flip_one_byte(raw, len(raw) - 3)
        ).decode()
    resp = await client.post("/webhooks/sendgrid", data=body, headers=headers)
    assert resp.status == 401
    assert await resp.json() == {"error": "bad signature"}
    await nothing_recorded(tmp_path)


async def test_sendgrid_signed_garbage_is_400(
    client: Client, sendgrid_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    for body in (b"[{not json", b'{"event": "delivered"}'):
        resp = await client.post(
            "/webhooks/sendgrid", data=body, headers=sendgrid_headers(sendgrid_key, body)
        )
        assert resp.status == 400
        payload = await resp.json()
        assert payload["error"] == "bad payload" and payload["detail"]
    await nothing_recorded(tmp_path)


# ---------------------------------------------------------------------------------------------
# Mailgun
# ---------------------------------------------------------------------------------------------


MAILGUN_EXPECTED: dict[str, tuple[str, str, str | None, str | None]] = {
    # fixture: (type, recipient, bounce_type, suppression)
    "delivered": ("delivered", "alice@example.com", None, None),
    "failed_permanent": ("bounced", "nobody@example.com", "hard", "hard-bounce"),
    "failed_suppressed": ("dropped", "gone@example.com", None, None),
    "failed_temporary": ("deferred", "full@example.com", "soft", None),
    "opened": ("open", "alice@example.com", None, None),
    "clicked": ("click", "alice@example.com", None, None),
    "unsubscribed": ("unsubscribe", "leaver@example.com", None, "unsubscribe"),
    "complained": ("complaint", "complainer@example.com", None, "complaint"),
}


async def test_mailgun_events_map_and_suppress(client: Client, tmp_path: Path) -> None:
    fixtures = fixture("mailgun_events.json")
    for name, (kind, recipient, bounce_type, suppression) in MAILGUN_EXPECTED.items():
        before = len(await rows(tmp_path))
        resp = await client.post("/webhooks/mailgun", json=mailgun_signature(fixtures[name]))
        assert resp.status == 200, name
        assert await resp.json() == {"accepted": 1, "duplicates": 0, "recorded": 1}, name
        [event] = (await rows(tmp_path))[before:]
        assert (event["type"], event["recipient"]) == (kind, recipient), name
        assert event["details"]["provider"] == "mailgun"
        assert event["details"]["provider_event_id"] == fixtures[name]["id"]
        assert event["details"]["raw_type"] == fixtures[name]["event"]
        assert event["details"].get("bounce_type") == bounce_type, name
        assert event["at"] == fixtures[name]["timestamp"]
        if suppression:
            assert (await suppressions(tmp_path))[recipient] == (suppression, None), name

    events = by_recipient(await rows(tmp_path))
    delivered, opened, clicked = events["alice@example.com"]
    assert (delivered["campaign"], delivered["delivery_id"], delivered["message_pk"]) == (
        "spring-sale",
        42,
        7,
    )
    assert (
        delivered["details"]["smtp_message_id"] == "20130503182626.18666.16540@sandbox.mailgun.org"
    )
    assert "ua" not in opened["details"]  # [privacy] user_agent = "parsed" (the default)
    assert opened["details"]["client"]["os"] == "Linux"
    assert opened["details"]["ip"] == "50.56.129.0"
    assert clicked["details"]["url"] == "https://example.com/offer?utm_source=mailgun"
    [bounce] = events["nobody@example.com"]
    assert bounce["details"]["reason"] == "userunknown"
    assert bounce["details"]["status"] == "5.1.1"
    assert bounce["delivery_id"] == 43
    assert set(await suppressions(tmp_path)) == {
        "nobody@example.com",
        "leaver@example.com",
        "complainer@example.com",
    }


async def test_mailgun_replays_are_deduplicated(client: Client, tmp_path: Path) -> None:
    fixtures = fixture("mailgun_events.json")
    payload = mailgun_signature(fixtures["failed_permanent"])
    assert (await (await client.post("/webhooks/mailgun", json=payload)).json())["accepted"] == 1
    recorded = await rows(tmp_path)

    # the very same request
    again = await client.post("/webhooks/mailgun", json=payload)
    assert again.status == 200
    assert await again.json() == {"accepted": 0, "duplicates": 1, "recorded": 0}

    # Mailgun's signature covers timestamp + token only: a captured signature reused with another
    # body verifies, and one-time use of the token is what refuses it
    forged = copy.deepcopy(payload)
    forged["event-data"] = dict(fixtures["unsubscribed"], recipient="victim@example.com")
    resp = await client.post("/webhooks/mailgun", json=forged)
    assert await resp.json() == {"accepted": 0, "duplicates": 1, "recorded": 0}

    # Mailgun's retry of the same event, freshly signed: the event id (+ its timestamp) matches
    retry = mailgun_signature(fixtures["failed_permanent"], timestamp=str(int(NOW) + 30))
    resp = await client.post("/webhooks/mailgun", json=retry)
    assert await resp.json() == {"accepted": 0, "duplicates": 1, "recorded": 0}

    assert await rows(tmp_path) == recorded
    assert set(await suppressions(tmp_path)) == {"nobody@example.com"}


@pytest.mark.parametrize(
    "tamper",
    ["wrong-key", "signature-byte", "token", "timestamp", "stale", "no-signature", "empty"],
)
async def test_mailgun_bad_signature_is_401_and_records_nothing(
    client: Client, tmp_path: Path, tamper: str
) -> None:
    event_data = fixture("mailgun_events.json")["failed_permanent"]
    payload = mailgun_signature(event_data)
    block = payload["signature"]
    if tamper == "wrong-key":
        payload = mailgun_signature(event_data, key=secrets.token_hex(16))
    elif tamper == "signature-byte":
        sig = block["signature"]
        block["signature"] = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    elif tamper == "token":
        block["token"] = block["token"][:-1] + ("a" if block["token"][-1] != "a" else "b")
    elif tamper == "timestamp":
        block["timestamp"] = str(int(block["timestamp"]) - 1)
    elif tamper == "stale":
        payload = mailgun_signature(event_data, timestamp=str(int(NOW) - 301))
    elif tamper == "no-signature":
        del payload["signature"]
    elif tamper == "empty":
        block["signature"] = ""
    resp = await client.post("/webhooks/mailgun", json=payload)
    assert resp.status == 401
    assert await resp.json() == {"error": "bad signature"}
    await nothing_recorded(tmp_path)


async def test_mailgun_unparseable_is_400(client: Client, tmp_path: Path) -> None:
    resp = await client.post(
        "/webhooks/mailgun", data=b'{"signature": ', headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "bad payload"
    # signed, but without event-data
    signed = mailgun_signature({})
    del signed["event-data"]
    resp = await client.post("/webhooks/mailgun", json=signed)
    assert resp.status == 400
    await nothing_recorded(tmp_path)


def legacy_fields(token: str, key: str = MAILGUN_KEY) -> list[tuple[str, str]]:
    ts = str(int(NOW))
    digest = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return [
        ("event", "bounced"),
        ("recipient", "legacy@example.com"),
        ("domain", "sandbox.mailgun.org"),
        ("code", "550"),
        ("error", "550 5.1.1 The email account that you tried to reach does not exist."),
        ("Message-Id", "<20130503192659.13651.20287@sandbox.mailgun.org>"),
        ("outpost_campaign", "legacy-campaign"),
        ("outpost_delivery", "99"),
        ("timestamp", ts),
        ("token", token),
        ("signature", digest),
    ]


@pytest.mark.parametrize("multipart", [False, True])
async def test_mailgun_legacy_form_webhook(client: Client, tmp_path: Path, multipart: bool) -> None:
    token = secrets.token_hex(25)
    form = aiohttp.FormData(legacy_fields(token), default_to_multipart=multipart)
    resp = await client.post("/webhooks/mailgun", data=form)
    assert resp.status == 200
    assert await resp.json() == {"accepted": 1, "duplicates": 0, "recorded": 1}
    [event] = await rows(tmp_path)
    assert (event["type"], event["recipient"], event["campaign"], event["delivery_id"]) == (
        "bounced",
        "legacy@example.com",
        "legacy-campaign",
        99,
    )
    assert event["details"]["bounce_type"] == "hard"
    assert await suppressions(tmp_path) == {"legacy@example.com": ("hard-bounce", None)}

    replay = await client.post(
        "/webhooks/mailgun",
        data=aiohttp.FormData(legacy_fields(token), default_to_multipart=multipart),
    )
    assert await replay.json() == {"accepted": 0, "duplicates": 1, "recorded": 0}

    bad = aiohttp.FormData(legacy_fields(secrets.token_hex(25), key="not-the-key"))
    assert (await client.post("/webhooks/mailgun", data=bad)).status == 401
    assert len(await rows(tmp_path)) == 1


# ---------------------------------------------------------------------------------------------
# Amazon SES through SNS
# ---------------------------------------------------------------------------------------------


def test_sns_string_to_sign_matches_the_documented_examples() -> None:
    # the two examples of "Verifying the signatures of Amazon SNS messages"
    notification = {
        "Type": "Notification",
        "Message": "My Test Message",
        "MessageId": "4d4dc071-ddbf-465d-bba8-08f81c89da64",
        "Subject": "My subject",
        "Timestamp": "2019-01-31T04:37:04.321Z",
        "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P",
        "SignatureVersion": "1",
        "Signature": "ignored",
        "UnsubscribeURL": "https://example.com/not-signed",
    }
    assert sns_string_to_sign(notification) == (
        b"Message\nMy Test Message\n"
        b"MessageId\n4d4dc071-ddbf-465d-bba8-08f81c89da64\n"
        b"Subject\nMy subject\n"
        b"Timestamp\n2019-01-31T04:37:04.321Z\n"
        b"TopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
        b"Type\nNotification\n"
    )
    without_subject = {k: v for k, v in notification.items() if k != "Subject"}
    assert b"Subject" not in (sns_string_to_sign(without_subject) or b"")
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "Message": "My Test Message",
        "MessageId": "3d891288-136d-417f-bc05-901c108273ee",
        "SubscribeURL": "https://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription"
        "&TopicArn=arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P&Token=233...",
        "Timestamp": "2019-01-31T19:25:13.719Z",
        "Token": "233...",
        "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P",
    }
    assert sns_string_to_sign(confirmation) == (
        b"Message\nMy Test Message\n"
        b"MessageId\n3d891288-136d-417f-bc05-901c108273ee\n"
        b"SubscribeURL\nhttps://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription"
        b"&TopicArn=arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P&Token=233...\n"
        b"Timestamp\n2019-01-31T19:25:13.719Z\n"
        b"Token\n233...\n"
        b"TopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
        b"Type\nSubscriptionConfirmation\n"
    )
    assert sns_string_to_sign({"Type": "Other"}) is None
    assert sns_string_to_sign({"Type": "Notification", "Message": "x"}) is None


SES_EXPECTED: dict[str, tuple[list[tuple[str, str, str | None]], dict[str, str]]] = {
    # fixture: [(type, recipient, bounce_type)], suppressions
    "bounce": (
        [("bounced", "recipient@example.com", "hard")],
        {"recipient@example.com": "hard-bounce"},
    ),
    "bounce_notification_mixed": (
        [
            ("bounced", "recipient1@example.com", "hard"),
            ("deferred", "recipient2@example.com", "soft"),
        ],
        {"recipient1@example.com": "hard-bounce"},
    ),
    "bounce_transient": ([("bounced", "full@example.com", "soft")], {}),
    "bounce_account_suppressed": ([("dropped", "listed@example.com", None)], {}),
    "complaint": (
        [("complaint", "complainer@example.com", None)],
        {"complainer@example.com": "complaint"},
    ),
    "delivery": ([("delivered", "recipient@example.com", None)], {}),
    "open": ([("open", "recipient@example.com", None)], {}),
    "click": ([("click", "recipient@example.com", None)], {}),
}


@pytest.mark.parametrize("version", ["1", "2"])
async def test_ses_notifications_map_and_suppress(
    client: Client, sns_key: rsa.RSAPrivateKey, tmp_path: Path, version: str
) -> None:
    records = fixture("ses_events.json")
    wanted_suppressions: dict[str, tuple[str, None]] = {}
    for name, (expected, suppress) in SES_EXPECTED.items():
        before = len(await rows(tmp_path))
        message = sns_notification(records[name], sns_key, version=version, subject="Amazon SES")
        resp = await client.post(
            "/webhooks/ses",
            data=json.dumps(message).encode(),
            headers={
                "Content-Type": "text/plain; charset=UTF-8",
                "x-amz-sns-message-type": "Notification",
            },
        )
        assert resp.status == 200, name
        assert await resp.json() == {"accepted": 1, "duplicates": 0, "recorded": len(expected)}, (
            name
        )
        got = (await rows(tmp_path))[before:]
        assert [
            (e["type"], e["recipient"], e["details"].get("bounce_type")) for e in got
        ] == expected, name
        for e in got:
            assert e["details"]["provider"] == "ses"
            assert e["details"]["provider_event_id"] == message["MessageId"]
        wanted_suppressions.update({a: (r, None) for a, r in suppress.items()})
        assert await suppressions(tmp_path) == wanted_suppressions, name

    events = by_recipient(await rows(tmp_path))
    bounce = events["recipient@example.com"][0]
    assert bounce["details"]["reason"] == "userunknown"
    assert bounce["details"]["status"] == "5.1.1"
    assert bounce["details"]["text"] == "smtp; 550 5.1.1 user unknown"
    assert (bounce["campaign"], bounce["delivery_id"], bounce["message_pk"]) == (
        "spring-sale",
        43,
        7,
    )
    assert (
        bounce["at"]
        == datetime.datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=datetime.UTC).timestamp()
    )
    delivered = [e for e in events["recipient@example.com"] if e["type"] == "delivered"][0]
    assert (delivered["delivery_id"], delivered["details"]["text"]) == (
        42,
        "250 2.6.0 Message received",
    )
    click = [e for e in events["recipient@example.com"] if e["type"] == "click"][0]
    assert (
        click["details"]["url"]
        == "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html"
    )
    assert click["details"]["ip"] == "192.0.2.0"
    [transient] = events["full@example.com"]
    assert transient["details"]["reason"] == "mailboxfull"
    [listed] = events["listed@example.com"]
    assert listed["details"]["reason"] == "provider-suppressed"


async def test_ses_replay_is_deduplicated(
    client: Client, sns_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    message = sns_notification(fixture("ses_events.json")["complaint"], sns_key)
    body = json.dumps(message).encode()
    assert (await (await client.post("/webhooks/ses", data=body)).json())["accepted"] == 1
    recorded = await rows(tmp_path)
    again = await client.post("/webhooks/ses", data=body)
    assert again.status == 200
    assert await again.json() == {"accepted": 0, "duplicates": 1, "recorded": 0}
    assert await rows(tmp_path) == recorded


@pytest.mark.parametrize(
    "tamper",
    [
        "message-byte",
        "other-certificate",
        "no-signature",
        "stale",
        "unknown-version",
        "version-swap",
        "type-swap",
        "subject-added",
    ],
)
async def test_ses_bad_signature_is_401_and_records_nothing(
    client: Client,
    sns_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    tmp_path: Path,
    tamper: str,
) -> None:
    record = fixture("ses_events.json")["bounce"]
    message = sns_notification(record, sns_key)
    if tamper == "message-byte":
        text = message["Message"]
        i = text.index("recipient@example.com")
        message["Message"] = text[:i] + "R" + text[i + 1 :]
    elif tamper == "other-certificate":
        message = sns_notification(record, other_rsa_key)
    elif tamper == "no-signature":
        del message["Signature"]
    elif tamper == "stale":
        message = sns_notification(record, sns_key, at=NOW - 3601)
    elif tamper == "unknown-version":
        message["SignatureVersion"] = "3"
    elif tamper == "version-swap":
        message["SignatureVersion"] = "1"  # signed with SHA-256, claims SHA-1
    elif tamper == "type-swap":
        message["Type"] = "UnsubscribeConfirmation"
    elif tamper == "subject-added":
        message["Subject"] = "injected"
    resp = await client.post("/webhooks/ses", data=json.dumps(message).encode())
    assert resp.status == 401
    assert await resp.json() == {"error": "bad signature"}
    await nothing_recorded(tmp_path)


async def test_ses_subscription_confirmation_is_verified_and_answered(
    client: Client, sns_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    template = fixture("sns_subscription_confirmation.json")
    confirmation = sns_sign(dict(template, Timestamp=sns_time(NOW)), sns_key, version="1")
    resp = await client.post("/webhooks/ses", data=json.dumps(confirmation).encode())
    assert resp.status == 200
    payload = await resp.json()
    assert payload["subscribe_url"] == template["SubscribeURL"]
    assert payload["accepted"] == 0
    await nothing_recorded(tmp_path)

    # the documentation's placeholder signature (not ours) is refused
    forged = dict(template, Timestamp=sns_time(NOW))
    resp = await client.post("/webhooks/ses", data=json.dumps(forged).encode())
    assert resp.status == 401


async def test_ses_unexpected_topic_is_403(
    store: Store, config: WebhookConfig, clock: Clock, sns_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    restricted = WebhookConfig(
        **{**config.__dict__, "ses_topic_arns": ("arn:aws:sns:eu-west-1:1:other",)}
    )
    c = await serve(WebhookHandler(store, restricted, MemoryDedup(), clock=clock))
    try:
        message = sns_notification(fixture("ses_events.json")["complaint"], sns_key)
        resp = await c.post("/webhooks/ses", data=json.dumps(message).encode())
        assert resp.status == 403
        assert (await resp.json())["error"] == "unexpected topic"
    finally:
        await c.close()
    await nothing_recorded(tmp_path)


async def test_ses_plain_text_notification_is_accepted_without_events(
    client: Client, sns_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    text = "Successfully validated SNS topic for Amazon SES event publishing."
    resp = await client.post(
        "/webhooks/ses", data=json.dumps(sns_notification(text, sns_key)).encode()
    )
    assert await resp.json() == {"accepted": 1, "duplicates": 0, "recorded": 0}
    resp = await client.post("/webhooks/ses", data=b"not json")
    assert resp.status == 400
    await nothing_recorded(tmp_path)


# ---------------------------------------------------------------------------------------------
# routing, limits, configuration, store failures
# ---------------------------------------------------------------------------------------------


async def test_unknown_and_disabled_providers_are_404(
    store: Store, tmp_path: Path, clock: Clock
) -> None:
    (tmp_path / "mailgun.key").write_text(MAILGUN_KEY)
    only_mailgun = WebhookConfig(mailgun_signing_key_file=str(tmp_path / "mailgun.key"))
    # the store given as a getter, as the sidecar does when it opens the store at start-up
    c = await serve(WebhookHandler(lambda: store, only_mailgun, MemoryDedup(), clock=clock))
    try:
        resp = await c.post("/webhooks/postmark", data=b"{}")
        assert resp.status == 404
        assert (await resp.json())["error"] == "unknown provider"
        for provider in ("sendgrid", "ses"):
            resp = await c.post(f"/webhooks/{provider}", data=b"[]")
            assert resp.status == 404
            assert await resp.json() == {"error": "not enabled", "provider": provider}
        resp = await c.post(
            "/webhooks/mailgun", json=mailgun_signature(fixture("mailgun_events.json")["delivered"])
        )
        assert resp.status == 200
        assert [e["type"] for e in await rows(tmp_path)] == ["delivered"]
    finally:
        await c.close()


async def test_body_over_the_limit_is_413(
    client: Client, sendgrid_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    body = b"[" + b" " * 1_000_000 + b"]"
    resp = await client.post(
        "/webhooks/sendgrid", data=body, headers=sendgrid_headers(sendgrid_key, body)
    )
    assert resp.status == 413
    assert (await resp.json())["error"] == "too large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(20):
            yield b" " * 60_000

    resp = await client.post("/webhooks/ses", data=chunks())
    assert resp.status == 413
    await nothing_recorded(tmp_path)


async def test_store_failure_answers_500_and_forgets_the_ids(
    tmp_path: Path, config: WebhookConfig, clock: Clock, sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    broken = await SqliteStore.open(tmp_path / "broken.db", durable=False)
    await broken.close()  # every write now fails
    dedup = MemoryDedup()
    c = await serve(WebhookHandler(broken, config, dedup, clock=clock))
    try:
        body = (DATA / "sendgrid_events.json").read_bytes()
        resp = await c.post(
            "/webhooks/sendgrid", data=body, headers=sendgrid_headers(sendgrid_key, body)
        )
        assert resp.status == 500
        assert len(dedup) == 0  # the provider's retry will be accepted
    finally:
        await c.close()


def test_secret_files_are_checked_at_start(tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_text("bm90IGEga2V5")
    with pytest.raises(ConfigError, match="sendgrid_verification_key_file"):
        WebhookSecrets.load(WebhookConfig(sendgrid_verification_key_file=str(tmp_path / "bad.key")))
    (tmp_path / "bad.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(ConfigError, match="ses_certificate_file"):
        WebhookSecrets.load(WebhookConfig(ses_certificate_file=str(tmp_path / "bad.pem")))
    with pytest.raises(ConfigError, match="mailgun_signing_key_file"):
        WebhookSecrets.load(WebhookConfig(mailgun_signing_key_file=str(tmp_path / "missing")))
    assert WebhookSecrets.load(WebhookConfig()) == WebhookSecrets()


# ---------------------------------------------------------------------------------------------
# pure parts
# ---------------------------------------------------------------------------------------------


def test_verify_functions_take_an_injected_clock(
    sendgrid_key: ec.EllipticCurvePrivateKey, sns_key: rsa.RSAPrivateKey
) -> None:
    body = b'[{"event":"delivered"}]'
    headers = sendgrid_headers(sendgrid_key, body)
    sig, ts = headers[SENDGRID_SIGNATURE_HEADER], headers[SENDGRID_TIMESTAMP_HEADER]
    pem_key = spki_b64(sendgrid_key)
    assert verify_sendgrid(pem_key, body, sig, ts, now=NOW)
    assert verify_sendgrid(pem_key, body, sig, ts, now=NOW + 300)
    assert not verify_sendgrid(pem_key, body, sig, ts, now=NOW + 301)
    assert verify_sendgrid(pem_key, body, sig, ts, now=NOW + 1000, tolerance=1000)
    armoured = "-----BEGIN PUBLIC KEY-----\n" + pem_key + "\n-----END PUBLIC KEY-----\n"
    assert verify_sendgrid(armoured, body, sig, ts, now=NOW)
    assert not verify_sendgrid("not a key", body, sig, ts, now=NOW)
    assert not verify_sendgrid(pem_key, body, "%%%", ts, now=NOW)

    block = mailgun_signature({})["signature"]
    args = (MAILGUN_KEY, block["timestamp"], block["token"])
    assert verify_mailgun(*args, block["signature"], now=NOW)
    assert verify_mailgun(*args, block["signature"].upper(), now=NOW)
    assert not verify_mailgun(*args, block["signature"], now=NOW + 301)
    assert not verify_mailgun(MAILGUN_KEY, "yesterday", block["token"], block["signature"], now=NOW)

    message = sns_notification("hello", sns_key)
    pem = self_signed(sns_key, "sns")
    assert verify_sns(message, pem, now=NOW + 10)
    assert not verify_sns(message, pem, now=NOW + 301)
    assert verify_sns(message, pem, now=NOW + 3000, tolerance=3600)
    # several certificates in the file (AWS rotates them): any one may have signed
    other = self_signed(rsa.generate_private_key(public_exponent=65537, key_size=2048), "old")
    assert verify_sns(message, other + pem, now=NOW)
    assert not verify_sns(message, other, now=NOW)


@pytest.mark.parametrize(
    ("bounce_type", "sub_type", "status", "diagnostic", "expected"),
    [
        ("Permanent", "General", "5.1.1", "smtp; 550 5.1.1 user unknown", ("hard", "userunknown")),
        ("Permanent", "General", "", "", ("soft", "onhold")),
        ("Permanent", "NoEmail", "5.0.0", "", ("hard", "userunknown")),
        ("Permanent", "Suppressed", "5.1.1", "", ("soft", "suppressed")),
        ("Permanent", "General", "5.7.1", "550 5.7.1 blocked using Spamhaus", ("soft", "blocked")),
        ("Transient", "General", "", "", ("soft", "onhold")),
        ("Transient", "MailboxFull", "5.2.2", "552 5.2.2 Mailbox full", ("soft", "mailboxfull")),
        ("Transient", "MessageTooLarge", "", "", ("soft", "mesgtoobig")),
        ("Transient", "ContentRejected", "", "", ("soft", "contenterror")),
        ("Transient", "General", "5.1.1", "550 5.1.1 user unknown", ("soft", "userunknown")),
        ("Undetermined", "Undetermined", "", "", ("soft", "undefined")),
        (
            "Undetermined",
            "Undetermined",
            "5.1.1",
            "550 5.1.1 no such user",
            ("hard", "userunknown"),
        ),
    ],
)
def test_ses_bounce_verdicts(
    bounce_type: str, sub_type: str, status: str, diagnostic: str, expected: tuple[str, str]
) -> None:
    assert ses_bounce_verdict(bounce_type, sub_type, status, diagnostic) == expected


def test_mapping_edge_cases() -> None:
    assert sendgrid_events({"event": "processed", "email": "a@example.com"}, NOW) == []
    assert sendgrid_events({"event": "something_new", "email": "a@example.com"}, NOW) == []
    [event] = sendgrid_events({"event": "delivered", "email": " <A@Example.com> "}, NOW)
    assert (event.recipient, event.at, event.delivery_id) == ("A@Example.com", NOW, None)
    [event] = sendgrid_events({"event": "delivered", "email": "a@x", "outpost_delivery": "x1"}, NOW)
    assert event.delivery_id is None  # only whole numbers are our ids
    [old] = mailgun_events(
        {
            "event": "failed",
            "severity": "permanent",
            "reason": "old",
            "recipient": "a@example.com",
            "delivery-status": {"code": 550, "message": "550 5.1.1 user unknown"},
        },
        NOW,
    )
    assert (old.type, old.details["bounce_type"], old.details["reason"]) == (
        "bounced",
        "soft",
        "expired",
    )
    assert mailgun_events({"event": "accepted", "recipient": "a@example.com"}, NOW) == []


async def test_memory_dedup_is_bounded_and_expires() -> None:
    dedup = MemoryDedup(ttl=100.0, max_entries=3)
    assert await dedup.remember("p", "a", 0.0)
    assert not await dedup.remember("p", "a", 50.0)
    assert await dedup.remember("q", "a", 50.0)  # per provider
    assert await dedup.remember("p", "a", 101.0)  # expired, seen anew
    for i in range(5):
        assert await dedup.remember("p", f"n{i}", 102.0)
    assert len(dedup) == 3
    await dedup.forget("p", "n4")
    assert await dedup.remember("p", "n4", 103.0)


class FakeStoreMemory:
    """Stands for the store methods asked of the lead (not a patch of our modules)."""

    def __init__(self) -> None:
        self.rows: set[tuple[str, str]] = set()

    async def remember_webhook(self, provider: str, event_id: str, now: float) -> bool:
        if (provider, event_id) in self.rows:
            return False
        self.rows.add((provider, event_id))
        return True

    async def forget_webhook(self, provider: str, event_id: str) -> None:
        self.rows.discard((provider, event_id))


async def test_store_dedup_and_seen_before_use_the_store_interface() -> None:
    memory = FakeStoreMemory()
    assert not await seen_before(memory, "ses", "m1", NOW)
    assert await seen_before(memory, "ses", "m1", NOW)
    for dedup in (StoreDedup(memory), StoreDedup(lambda: memory)):
        assert not await dedup.remember("ses", "m1", NOW)
        assert await dedup.remember("ses", "m2", NOW)
        await dedup.forget("ses", "m2")
        assert memory.rows == {("ses", "m1")}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("broadcast", "broadcast"),
        ("campaign", "campaign:spring"),
        ("list", "list:news.example.com"),
    ],
)
async def test_provider_unsubscribes_take_the_configured_scope(
    store: Store, config: WebhookConfig, clock: Clock, tmp_path: Path, mode: str, expected: str
) -> None:
    """[streams] unsubscribe_scope applies to a provider's unsubscribe as to our own link: the
    campaign or list of the message the event names (by our delivery id), else broadcast."""
    await store.queue_message(
        NewMessage(
            queue_id="Q1",
            received_at=NOW - 60,
            mail_from="news@example.com",
            client_addr="127.0.0.1",
            raw=b"Subject: hi\r\n\r\nhello\r\n",
            recipients=("leaver@example.com",),
            campaign="spring",
            stream="broadcast",
            list_id="news.example.com",
        )
    )
    (lease,) = await store.lease_due_deliveries(NOW, 10, NOW + 60)
    await store.record_results(
        [Outcome(lease, Result(2, 250, "2.0.0", "ok"), "delivered", 0.0)], NOW
    )
    c = await serve(
        WebhookHandler(store, config, MemoryDedup(), clock=clock, unsubscribe_scope=mode)
    )
    try:
        named = dict(
            fixture("mailgun_events.json")["unsubscribed"],
            **{"user-variables": {"outpost_delivery": str(lease.delivery_id)}},
        )
        resp = await c.post("/webhooks/mailgun", json=mailgun_signature(named))
        assert resp.status == 200
        assert await resp.json() == {"accepted": 1, "duplicates": 0, "recorded": 1}
    finally:
        await c.close()
    (event,) = [r for r in await rows(tmp_path) if r["type"] == "unsubscribe"]
    assert (event["delivery_id"], event["details"]["scope"]) == (lease.delivery_id, expected)
    (entry,) = await store.list_suppressions(now=NOW)
    assert (entry["address"], entry["reason"], entry["scope"]) == (
        "leaver@example.com",
        "unsubscribe",
        expected,
    )
