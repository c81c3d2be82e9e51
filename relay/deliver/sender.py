"""Speak SMTP to the next hop (aiosmtplib, pipelined where offered) or write files: a Result
per recipient."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiosmtplib
import dns.asyncresolver

from relay import private
from relay.config import DeliveryConfig, parse_hostport, read_secret_file
from relay.deliver import mx
from relay.deliver.mx import Hop
from relay.deliver.pipelining import Pipeline, command, data_block
from relay.store import Result

log = logging.getLogger("outpost.sender")

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\s*")


def reply_result(code: int, message: str, remote: str) -> Result:
    """A remote reply as a DSN-shaped Result (enhanced code taken from the text when present)."""
    text = " ".join(message.split())
    m = _ENHANCED.match(text)
    cls = code // 100 if code // 100 in (2, 4, 5) else 4
    if m:
        status, text = m.group(0).strip(), text[m.end() :]
    else:
        status = f"{cls}.0.0"
    return Result(cls, code, status, text, remote)


def trouble_result(exc: BaseException, remote: str, *, during: str) -> Result:
    """Connection trouble is never final: 4.4.1 when we got no answer, 4.4.2 when it broke."""
    status = "4.4.1" if during == "connect" else "4.4.2"
    reason = str(exc) or type(exc).__name__
    return Result(4, 451, status, f"{during} to {remote or 'remote'}: {reason}", remote)


@dataclass(frozen=True)
class DsnRequest:
    """The DSN parameters (RFC 3461) to pass on when the next hop offers DSN, '' = not given."""

    ret: str = ""
    envid: str = ""
    recipients: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # NOTIFY, ORCPT

    def mail_options(self) -> list[str]:
        return [f"{k}={v}" for k, v in (("RET", self.ret), ("ENVID", self.envid)) if v]

    def rcpt_options(self, rcpt: str) -> list[str]:
        notify, orcpt = self.recipients.get(rcpt, ("", ""))
        return [f"{k}={v}" for k, v in (("NOTIFY", notify), ("ORCPT", orcpt)) if v]


class Channel(Protocol):
    """An open path to one destination; reused for several transactions when it can be.

    takes_dsn: the other end offers DSN, so it gets the sender's DSN request with the message
    and notifying becomes its job (RFC 3461 4.1: no "relayed" notice from us).
    """

    remote: str
    sent: int

    @property
    def takes_dsn(self) -> bool: ...

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool,
        body_8bit: bool,
        dsn: DsnRequest | None = None,
    ) -> dict[str, Result]: ...

    def usable(self) -> bool: ...

    async def close(self) -> None: ...


def mail_options(
    offers: Callable[[str], bool],
    size: int,
    *,
    smtputf8: bool,
    body_8bit: bool,
    dsn: DsnRequest | None,
) -> list[str]:
    """MAIL FROM's parameters for what the next hop offers (its EHLO keywords)."""
    options = []
    if smtputf8:
        options.append("SMTPUTF8")
    if body_8bit and offers("8bitmime"):
        options.append("BODY=8BITMIME")
    if offers("size"):
        options.append(f"SIZE={size}")
    if dsn is not None:
        options += dsn.mail_options()
    return options


NO_SMTPUTF8 = "Remote server does not support SMTPUTF8"


