"""TLS and AUTH both ways: STARTTLS into the relay; STARTTLS, TLS and AUTH to a smarthost."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from relay.receive.auth import hash_password
from tests.conftest import Sink, SinkScript, make_config, smarthost
from tests.smtpclient import RawClient

MSG = b"From: app@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key, ca_pem = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key))
    with open(chain, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    ca.cert_pem.write_to_path(str(ca_pem))
    return chain, key, ca_pem


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


def _tls_send(port: int, ca_pem: Path, *, implicit: bool) -> tuple[str, list[str]]:
    """Send MSG over STARTTLS or implicit TLS (logging in as app/pw on the latter);
    returns the TLS version and the EHLO keywords offered inside TLS."""
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    if implicit:
        client = smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=ctx)
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    with client:
        if not implicit:
            client.ehlo("client.test")
            assert client.has_extn("starttls")
            client.starttls(context=ctx)
        client.ehlo("client.test")
        features = sorted(client.esmtp_features)
        if implicit:
            client.login("app", "pw")
        client.sendmail("app@example.com", ["b@example.org"], MSG)
        return client.sock.version() or "", features  # type: ignore[union-attr]


@pytest.mark.usefixtures("store_backend")
async def test_inbound_starttls(tmp_path: Path, ca: trustme.CA, start_relay) -> None:
    chain, key, ca_pem = server_files(ca, tmp_path)
    users = tmp_path / "users"
    users.write_text(f"app:{hash_password('pw')}\n")
    config = make_config(
        tmp_path,
        relay={
            "tls_cert_file": str(chain),
            "tls_key_file": str(key),
            "auth_users_file": str(users),
        },
    )
    relay = await start_relay(config)
    version, features = await asyncio.to_thread(_tls_send, relay.port, ca_pem, implicit=False)
    assert version.startswith("TLSv1.")
    assert "auth" in features and "starttls" not in features  # no second STARTTLS
    await relay.idle()
    assert relay.app.store is not None
    raw = await relay.app.store.message_raw(1)
    assert b" with ESMTPS id " in raw


def _auth(users: dict[str, str]) -> Any:
    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and users.get(data.login.decode()) == (
            data.password.decode()
        )
        return AuthResult(success=ok, handled=False)

    return authenticator


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_smarthost_tls_and_auth(
    tmp_path: Path, ca: trustme.CA, start_relay, mode: str
) -> None:
    ctx = server_context(ca)
    options: dict[str, Any] = {
        "authenticator": _auth({"relayuser": "hunter2"}),
        "auth_required": True,
    }
    if mode == "starttls":
        options |= {"tls_context": ctx, "require_starttls": True}
    else:  # aiosmtpd can't tell implicit TLS from clear text: let it offer AUTH anyway
        options |= {"auth_require_tls": False}
    sink = Sink(**options)
    await sink.start(ssl=ctx if mode == "tls" else None)
    _, _, ca_pem = server_files(ca, tmp_path)
    password = tmp_path / "smarthost.password"
    password.write_text("hunter2\n")
    delivery = smarthost(sink) | {
        "smarthost_tls": mode,
        "tls_ca_file": str(ca_pem),
        "smarthost_username": "relayuser",
        "smarthost_password_file": str(password),
        "smarthost": f"localhost:{sink.port}",
    }
    relay = await start_relay(make_config(tmp_path, delivery=delivery))
    await relay.send(MSG)
    (got,) = await sink.wait_for(1)
    assert got.rcpts == ["a@example.org"]
    await sink.stop()


@pytest.mark.usefixtures("store_backend")
async def test_smarthost_wrong_password_defers(tmp_path: Path, ca: trustme.CA, start_relay) -> None:
    sink = Sink(
        authenticator=_auth({"relayuser": "hunter2"}),
        auth_required=True,
        tls_context=server_context(ca),
        require_starttls=True,
    )
    await sink.start()
    _, _, ca_pem = server_files(ca, tmp_path)
    password = tmp_path / "smarthost.password"
    password.write_text("wrong\n")
    delivery = smarthost(sink) | {
        "smarthost_username": "relayuser",
        "smarthost_password_file": str(password),
        "backoff": ["1h"],
        "smarthost_tls": "starttls",
        "tls_ca_file": str(ca_pem),
        "smarthost": f"localhost:{sink.port}",
    }
    relay = await start_relay(make_config(tmp_path, delivery=delivery))
    await relay.send(MSG)
    assert relay.app.store is not None
    async with asyncio.timeout(10):
        while (await relay.app.store.count_deliveries()).get("deferred") != 1:
            await asyncio.sleep(0.02)
    (row,) = await relay.app.store.list_deliveries()
    assert row["last_status"] == "4.7.0" and row["last_text"].startswith("smarthost refused AUTH")
    assert sink.received == []
    await sink.stop()


async def test_smarthost_with_untrusted_certificate_defers(
    tmp_path: Path, ca: trustme.CA, start_relay
) -> None:
    sink = Sink(tls_context=server_context(ca), require_starttls=True)
    await sink.start()
    # no tls_ca_file: the throwaway CA isn't trusted, so "starttls" (verified) must fail
    delivery = smarthost(sink) | {
        "smarthost_tls": "starttls",
        "backoff": ["1h"],
        "smarthost": f"localhost:{sink.port}",
    }
    relay = await start_relay(make_config(tmp_path, delivery=delivery))
    await relay.send(MSG)
    assert relay.app.store is not None
    async with asyncio.timeout(10):
        while (await relay.app.store.count_deliveries()).get("deferred") != 1:
            await asyncio.sleep(0.02)
    assert sink.received == []
    await sink.stop()


@pytest.mark.usefixtures("store_backend")
async def test_concurrency_limits(tmp_path: Path, start_relay) -> None:
    sink = Sink(SinkScript(hang_data=0.15))
    await sink.start()
    delivery = smarthost(sink) | {"destination_concurrency": 2}
    relay = await start_relay(make_config(tmp_path, delivery=delivery))
    for i in range(8):
        await relay.send(MSG.replace(b"body", b"body %d" % i))
    await sink.wait_for(8)
    assert sink.max_active == 2  # parallel, but never more than the per-destination limit
    await relay.stop()
    await sink.stop()

    sink = Sink(SinkScript(hang_data=0.1))
    await sink.start()
    delivery = smarthost(sink) | {"concurrency": 1, "destination_concurrency": 5}
    (tmp_path / "b").mkdir()
    relay = await start_relay(make_config(tmp_path / "b", delivery=delivery))
    for i in range(4):
        await relay.send(MSG.replace(b"body", b"body %d" % i))
    await sink.wait_for(4)
    assert sink.max_active == 1
    await sink.stop()


async def test_sighup_reloads_the_users_file(tmp_path: Path, start_relay) -> None:
    users = tmp_path / "users"
    users.write_text(f"old:{hash_password('pw')}\n")
    config = make_config(tmp_path, relay={"auth_users_file": str(users)})
    relay = await start_relay(config)

    async def auth(user: str) -> str:
        client, _ = await RawClient.connect(relay.host, relay.port)
        await client.cmd("EHLO client.test")
        token = base64.b64encode(f"\0{user}\0pw".encode()).decode()
        reply = await client.cmd(f"AUTH PLAIN {token}")
        await client.close()
        return reply

    assert (await auth("new")).startswith("535 5.7.8")
    users.write_text(f"new:{hash_password('pw')}\n")
    relay.app.reload()
    assert (await auth("new")).startswith("235 2.7.0")
    assert (await auth("old")).startswith("535 5.7.8")
    users.write_text("broken line without a hash\n")
    relay.app.reload()  # a bad file keeps the users we had
    assert (await auth("new")).startswith("235 2.7.0")


async def test_implicit_tls_listener_and_certificate_reload(
    tmp_path: Path, ca: trustme.CA, start_relay
) -> None:
    chain, key, ca_pem = server_files(ca, tmp_path)
    users = tmp_path / "users"
    users.write_text(f"app:{hash_password('pw')}\n")
    config = make_config(
        tmp_path,
        relay={
            "tls_cert_file": str(chain),
            "tls_key_file": str(key),
            "auth_users_file": str(users),
            "listen_tls": ["127.0.0.1:0"],
        },
    )
    relay = await start_relay(config)
    tls_port = relay.app.bound[1][1]
    _, features = await asyncio.to_thread(_tls_send, tls_port, ca_pem, implicit=True)
    assert "auth" in features and "starttls" not in features
    await relay.idle()
    assert relay.app.store is not None
    assert b" with ESMTPSA id " in await relay.app.store.message_raw(1)
    # SIGHUP: a certificate from another CA is picked up by new handshakes
    other = trustme.CA()
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    new_chain, new_key, new_ca = server_files(other, other_dir)
    chain.write_bytes(new_chain.read_bytes())
    key.write_bytes(new_key.read_bytes())
    relay.app.reload()
    await asyncio.to_thread(_tls_send, tls_port, new_ca, implicit=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(_tls_send, tls_port, ca_pem, implicit=True)


@pytest.mark.parametrize("offer_tls", [True, False])
async def test_mx_tls_required(
    tmp_path: Path, ca: trustme.CA, start_relay, offer_tls: bool
) -> None:
    from tests.dnsserver import DnsServer

    cert_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.tls.test").configure_cert(cert_ctx)
    sink = Sink(tls_context=cert_ctx) if offer_tls else Sink()
    await sink.start()
    dns_server = DnsServer(
        {("tls.test", "MX"): [(10, "mx.tls.test")], ("mx.tls.test", "A"): ["127.0.0.1"]}
    )
    await dns_server.start()
    _, _, ca_pem = server_files(ca, tmp_path)
    delivery = {
        "transport": "mx",
        "mx_port": sink.port,
        "mx_tls": "required",
        "dns_nameservers": [dns_server.nameserver],
        "tls_ca_file": str(ca_pem),
        "backoff": ["1h"],
    }
    relay = await start_relay(make_config(tmp_path, delivery=delivery))
    await relay.send(MSG, rcpts=("b@tls.test",))
    assert relay.app.store is not None
    async with asyncio.timeout(10):
        while not await relay.app.store.list_deliveries(state="delivered") and not (
            await relay.app.store.list_deliveries(state="deferred")
        ):
            await asyncio.sleep(0.02)
    if offer_tls:  # verified against the MX name, not the address we connected to
        (got,) = await sink.wait_for(1)
        assert got.rcpts == ["b@tls.test"]
    else:
        (row,) = await relay.app.store.list_deliveries(state="deferred")
        assert (row["last_status"], row["last_text"]) == (
            "4.7.4",
            "TLS is required but not offered",
        )
        assert sink.received == []
    dns_server.stop()
    await sink.stop()
