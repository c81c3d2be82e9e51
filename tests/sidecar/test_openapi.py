"""The OpenAPI description (GET /api/openapi.json): a valid OpenAPI 3.1 document, the same set of
routes as the app's router (both ways), and real answers of the routes valid against it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from relay.config import Config
from relay.render.tokens import TokenKind
from relay.store import open_store
from sidecar import openapi
from sidecar.app import make_app
from tests.conftest import make_config
from tests.dnsserver import DnsServer
from tests.sidecar.helpers import ADMIN, HUMAN_UA, seed, sidecar, tamper, token, tracker_of
from tests.sidecar.outbound_helpers import Receiver, outbound_config, running
from tests.sidecar.test_send import MAIL, app_config

DOC_URI = "urn:outpost:openapi"
SCOPED = {"Authorization": "Bearer jobs-operate-token"}
READ = {"Authorization": "Bearer jobs-read-token"}
DATA = Path(__file__).parent.parent / "data"
# a value for each path parameter of the documented admin GET routes (on the store seeded below)
PATH_VALUES = {
    "queue_id": "Q1",
    "campaign": "spring",
    "address": "a@example.org",
    "name": "app",
    "domain": "shop.example",
}


def registered_operations(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route in the router, as the document names them: HEAD folded
    into GET, a static resource as its one documented path pattern."""
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical
        if path in openapi.STATIC_PREFIXES:
            path += "/{path}"
        found.add(("GET" if route.method == "HEAD" else route.method, path))
    return found


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def answer_pointer(doc: dict[str, Any], method: str, path: str, status: int) -> str:
    """The JSON pointer (in the document) of the JSON schema of an operation's answer."""
    base = f"/paths/{_escape(path)}/{method.lower()}/responses/{status}"
    response = doc["paths"][path][method.lower()]["responses"].get(str(status))
    assert response is not None, f"{method} {path}: status {status} is not documented"
    if "$ref" in response:
        base = response["$ref"].removeprefix("#")
        name = base.rsplit("/", 1)[-1]
        response = doc["components"]["responses"][name]
    assert "application/json" in response["content"], f"{method} {path} {status}: not JSON"
    return f"{base}/content/application~1json/schema"


def validator(doc: dict[str, Any], pointer: str) -> jsonschema.Draft202012Validator:
    """JSON Schema 2020-12 of the schema at a pointer of the document, its $refs resolved."""
    registry = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return jsonschema.Draft202012Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=registry)


def check(doc: dict[str, Any], pointer: str, value: Any) -> None:
    validator(doc, pointer).validate(value)


async def check_answer(
    doc: dict[str, Any], method: str, path: str, response: Any, status: int
) -> Any:
    """The answer has this status, documented for this operation, and a valid JSON body."""
    assert response.status == status, (method, path, response.status, await response.text())
    body = await response.json()
    check(doc, answer_pointer(doc, method, path, status), body)
    return body


def request_pointer(path: str, method: str) -> str:
    return f"/paths/{_escape(path)}/{method.lower()}/requestBody/content/application~1json/schema"


def scoped_config(tmp_path: Path, dns: DnsServer, webhook_url: str) -> Config:
    """Two apps, a token of one app (operate) and a read token; a webhook destination; shaping,
    warm-up and DNS so every deliverability route has something to say."""
    (tmp_path / "jobs.token").write_text("jobs-operate-token\n")
    (tmp_path / "read.token").write_text("jobs-read-token\n")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    return outbound_config(
        tmp_path,
        webhooks=[{"name": "app", "url": webhook_url}],
        sections={
            "apps": [{"name": "jobs", "sender_domains": ["jobs.example.com"]}],
            "admin_tokens": [
                {"token_file": str(tmp_path / "jobs.token"), "scope": "app:jobs"},
                {"token_file": str(tmp_path / "read.token"), "scope": "app:jobs", "role": "read"},
            ],
            "tracking": {"opens": True, "clicks": True, "unsubscribe": True},
            "shaping": [{"name": "slow", "domains": ["slow.example"], "per_minute": 30}],
            "warmup": [{"domain": "example.com", "start": today, "daily_limits": [50, 100]}],
            "delivery": {"dns_nameservers": [dns.nameserver]},
        },
    )