class SmtpChannel:
    """One command at a time, each reply awaited (aiosmtplib): for a next hop that does not
    offer PIPELINING."""

    def __init__(self, client: aiosmtplib.SMTP, hop: Hop) -> None:
        self._client = client
        self.remote = f"{hop.name}[{hop.address}]:{hop.port}"
        self.sent = 0
        self._broken = False

    def usable(self) -> bool:
        return not self._broken and self._client.is_connected

    @property
    def takes_dsn(self) -> bool:
        return self._client.supports_extension("dsn")

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool,
        body_8bit: bool,
        dsn: DsnRequest | None = None,
    ) -> dict[str, Result]:
        client = self._client
        dsn = dsn if dsn is not None and self.takes_dsn else None
        if smtputf8 and not client.supports_extension("smtputf8"):
            return dict.fromkeys(rcpts, Result(5, 550, "5.6.7", NO_SMTPUTF8, self.remote))
        options = mail_options(
            client.supports_extension, len(data), smtputf8=smtputf8, body_8bit=body_8bit, dsn=dsn
        )
        encoding = "utf-8" if smtputf8 else "ascii"
        results: dict[str, Result] = {}
        stage = "MAIL FROM"
        try:
            try:
                await client.mail(mail_from, options=options, encoding=encoding)
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset()
                return dict.fromkeys(rcpts, reply_result(exc.code, exc.message, self.remote))
            accepted = []
            stage = "RCPT TO"
            for rcpt in rcpts:
                try:
                    opts = dsn.rcpt_options(rcpt) if dsn is not None else None
                    await client.rcpt(rcpt, options=opts, encoding=encoding)
                    accepted.append(rcpt)
                except aiosmtplib.SMTPResponseException as exc:
                    results[rcpt] = reply_result(exc.code, exc.message, self.remote)
            if not accepted:
                await self._reset()
                return results
            stage = "DATA"
            try:
                resp = await client.data(data)
                done = reply_result(resp.code, resp.message, self.remote)
            except aiosmtplib.SMTPResponseException as exc:
                done = reply_result(exc.code, exc.message, self.remote)
            for rcpt in accepted:
                results[rcpt] = done
            self.sent += 1
            return results
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            self._broken = True
            r = trouble_result(exc, self.remote, during=f"lost connection with {stage}")
            return {rcpt: results.get(rcpt, r) for rcpt in rcpts}

    async def _reset(self) -> None:
        try:
            await self._client.rset()
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            self._broken = True

    async def close(self) -> None:
        try:
            if self._client.is_connected:
                await self._client.quit()
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            pass
        finally:
            self._client.close()


class PipelinedChannel:
    """MAIL, every RCPT and DATA written at once, then the message after a 354 (RFC 2920),
    on a connection aiosmtplib opened (relay.deliver.pipelining). The results are those
    SmtpChannel gives for the same replies."""

    def __init__(self, client: aiosmtplib.SMTP, hop: Hop) -> None:
        assert client.transport is not None
        self._offers = client.supports_extension
        self._pipe = Pipeline.take_over(client.transport, client.timeout)
        self.remote = f"{hop.name}[{hop.address}]:{hop.port}"
        self.sent = 0

    def usable(self) -> bool:
        return self._pipe.usable()

    @property
    def takes_dsn(self) -> bool:
        return self._offers("dsn")

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool,
        body_8bit: bool,
        dsn: DsnRequest | None = None,
    ) -> dict[str, Result]:
        dsn = dsn if dsn is not None and self.takes_dsn else None
        if smtputf8 and not self._offers("smtputf8"):
            return dict.fromkeys(rcpts, Result(5, 550, "5.6.7", NO_SMTPUTF8, self.remote))
        options = mail_options(
            self._offers, len(data), smtputf8=smtputf8, body_8bit=body_8bit, dsn=dsn
        )
        encoding = "utf-8" if smtputf8 else "ascii"
        pipe = self._pipe
        envelope = [command(b"MAIL FROM:", mail_from, options, encoding)]
        for rcpt in rcpts:
            opts = dsn.rcpt_options(rcpt) if dsn is not None else []
            envelope.append(command(b"RCPT TO:", rcpt, opts, encoding))
        results: dict[str, Result] = {}
        refused: Result | None = None  # MAIL's refusal, for every recipient
        stage = "MAIL FROM"
        try:
            if not pipe.usable():
                raise aiosmtplib.SMTPServerDisconnected("a reply came that no command asked for")
            pipe.write(b"".join(envelope) + b"DATA\r\n")
            code, text = await pipe.reply()
            refused = None if code == 250 else reply_result(code, text, self.remote)
            stage = "RCPT TO"
            accepted = []
            for rcpt in rcpts:
                code, text = await pipe.reply()
                if refused is not None:
                    results[rcpt] = refused  # MAIL's reply says why, not RCPT's "503"
                elif code in (250, 251):
                    accepted.append(rcpt)
                else:
                    results[rcpt] = reply_result(code, text, self.remote)
            stage = "DATA"
            code, text = await pipe.reply()
            started = code == 354
            if started:  # the message, or an empty one when no recipient is left
                pipe.write(data_block(data) if accepted else b".\r\n")
                await pipe.drain()
                code, text = await pipe.reply()
            elif code // 100 == 2:  # a 2xx to DATA itself: no message went, it is not delivered
                code, text = 451, f"4.5.0 DATA answered {code} {text} instead of 354"
            if accepted:
                done = reply_result(code, text, self.remote)
                for rcpt in accepted:
                    results[rcpt] = done
                self.sent += 1
            if refused is None and not started:  # MAIL holds a transaction open: end it
                stage = "RSET"
                pipe.write(b"RSET\r\n")
                await pipe.reply()
            if not pipe.usable():  # a reply nobody asked for: the order is lost, don't reuse
                pipe.close()
            return results
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            pipe.close()
            r = refused or trouble_result(exc, self.remote, during=f"lost connection with {stage}")
            return {rcpt: results.get(rcpt, r) for rcpt in rcpts}

    async def close(self) -> None:
        try:
            if self._pipe.usable():
                self._pipe.write(b"QUIT\r\n")
                await self._pipe.reply()
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            pass
        finally:
            self._pipe.close()


