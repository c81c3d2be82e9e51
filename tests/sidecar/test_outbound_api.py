"""Events-out admin API and `outpostctl webhooks`: state, lag, attempts, pause, resume, replay,
test; refusals with their JSON errors; the SSRF guard; a dead endpoint holds up nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from relay.cli import main as outpostctl
from relay.config import ConfigError
from relay.render.tokens import TokenKind
from tests.sidecar.helpers import ADMIN, queue_for_app, seed, token
from tests.sidecar.outbound_helpers import (
    SECRET_A,
    Receiver,
    api,
    eventually,
    outbound_config,
    record,
    running,
)

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


async def ctl(conf: Path, url: str, *args: str) -> tuple[int, list[Any], str]:
    """outpostctl in a thread (the sidecar runs on this loop): exit code, JSON lines, stderr."""

    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = outpostctl(["--config", str(conf), *args[:2], *args[2:], "--url", url])
        return code, out.getvalue(), err.getvalue()

    code, out, err = await asyncio.to_thread(run)
    return code, [json.loads(line) for line in out.splitlines()], err


def toml_config(tmp_path: Path, url: str) -> Path:
    """The same destinations as outbound_config, as a file for outpostctl."""
    (tmp_path / "admin.token").write_text("test-admin-token\n")
    conf = tmp_path / "ctl.toml"
    conf.write_text(
        f'[sidecar]\nadmin_token_file = "{tmp_path / "admin.token"}"\n'
        f'[[outbound.webhooks]]\nname = "app"\nurl = "{url}"\nallow_private = true\n'
        f'secret_file = "{tmp_path / "webhook.secrets"}"\n'
    )
    return conf


async def test_list_show_pause_resume_replay_and_test(tmp_path: Path) -> None:
    rx = await Receiver().start()
    try:
        config = outbound_config(tmp_path, webhooks=[{"name": "app", "url": rx.url}])
        conf = toml_config(tmp_path, rx.url)
        async with running(config) as client:
            url = str(client.make_url("")).rstrip("/")
            await record(config, 3)
            await rx.wait_events(3)

            async def sent() -> bool:  # the cursor is written after the receiver's answer
                _, body = await api(client, "GET", "/api/outbound/app")
                return int(body["sent"]) == 3

            await eventually(sent)
            code, rows, _ = await ctl(conf, url, "webhooks", "list")
            assert code == 0 and len(rows) == 1
            row = rows[0]
            assert (row["name"], row["kind"], row["state"], row["configured"]) == (
                "app",
                "webhook",
                "active",
                True,
            )
            assert row["target"] == rx.url and row["sent"] == 3
            code, rows, _ = await ctl(conf, url, "webhooks", "pause", "app")
            assert (code, rows) == (0, [{"name": "app", "state": "paused"}])
            await record(config, 2)

            async def lag() -> int:
                _, body = await api(client, "GET", "/api/outbound/app")
                return int(body["lag_events"])

            assert await eventually(lag) == 2
            await asyncio.sleep(0.1)  # several poll rounds
            assert len(rx.events()) == 3  # paused: nothing sent
            code, rows, _ = await ctl(conf, url, "webhooks", "show", "app")
            assert code == 0 and rows[0]["state"] == "paused" and rows[0]["lag_seconds"] > 0
            attempts = rows[0]["attempts"]  # acknowledged sends are logged per cursor write
            assert sum(a["acked"] for a in attempts) == 3 and {a["status"] for a in attempts} == {
                200
            }
            code, rows, _ = await ctl(conf, url, "webhooks", "resume", "app")
            assert code == 0
            got = await rx.wait_events(5)
            since = got[0]["data"]["at"]
            code, rows, _ = await ctl(conf, url, "webhooks", "replay", "app", "--since", str(since))
            assert code == 0 and rows[0]["after_id"] == 0 and rows[0]["events"] == 5
            again = await rx.wait_events(10)
            assert [e["id"] for e in again[5:]] == [1, 2, 3, 4, 5]  # the same ids: dedupe
            code, rows, _ = await ctl(conf, url, "webhooks", "test", "app")
            assert code == 0 and rows[0]["ok"] is True and rows[0]["status"] == 200
            test = rx.accepted[-1]
            assert Webhook(SECRET_A).verify(test.body, test.headers)["type"] == "test"
            code, rows, err = await ctl(conf, url, "webhooks", "pause", "nope")
            assert (code, rows, err) == (1, [], "outpostctl: no outbound destination 'nope'\n")
    finally:
        await rx.stop()


async def test_refusals_are_json_errors(tmp_path: Path) -> None:
    rx = await Receiver().start()
    try:
        config = outbound_config(tmp_path, webhooks=[{"name": "app", "url": rx.url}])
        async with running(config) as client:
            resp = await client.get("/api/outbound")
            assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"
            no_since = "since: required (ISO 8601 or Unix seconds)"
            bad_since = "since: 'soon' is neither ISO 8601 nor Unix seconds"
            bad_attempts = "attempts must be a whole number from 0 to 1000"
            replay = "/api/outbound/app/replay"
            unknown = "no outbound destination 'nope'"
            for method, path, kwargs, status, detail in (
                ("GET", "/api/outbound/nope", {}, 404, "no outbound destination 'nope'"),
                ("POST", "/api/outbound/nope/resume", {}, 404, "no outbound destination 'nope'"),
                ("POST", "/api/outbound/nope/test", {}, 404, f"no configured {unknown[3:]}"),
                ("POST", replay, {}, 400, no_since),
                ("POST", replay, {"json": {"since": "soon"}}, 400, bad_since),
                ("POST", replay, {"json": [1]}, 400, "the body must be a JSON object"),
                ("GET", "/api/outbound/app?attempts=x", {}, 400, bad_attempts),
            ):  # fmt: skip
                got = await api(client, method, path, **kwargs)
                assert got[0] == status and got[1]["detail"] == detail, (path, got)
            _, body = await api(client, "GET", "/api/outbound/app")
            assert body["state"] == "active" and body["last_id"] == 0  # nothing changed
    finally:
        await rx.stop()


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://127.0.0.1:9/hook", "127.0.0.1 is a loopback, link-local or private address"),
        ("http://10.1.2.3/hook", "10.1.2.3 is a loopback, link-local or private address"),
        ("http://169.254.169.254/latest", "169.254.169.254 is a loopback, link-local or private"),
        ("http://[::1]:8080/", "::1 is a loopback, link-local or private address"),
        ("http://[::ffff:192.168.1.1]/", "::ffff:192.168.1.1 is a loopback, link-local or"),
        ("https://[fe80::1]/", "fe80::1 is a loopback, link-local or private address"),
        ("ftp://example.com/", "'ftp://example.com/' is not an http(s) URL with a host"),
        ("https://user:pw@example.com/", "'https://user:pw@example.com/' is not an http(s) URL"),
    ],
)
def test_private_literals_are_refused_at_start(tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        outbound_config(tmp_path, webhooks=[{"name": "x", "url": url, "allow_private": False}])
    assert str(caught.value).startswith(f"test.toml: outbound.webhooks[0].url: {problem}")


async def test_a_name_resolving_to_loopback_is_refused_when_sent(tmp_path: Path) -> None:
    rx = await Receiver().start()
    try:
        url = f"http://localhost:{rx.port}/hook"
        config = outbound_config(
            tmp_path, webhooks=[{"name": "ssrf", "url": url, "allow_private": False}]
        )
        async with running(config) as client:
            await record(config, 1)

            async def tried() -> Any:
                _, body = await api(client, "GET", "/api/outbound/ssrf")
                return body if body["failures"] else None

            body = await eventually(tried)
            assert body["last_error"] == (
                "refused: localhost resolves to 127.0.0.1: loopback, link-local or private"
                " (set allow_private = true to allow it)"
            )
            assert body["last_id"] == 0 and body["sent"] == 0
            assert rx.requests == []  # nothing ever reached the receiver
    finally:
        await rx.stop()


async def test_a_dead_endpoint_holds_up_neither_others_nor_tracking(tmp_path: Path) -> None:
    dead = await Receiver(script=[30.0]).start()  # holds every request until the sender gives up
    live = await Receiver().start()
    try:
        config = outbound_config(
            tmp_path,
            webhooks=[
                {"name": "dead", "url": dead.url, "timeout": "2s"},
                {"name": "live", "url": live.url},
            ],
            sections={"tracking": {"opens": True}},
        )
        ids = await seed(config, "Q1")
        async with running(config) as client:
            await record(config, 20)
            await eventually(lambda: dead.requests)
            started = time.monotonic()
            got = await live.wait_events(20, timeout=1.5)  # well before the dead one's timeout
            pixel = await client.get(f"/o/{token(config, TokenKind.OPEN, ids['a@example.org'])}")
            assert pixel.status == 200 and time.monotonic() - started < 1.5
            assert len({e["id"] for e in got}) == 20
            assert dead.accepted == [] and len(dead.requests) == 1  # still waiting on the first
            _, body = await api(client, "GET", "/api/outbound/dead")
            assert body["sent"] == 0 and body["lag_events"] >= 20
            assert (await client.get("/api/outbound", headers=ADMIN)).status == 200
    finally:
        await dead.stop()
        await live.stop()


async def test_a_destination_of_an_app_takes_its_events_and_is_its_tokens(
    tmp_path: Path,
) -> None:
    """apps = ["jobs"]: only the events of jobs' mail go there, and a jobs token sees and
    operates that destination alone; a destination of every app is not a scoped token's."""
    rx_jobs, rx_all = await Receiver().start(), await Receiver().start()
    try:
        (tmp_path / "jobs.token").write_text("jobs-operate-token\n")
        sections = {
            "apps": [
                {"name": n, "networks": [f"10.{i}.0.0/24"], "sender_domains": [f"{n}.example"]}
                for i, n in enumerate(("billing", "jobs"))
            ],
            "admin_tokens": [
                {"token_file": str(tmp_path / "jobs.token"), "scope": "app:jobs", "role": "operate"}
            ],
        }
        config = outbound_config(
            tmp_path,
            webhooks=[
                {"name": "jobs-hook", "url": rx_jobs.url, "apps": ["jobs"]},
                {"name": "all-hook", "url": rx_all.url},
            ],
            sections=sections,
            start="earliest",
        )
        for app in ("billing", "jobs"):
            await queue_for_app(config, f"Q{app.upper()}", app, f"{app}-reader@example.org")
        jobs = {"Authorization": "Bearer jobs-operate-token"}
        async with running(config) as client:
            every = await rx_all.wait_events(2)
            got = await rx_jobs.wait_events(1)
            await asyncio.sleep(0.2)  # more poll rounds: nothing else comes
            assert [e["data"]["app"] for e in rx_jobs.events()] == ["jobs"]
            assert got[0]["data"]["queue_id"] == "QJOBS"
            assert sorted(e["data"]["app"] for e in every) == ["billing", "jobs"]

            listed = await client.get("/api/outbound", headers=jobs)
            assert listed.status == 200
            assert [d["name"] for d in (await listed.json())["destinations"]] == ["jobs-hook"]
            for method, path in (
                ("GET", "/api/outbound/all-hook"),
                ("POST", "/api/outbound/all-hook/pause"),
                ("POST", "/api/outbound/all-hook/replay?since=0"),
                ("POST", "/api/outbound/all-hook/test"),
            ):
                answer = await client.request(method, path, headers=jobs)
                assert answer.status == 404, path
                assert (await answer.json())["detail"].endswith("outbound destination 'all-hook'")
            _, shown = await api(client, "GET", "/api/outbound/all-hook")
            assert shown["state"] == "active"  # the refused pause changed nothing
            paused = await client.post("/api/outbound/jobs-hook/pause", headers=jobs)
            assert paused.status == 200
            assert await paused.json() == {"name": "jobs-hook", "state": "paused"}
    finally:
        await rx_jobs.stop()
        await rx_all.stop()