@asynccontextmanager
async def populated(tmp_path: Path) -> AsyncIterator[tuple[TestClient, dict[str, Any]]]:
    """The sidecar over a store with messages (delivered, bounced, deferred), opens and clicks,
    a suppression, a tracking opt-out, an unmatched report, a health pause, a shaping state
    and a domain pause, events sent to a webhook; and the served document."""
    dns = DnsServer(
        {
            ("shop.example", "MX"): [(10, "mx.shop.example")],
            ("mx.shop.example", "A"): ["127.0.0.1"],
            ("shop.example", "TXT"): ['"v=spf1 ip4:127.0.0.1 -all"'],
        }
    )
    await dns.start()
    receiver = await Receiver().start()
    try:
        config = scoped_config(tmp_path, dns, receiver.url)
        ids = await seed(
            config, "Q1", ["a@example.org", "b@example.net"], links=["https://example.com/a"]
        )
        ids |= await seed(config, "Q2", ["c@example.org"], state="bounced")
        await seed(config, "Q3", ["d@slow.example"], campaign="autumn", state="deferred")
        now = time.time()
        async with await open_store(config.store, durable=False) as store:
            await store.suppress("a@example.org", "manual", now, None, "asked", "all", "")
            await store.pause_sender("domain", "example.com", "bounce rate", now)
            await store.record_unmatched(now, "bounced", "a@example.org", {"status": "5.1.1"})
            await store.save_shaping(
                [
                    {
                        "bucket": "slow",
                        "rule": "slow",
                        "rate_per_minute": 15.0,
                        "throttles": 1,
                        "reason": "throttled: 421 4.7.28 slow down",
                    }
                ],
                now,
            )
            await store.pause(now, "slow.example")
            await store.add_tracking_optout("o@example.org", now, "asked")
        async with running(config) as client:
            hit = {"User-Agent": HUMAN_UA}
            await client.get(
                f"/o/{token(config, TokenKind.OPEN, ids['a@example.org'])}", headers=hit
            )
            await client.get(
                f"/c/{token(config, TokenKind.CLICK, ids['a@example.org'], 0)}",
                headers=hit,
                allow_redirects=False,
            )
            await tracker_of(client).flush()
            await receiver.wait_events(1)  # the destination has attempts to show
            served = await client.get(openapi.OPENAPI_PATH, headers=ADMIN)
            assert served.status == 200
            yield client, await served.json()
    finally:
        await receiver.stop()
        dns.stop()


@pytest.mark.usefixtures("store_backend")
async def test_the_served_document_is_valid_openapi_31(tmp_path: Path) -> None:
    async with populated(tmp_path) as (client, doc):
        OpenAPIV31SpecValidator(doc).validate()
        assert doc["openapi"] == "3.1.0"
        assert doc == openapi.document()
        assert set(doc["components"]["securitySchemes"]) >= {"adminToken", "ingestToken", "appKey"}
        # any token may read it; without one it is a 401 like every /api/ path
        scoped = await client.get(openapi.OPENAPI_PATH, headers=SCOPED)
        assert await scoped.json() == doc
        refused = await client.get(openapi.OPENAPI_PATH)
        body = await check_answer(doc, "GET", openapi.OPENAPI_PATH, refused, 401)
        assert body["error"] == "unauthorized"