class FileChannel:
    """The `file` transport: each final message lands as an .eml file (make run, staging)."""

    takes_dsn = False  # the end of the road: a success notice says "delivered"

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self.remote = f"file:{directory}"
        self.sent = 0

    def usable(self) -> bool:
        return True

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool,
        body_8bit: bool,
        dsn: DsnRequest | None = None,
    ) -> dict[str, Result]:
        name = f"{os.urandom(8).hex()}.eml"
        try:
            await asyncio.to_thread(
                _write_atomic, self._dir / name, _envelope(mail_from, rcpts) + data
            )
        except OSError as exc:
            r = Result(4, 451, "4.3.0", f"can't write {name}: {exc.strerror}", self.remote)
            return dict.fromkeys(rcpts, r)
        self.sent += 1
        return dict.fromkeys(rcpts, Result(2, 250, "2.0.0", f"written as {name}", self.remote))

    async def close(self) -> None:
        return None


def _envelope(mail_from: str, rcpts: Sequence[str]) -> bytes:
    """Return-Path and X-Original-To lines, as a local delivery agent would add them."""
    lines = [f"Return-Path: <{mail_from}>\r\n"] + [f"X-Original-To: {r}\r\n" for r in rcpts]
    return "".join(lines).encode()


def _write_atomic(path: Path, data: bytes) -> None:
    """The whole file or none, 0600 in a 0700 directory (a message is private)."""
    tmp = path.with_suffix(".tmp")
    with os.fdopen(private.create_file(tmp, exclusive=False), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def tls_policy(config: DeliveryConfig) -> str:
    """none | opportunistic (unverified STARTTLS when offered) | required (verified STARTTLS)
    | tls (implicit TLS from the first byte, verified)."""
    if config.transport == "smarthost":
        return {"none": "none", "starttls": "required", "tls": "tls"}[config.smarthost_tls]
    return config.mx_tls


def _unverified() -> ssl.SSLContext:
    """Opportunistic TLS encrypts against passive eavesdroppers; MX certificates rarely verify."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Transport:
    """Opens channels per destination: the smarthost, a domain's MX hosts, or a directory."""

    def __init__(
        self,
        config: DeliveryConfig,
        *,
        helo: str,
        resolver: dns.asyncresolver.Resolver | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._config = config
        self._helo = helo
        self._resolver = resolver
        self._tls = tls_context
        if self._tls is None and config.tls_ca_file:
            self._tls = ssl.create_default_context(cafile=config.tls_ca_file)
        self._password: str | None = None
        if config.transport == "smarthost" and config.smarthost_password_file:
            self._password = read_secret_file(
                config.smarthost_password_file, "delivery.smarthost_password_file"
            )

    def destination(self, domain: str) -> str:
        """The key deliveries are grouped and connections reused by."""
        return domain if self._config.transport == "mx" else self._config.transport

    async def open(self, destination: str, source: str = "") -> Channel | Result:
        """A channel to a destination, connecting from ``source`` when given (a local address
        of delivery.source_addresses)."""
        cfg = self._config
        if cfg.transport == "file":
            return FileChannel(Path(cfg.directory))
        if cfg.transport == "smarthost":
            host, port = parse_hostport(cfg.smarthost, default_port=25)
            hops: list[Hop] | Result = [Hop(host, host, port)]
        else:
            if self._resolver is None:
                self._resolver = mx.make_resolver(cfg.dns_nameservers)
            hops = await mx.resolve(self._resolver, destination, cfg.mx_port)
        if isinstance(hops, Result):
            return hops
        last: Result | None = None
        for hop in hops:  # next MX on connection failure (RFC 5321 5.1)
            channel = await self._connect(hop, source)
            if not isinstance(channel, Result):
                log.info("connected destination=%s remote=%s", destination, channel.remote)
                return channel
            last = channel
            log.info(
                "connect failed destination=%s remote=%s reason=%r",
                destination,
                channel.remote,
                channel.text,
            )
            if channel.cls == 5:
                break
        assert last is not None
        return last

    async def _connect(self, hop: Hop, source: str = "") -> Channel | Result:
        cfg = self._config
        remote = f"{hop.name}[{hop.address}]:{hop.port}"
        smarthost = cfg.transport == "smarthost"
        policy = tls_policy(cfg)
        client = aiosmtplib.SMTP(
            hostname=hop.address,
            port=hop.port,
            local_hostname=self._helo,
            timeout=cfg.command_timeout,
            use_tls=policy == "tls",
            start_tls=False,  # STARTTLS is done below, by policy, verified against hop.name
            validate_certs=True,
            tls_context=self._tls,
            source_address=(source, 0) if source else None,
        )
        try:
            await asyncio.wait_for(client.connect(), cfg.connect_timeout)
            if client.is_ehlo_or_helo_needed:  # know the extensions before the first MAIL
                await client.ehlo()
            if policy in ("required", "opportunistic") and not client.supports_extension(
                "starttls"
            ):
                if policy == "required":
                    client.close()
                    return Result(4, 451, "4.7.4", "TLS is required but not offered", remote)
            elif policy in ("required", "opportunistic"):
                verify = policy == "required"
                await client.starttls(
                    server_hostname=hop.name,
                    validate_certs=verify,
                    tls_context=self._tls if verify else _unverified(),
                )
                await client.ehlo()  # RFC 3207: forget what was said in clear, ask again
        except aiosmtplib.SMTPResponseException as exc:  # 4xx/5xx greeting
            client.close()
            return reply_result(exc.code, exc.message, remote)
        except (TimeoutError, aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            client.close()
            return trouble_result(exc, remote, during="connect")
        if smarthost and cfg.smarthost_username:
            # PLAIN, else LOGIN: one exchange, not aiosmtplib's try-everything login()
            methods = client.server_auth_methods
            if "plain" not in methods and "login" not in methods:
                client.close()
                return Result(4, 451, "4.7.0", "smarthost offers no AUTH PLAIN or LOGIN", remote)
            auth = client.auth_plain if "plain" in methods else client.auth_login
            try:
                await auth(cfg.smarthost_username, self._password or "")
            except aiosmtplib.SMTPResponseException as exc:
                client.close()
                # a refused login is our configuration's fault: keep the mail, say why
                return Result(4, 451, "4.7.0", f"smarthost refused AUTH: {exc.code}", remote)
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                client.close()
                return trouble_result(exc, remote, during="AUTH")
        if cfg.pipelining and client.supports_extension("pipelining"):
            return PipelinedChannel(client, hop)
        return SmtpChannel(client, hop)