def test_the_document_and_the_router_name_the_same_routes(tmp_path: Path) -> None:
    config = outbound_config(tmp_path)
    doc = openapi.document()
    registered = registered_operations(make_app(config))
    documented = documented_operations(doc)
    assert registered - documented == set(), "registered but not documented"
    assert documented - registered == set(), "documented but not registered"
    # every GET answers HEAD too (aiohttp's add_get): the document's GET stands for both
    assert len(registered) == len(documented)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_a_route_the_document_misses_is_found(tmp_path: Path) -> None:
    """The route test compares with the real router: a route added without a description,
    or a description whose route went away, is a difference."""
    app = make_app(outbound_config(tmp_path))

    async def extra(request: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError

    app.router.add_get("/api/undocumented", extra)
    missing = registered_operations(app) - documented_operations(openapi.document())
    assert missing == {("GET", "/api/undocumented")}


def json_admin_gets(doc: dict[str, Any]) -> list[str]:
    """Every documented GET under /api/ whose 200 is JSON."""
    return [
        path
        for path, ops in doc["paths"].items()
        if path.startswith("/api/")
        and "get" in ops
        and "application/json" in ops["get"]["responses"]["200"]["content"]
    ]


@pytest.mark.usefixtures("store_backend")
async def test_every_admin_get_answers_as_documented(tmp_path: Path) -> None:
    async with populated(tmp_path) as (client, doc):
        paths = json_admin_gets(doc)
        assert len(paths) >= 25  # the admin API, not an empty loop
        queries = {"/api/messages": {"q": "Q1"}}
        for path in paths:
            url = path.format(**PATH_VALUES)
            r = await client.get(url, headers=ADMIN, params=queries.get(path, {}))
            body = await check_answer(doc, "GET", path, r, 200)
            assert body, path
        # the lists are not empty: their items were checked against the item schemas
        for path, key in (
            ("/api/queue", "deliveries"),
            ("/api/waiting", "deliveries"),
            ("/api/suppressions", "suppressions"),
            ("/api/tracking-optouts", "optouts"),
            ("/api/reports/unmatched", "reports"),
            ("/api/health", "paused"),
            ("/api/shaping", "buckets"),
            ("/api/warmup", "domains"),
            ("/api/outbound", "destinations"),
            ("/api/outbound/{name}", "attempts"),
            ("/api/campaign-list", "campaigns"),
            ("/api/domains/{domain}/check", "findings"),
            ("/api/recipients/{address}", "events"),
            ("/api/privacy/{address}", "suppressions"),
            ("/api/privacy/{address}", "unmatched_reports"),
        ):
            r = await client.get(path.format(**PATH_VALUES), headers=ADMIN)
            assert (await r.json())[key], (path, key)
        recipient = await (await client.get("/api/recipients/a@example.org", headers=ADMIN)).json()
        assert recipient["suppression"]["address"] == "a@example.org"
        # the answers that are not JSON say what they are
        for path, kind in (
            ("/api/campaigns/spring/export.csv", "text/csv"),
            ("/api/suppressions/export.csv", "text/csv"),
        ):
            r = await client.get(path, headers=ADMIN)
            assert r.status == 200 and r.content_type == kind
        documented = doc["paths"]["/api/campaigns/{campaign}/export.csv"]["get"]["responses"]
        assert "text/csv" in documented["200"]["content"]


def test_no_admin_answer_schema_accepts_anything() -> None:
    doc = openapi.document()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if path.startswith("/api/") and schema is not None:
                    assert schema not in ({}, {"type": "object"}), (method, path, status)


@pytest.mark.usefixtures("store_backend")
async def test_error_answers_are_as_documented(tmp_path: Path) -> None:
    async with populated(tmp_path) as (client, doc):
        r = await client.get("/api/stats")
        body = await check_answer(doc, "GET", "/api/stats", r, 401)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="outpost"'
        assert body == {
            "error": "unauthorized",
            "detail": "a valid 'Authorization: Bearer <token>' header is required",
        }
        r = await client.get("/api/messages/NOPE", headers=ADMIN)
        body = await check_answer(doc, "GET", "/api/messages/{queue_id}", r, 404)
        assert body == {"error": "not_found", "detail": "no message with queue id 'NOPE'"}
        r = await client.get("/api/campaigns/nope/summary", headers=ADMIN)
        await check_answer(doc, "GET", "/api/campaigns/{campaign}/summary", r, 404)
        r = await client.get("/api/health", headers=SCOPED)  # a route of every app
        body = await check_answer(doc, "GET", "/api/health", r, 403)
        assert body == {
            "error": "forbidden",
            "detail": "a token of app jobs may not use GET /api/health",
        }
        r = await client.get("/api/messages/Q1", headers=SCOPED)  # another app's message
        await check_answer(doc, "GET", "/api/messages/{queue_id}", r, 404)
        r = await client.post("/api/queue/flush", headers=READ)
        body = await check_answer(doc, "POST", "/api/queue/flush", r, 403)
        assert body["detail"] == "this token may only read (role = read)"
        r = await client.get("/api/stats", headers=ADMIN, params={"since": "yesterday-ish"})
        await check_answer(doc, "GET", "/api/stats", r, 400)
        r = await client.get("/metrics", headers=SCOPED)
        await check_answer(doc, "GET", "/metrics", r, 403)
        r = await client.post("/api/suppressions", headers=ADMIN, data=b"[1, 2")
        body = await check_answer(doc, "POST", "/api/suppressions", r, 400)
        assert body == {"error": "bad_request", "detail": "the body must be a JSON object"}
        # nothing was changed by the refusals
        queue = await (await client.get("/api/queue", headers=ADMIN)).json()
        assert [d["queue_id"] for d in queue["deliveries"]] == ["Q3"]
        suppressed = await (await client.get("/api/suppressions", headers=ADMIN)).json()
        assert [s["address"] for s in suppressed["suppressions"]] == ["a@example.org"]


@pytest.mark.usefixtures("store_backend")
async def test_post_and_delete_answers_are_as_documented(tmp_path: Path) -> None:
    async with populated(tmp_path) as (client, doc):
        calls: list[tuple[str, str, str, dict[str, Any] | None, int]] = [
            (
                "POST",
                "/api/suppressions",
                "/api/suppressions",
                {"address": "n@example.org", "expires_in": "30d"},
                201,
            ),
            ("DELETE", "/api/suppressions/{address}", "/api/suppressions/n@example.org", None, 200),
            ("DELETE", "/api/suppressions/{address}", "/api/suppressions/n@example.org", None, 404),
            (
                "POST",
                "/api/tracking-optouts",
                "/api/tracking-optouts",
                {"target": "example.net"},
                201,
            ),
            (
                "POST",
                "/api/tracking-optouts",
                "/api/tracking-optouts",
                {"target": "example.net"},
                200,
            ),
            (
                "DELETE",
                "/api/tracking-optouts/{target}",
                "/api/tracking-optouts/example.net",
                None,
                200,
            ),
            ("POST", "/api/queue/{queue_id}/hold", "/api/queue/Q3/hold", None, 200),
            ("POST", "/api/queue/{queue_id}/release", "/api/queue/Q3/release", None, 200),
            ("POST", "/api/queue/{queue_id}/flush", "/api/queue/NOPE/flush", None, 404),
            ("POST", "/api/queue/pause", "/api/queue/pause", None, 200),
            ("POST", "/api/queue/resume", "/api/queue/resume", None, 200),
            ("POST", "/api/health/resume", "/api/health/resume", {"domain": "example.com"}, 200),
            ("POST", "/api/health/resume", "/api/health/resume", {"domain": "example.com"}, 404),
            ("POST", "/api/outbound/{name}/pause", "/api/outbound/app/pause", None, 200),
            ("POST", "/api/outbound/{name}/replay", "/api/outbound/app/replay", {"since": 0}, 200),
            ("POST", "/api/outbound/{name}/resume", "/api/outbound/nope/resume", None, 404),
            ("DELETE", "/api/privacy/{address}", "/api/privacy/b@example.net", None, 200),
        ]
        for method, path, url, body, status in calls:
            if body is not None:  # what we send is what the document says may be sent
                check(doc, request_pointer(path, method), body)
            r = await client.request(method, url, headers=ADMIN, json=body)
            await check_answer(doc, method, path, r, status)
        r = await client.post(
            "/api/suppressions/import",
            headers=ADMIN,
            data="address,reason\nq@example.org,manual\n,manual\n",
        )
        answer = await check_answer(doc, "POST", "/api/suppressions/import", r, 200)
        assert answer["imported"] == 1 and len(answer["rejected"]) == 1


@pytest.mark.usefixtures("store_backend")
async def test_reports_in_and_health_answer_as_documented(tmp_path: Path) -> None:
    async with populated(tmp_path) as (client, doc):
        await check_answer(doc, "GET", "/healthz", await client.get("/healthz"), 200)
        report = (DATA / "bounces" / "flufl-dsn_01.eml").read_bytes()
        r = await client.post("/ingest/dsn", data=report, headers=ADMIN)
        await check_answer(doc, "POST", "/ingest/dsn", r, 200)
        r = await client.post("/ingest/dsn", data=report)
        await check_answer(doc, "POST", "/ingest/dsn", r, 401)
        r = await client.post("/webhooks/sendgrid", data=b"[]")  # no key configured
        body = await check_answer(doc, "POST", "/webhooks/sendgrid", r, 404)
        assert body == {"error": "not enabled", "provider": "sendgrid"}
        r = await client.post("/webhooks/postmark", data=b"[]")
        await check_answer(doc, "POST", "/webhooks/{provider}", r, 404)


async def check_media(
    doc: dict[str, Any], method: str, path: str, response: Any, status: int
) -> None:
    """A non-JSON answer: this status, documented, with a documented content type."""
    assert response.status == status, (method, path, response.status)
    documented = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in documented, (method, path, status)
    content = documented[str(status)].get("content", {})
    assert not content or response.content_type in content or "*/*" in content, (
        method,
        path,
        response.content_type,
    )


@pytest.mark.usefixtures("store_backend")
async def test_tracking_pages_and_metrics_answer_as_documented(tmp_path: Path) -> None:
    async with populated(tmp_path) as (client, doc):
        config = make_config(tmp_path)  # the same secrets and token files
        delivery = 1  # a@example.org's, seeded first
        pixel = token(config, TokenKind.OPEN, delivery)
        click = token(config, TokenKind.CLICK, delivery, 0)
        unsub = token(config, TokenKind.UNSUBSCRIBE, delivery)
        no = {"allow_redirects": False}
        for method, path, url, status in (
            ("GET", "/o/{token}", f"/o/{pixel}.gif", 200),
            ("GET", "/o/{token}/{rest}", f"/o/{tamper(pixel)}/proxy/x", 200),
            ("GET", "/c/{token}", f"/c/{click}", 302),
            ("GET", "/c/{token}", f"/c/{tamper(click)}", 404),
            ("GET", "/u/{token}", f"/u/{unsub}", 200),
            ("GET", "/u/{token}", f"/u/{tamper(unsub)}", 404),
            ("POST", "/u/{token}", f"/u/{tamper(unsub)}", 404),
            ("GET", "/dashboard", "/dashboard", 303),
            ("GET", "/dashboard/queue", "/dashboard/queue", 303),  # no session: to the login
            ("GET", "/dashboard/login", "/dashboard/login", 200),
            ("GET", "/dashboard/static/{path}", "/dashboard/static/dashboard.css", 200),
        ):
            r = await client.request(method, url, **no)
            await check_media(doc, method, path, r, status)
        r = await client.post("/dashboard/login", data={"token": "wrong"}, **no)
        await check_media(doc, "POST", "/dashboard/login", r, 401)
        r = await client.post("/dashboard/login", data={"token": "test-admin-token"}, **no)
        await check_media(doc, "POST", "/dashboard/login", r, 303)
        r = await client.get("/metrics", headers=ADMIN)
        await check_media(doc, "GET", "/metrics", r, 200)


SEND = {"from": "n@jobs.example.com", "to": "r@example.org", "subject": "s", "text": "hi"}
RAW = {"mail_from": "", "to": ["r@example.org"], "message": "Subject: s\r\n\r\nhi\r\n"}


@pytest.mark.parametrize(
    ("schema", "body", "valid"),
    [
        ("SendRequest", SEND, True),
        (
            "SendRequest",
            {**SEND, "to": ["r@example.org"], "cc": ["c@example.org"], "track": "opens"},
            True,
        ),
        ("SendRequest", {k: v for k, v in SEND.items() if k != "text"}, False),  # no text, no html
        ("SendRequest", {**SEND, "track": "some"}, False),
        ("SendRequest", {**SEND, "attachments": [{"filename": "a.txt"}]}, False),
        ("SendRawRequest", RAW, True),
        (
            "SendRawRequest",
            {k: v for k, v in RAW.items() if k != "message"} | {"message_base64": "aGk="},
            True,
        ),
        ("SendRawRequest", {**RAW, "message_base64": "aGk="}, False),  # both
        ("SendRawRequest", {k: v for k, v in RAW.items() if k != "message"}, False),  # neither
    ],
)
def test_the_send_bodies_are_described_as_the_send_api_takes_them(
    schema: str, body: dict[str, Any], valid: bool
) -> None:
    """The send routes' bodies: the rules the document states."""
    doc = openapi.document()
    errors = list(validator(doc, f"/components/schemas/{schema}").iter_errors(body))
    assert (not errors) == valid, errors
    answers = doc["paths"]["/api/send"]["post"]["responses"]
    assert set(answers) == {"202", "400", "401", "408", "409", "413", "422", "429", "503"}


@pytest.mark.usefixtures("store_backend")
async def test_the_send_routes_answer_as_documented(tmp_path: Path) -> None:
    """Real answers of the send door, each validated against the document: 202, a replayed
    202, 400, 401, 413, 422 (each 422 code the accept path gives here), 429."""
    config, key = app_config(
        tmp_path, max_recipients=5, max_message_size=10_000, app={"rate_limit": "3/h"}
    )
    doc = openapi.document()
    raw = {
        "mail_from": "cron@jobs.example.com",
        "to": ["a@example.org"],
        "message": "From: cron@jobs.example.com\r\nSubject: r\r\n\r\nbody\r\n",
    }
    async with sidecar(config) as client:

        async def post(path: str, body: Any, status: int, headers: Any = None) -> Any:
            if headers is None:
                headers = key
            if status == 202:  # what is sent is what the document says may be sent
                check(doc, request_pointer(path, "POST"), body)
            r = await client.post(path, json=body, headers=headers)
            return await check_answer(doc, "POST", path, r, status)

        await post("/api/send", MAIL, 202)
        retry = {**key, "Idempotency-Key": "k-1"}
        first = await post("/api/send/raw", raw, 202, retry)
        assert await post("/api/send/raw", raw, 202, retry) == first
        await post("/api/send", {**MAIL, "subject": 1}, 400)
        await post("/api/send", MAIL, 401, {})
        await post("/api/send", {**MAIL, "text": "x" * 20_000}, 413)
        await post("/api/send", {**MAIL, "from": "ceo@other.example"}, 422)
        await post("/api/send", {**MAIL, "to": [f"r{i}@example.org" for i in range(6)]}, 422)
        await post("/api/send/raw", {**raw, "to": ["a@"]}, 422)
        await post(
            "/api/send/raw", {**raw, "message": "From: cron@jobs.example.com\r\n\r\n\x00"}, 422
        )
        await post("/api/send", MAIL, 202)
        await post("/api/send", MAIL, 429)
