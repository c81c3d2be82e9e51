"""Receive: the SMTP listeners (aiosmtpd), thin hooks that turn protocol input into policy calls."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from relay import exits
from relay.config import AppConfig, RelayConfig
from relay.learn.ingest import BounceDoor
from relay.metrics import RelayMetrics
from relay.receive import apps as tenants
from relay.receive import dataread, policy
from relay.receive.auth import UserFile, Verifier
from relay.receive.pipeline import Acceptor, Rejected, Submission

log = logging.getLogger("outpost.smtpd")

IDENT = "Outpost ESMTP"


# Command lines: RFC 5321 4.5.3.1.4 allows 512 octets, and aiosmtpd adds what SIZE and SMTPUTF8
# allow on MAIL. A line over COMMAND_LINE_LIMIT bytes without its LF is no command at all: the
# session ends there (421) instead of buffering it. The read buffer stays this small between
# transactions; only DATA gets the large one (line_length_limit).
COMMAND_LINE_LIMIT = 2048


@dataclass
class EnvelopeDsn:
    """The DSN extension's parameters (RFC 3461) of one transaction: RET and ENVID at MAIL,
    NOTIFY and ORCPT per accepted recipient."""

    envelope: Envelope | None
    ret: str = ""
    envid: str = ""
    recipients: dict[str, tuple[str, str]] = field(default_factory=dict)


class OutpostSMTP(SMTP):
    """aiosmtpd's protocol with the few things a relay needs that it doesn't do itself."""

    # Apps send long HTML lines; RFC 5321's 1000 is a sender's limit we shouldn't enforce on
    # internal clients (Postfix accepts them too). The size limit still bounds memory. This is
    # the DATA line limit only: command lines are held to COMMAND_LINE_LIMIT.
    line_length_limit = 1 << 20

    def __init__(self, handler: RelayHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.relay_handler = handler
        self._dsn: EnvelopeDsn | None = None
        # aiosmtpd keeps these limits in one dict shared by every session, and EHLO adds to
        # MAIL's at each call: each session gets its own, set afresh at each EHLO
        self.command_size_limits: collections.defaultdict[str, int] = collections.defaultdict(
            lambda: self.command_size_limit
        )
        self._set_read_limit(2 * COMMAND_LINE_LIMIT)
        self._in_data = False
        self._unterminated = 0  # bytes received since the last LF, between DATA phases
        self._peer_counted: str | None = None
        self._refusal: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls = self.transport is not None  # aiosmtpd calls this again after STARTTLS
        super().connection_made(transport)
        if starttls:
            return
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else ""
        # AUTH in clear text is only for loopback clients (aiosmtpd has one global switch).
        self._auth_require_tls = not policy.is_loopback(host)
        if transport.get_extra_info("ssl_object") is not None and self.session is not None:
            # implicit TLS (a 465-style listener): aiosmtpd only knows TLS it started itself
            self.session.ssl = {"cipher": transport.get_extra_info("cipher")}
            self._auth_require_tls = False
        self._refusal = self.relay_handler.admit(host)
        if self._refusal is None:
            self._peer_counted = host
        self.relay_handler.sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.relay_handler.sessions.discard(self)
        if self._peer_counted is not None:
            self.relay_handler.release(self._peer_counted)
            self._peer_counted = None
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._refusal is not None:  # over a connection limit: the greeting says so, and bye
            await self.push(self._refusal)
            return
        await super()._handle_client()

    def data_received(self, data: bytes) -> None:
        if not self._in_data:
            newline = data.rfind(b"\n")
            if newline >= 0:
                self._unterminated = len(data) - newline - 1
            else:
                self._unterminated += len(data)
            if self._unterminated > COMMAND_LINE_LIMIT:
                self._close_overlong()
                return
        super().data_received(data)

    def _close_overlong(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            reply = policy.COMMAND_TOO_LONG.format(host=self.relay_handler.config.hostname)
            transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()

    async def smtp_EHLO(self, hostname: str) -> None:
        self.command_size_limits.clear()
        await super().smtp_EHLO(hostname)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the data read in bulk (relay/receive/dataread.py): the same
        replies, the same bytes to the handler, without an await per line."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._in_data = True
        self._set_read_limit(self.line_length_limit)
        try:
            result = await dataread.read_data(
                self._reader, self.data_size_limit or 0, self.line_length_limit
            )
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        finally:
            self._in_data = False
            self._unterminated = 0
            self._set_read_limit(2 * COMMAND_LINE_LIMIT)
        if result.state is dataread.DataState.TOO_LONG:
            status = "500 Line too long (see RFC5321 4.5.3.1.6)"
        elif result.state is dataread.DataState.TOO_MUCH:
            status = "552 Error: Too much mail data"
        else:
            self.envelope.content = self.envelope.original_content = result.content
            status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The everyday ``<a@b.c> PARAMS`` without the RFC 5322 header parser (a tenth of the
        time per command); anything else as aiosmtpd parses it."""
        simple = policy.simple_path(arg)
        if simple is None:
            return super()._getaddr(arg)
        address, params = simple
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, params

    def _set_read_limit(self, limit: int) -> None:
        """The session's StreamReader buffers up to about twice its limit before it stops reading;
        asyncio has no public setter (aiosmtpd builds the reader with line_length_limit)."""
        reader = getattr(self, "_stream_reader", None)
        if reader is not None:
            reader._limit = limit

    async def push(self, status: Any) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        reply = policy.with_enhanced_code(text)
        if reply[:1] in ("4", "5") and self.session is not None:
            # every refusal, ours or aiosmtpd's, once (logs.py escapes what the peer sent)
            peer = _peer_host(self.session)
            mail_from = self.envelope.mail_from if self.envelope is not None else None
            sender = "" if mail_from in (None, "<>") else mail_from
            log.info("refused client=%s from=<%s> reply=%s", peer, sender, reply)
            if self.relay_handler.metrics is not None:
                self.relay_handler.metrics.refusal(reply)
        await super().push(reply)
        if reply.startswith("421") and self.transport is not None:
            self.transport.close()

    async def smtp_MAIL(self, arg: str | None) -> None:
        checked = self._precheck("MAIL FROM", arg)
        if isinstance(checked, str):
            await self.push(checked)
            return
        arg, dsn = checked if checked is not None else (arg, {})
        await super().smtp_MAIL(arg)
        if dsn and self.envelope is not None and self.envelope.mail_from:
            state = self.dsn()
            state.ret, state.envid = dsn.get("RET", ""), dsn.get("ENVID", "")

    async def smtp_RCPT(self, arg: str | None) -> None:
        checked = self._precheck("RCPT TO", arg)
        if isinstance(checked, str):
            await self.push(checked)
            return
        arg, dsn = checked if checked is not None else (arg, {})
        before = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        await super().smtp_RCPT(arg)
        if dsn and self.envelope is not None and len(self.envelope.rcpt_tos) > before:
            added = self.envelope.rcpt_tos[-1]
            self.dsn().recipients[added] = (dsn.get("NOTIFY", ""), dsn.get("ORCPT", ""))

    def dsn(self) -> EnvelopeDsn:
        """The DSN requests of the current transaction (a new envelope starts afresh)."""
        if self._dsn is None or self._dsn.envelope is not self.envelope:
            self._dsn = EnvelopeDsn(self.envelope)
        return self._dsn

    def _precheck(self, command: str, arg: str | None) -> str | tuple[str, dict[str, str]] | None:
        """What aiosmtpd would answer vaguely or not at all, answered here: a malformed sender
        (5.1.7, not 5.1.3), DSN parameters (taken out of the line: the command aiosmtpd then
        sees, and their values) and unknown parameters, by name. None: all aiosmtpd's."""
        if self.session is None or not self.session.host_name or not arg:
            return None  # aiosmtpd's own sequence and syntax replies
        keyword = command.split()[1] + ":"
        rest = self._strip_command_keyword(keyword, arg)
        if rest is None:
            return None
        address, params = self._getaddr(rest)
        if address is None:
            return policy.MALFORMED_SENDER if command == "MAIL FROM" else None
        params = params or ""
        words = params.split()
        if not all(p.partition("=")[0].isalnum() for p in words):
            return None  # a syntax error: aiosmtpd's 501
        refusal, dsn, others = policy.split_dsn(command, words)
        refusal = refusal or policy.check_parameters(command, others)
        if refusal:
            return refusal
        if not dsn:
            return None
        line = " ".join([rest[: len(rest) - len(params)].rstrip(), *others])
        return f"{arg[: len(keyword)]}{line}", dsn

    @property
    def idle(self) -> bool:
        """Between transactions: nothing would be lost by closing now."""
        return self.envelope is None or not self.envelope.mail_from

    def close_for_shutdown(self, host: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            reply = policy.SHUTTING_DOWN.format(host=host)
            self.transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()


@dataclass
class RelayHandler:
    """aiosmtpd hooks; each turns protocol input into a policy verdict or an accept."""

    config: RelayConfig
    acceptor: Acceptor
    users: UserFile | None = None
    bounces: BounceDoor | None = None
    draining: bool = False
    sessions: set[OutpostSMTP] = field(default_factory=set)
    metrics: RelayMetrics | None = None
    peers: collections.Counter[str] = field(default_factory=collections.Counter)
    verifier: Verifier = field(default_factory=Verifier)

    def admit(self, host: str) -> str | None:
        """Count a new session in, or the 421 it gets: over max_connections in all, or over
        max_connections_per_ip from one address outside allowed_networks (our apps may open
        as many as the overall limit allows, as Postfix exempts mynetworks)."""
        cfg = self.config
        if self.peers.total() >= cfg.max_connections:
            reply = policy.TOO_MANY_CONNECTIONS.format(host=cfg.hostname)
        elif self.peers[host] >= cfg.max_connections_per_ip and not policy.client_allowed(
            host, cfg.allowed_networks
        ):
            reply = policy.TOO_MANY_FROM.format(host=cfg.hostname, addr=host)
        else:
            self.peers[host] += 1
            return None
        log.warning("reject CONNECT client=%s reply=%r", host, reply)
        return reply

    def app_of(self, session: Session) -> AppConfig | None:
        """The [[apps]] entry of a session: by its AUTH user, else by its client network."""
        return self.acceptor.apps.of_session(_auth_user(session), _peer_host(session))

    def release(self, host: str) -> None:
        self.peers[host] -= 1
        if self.peers[host] <= 0:
            del self.peers[host]

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        refusal = policy.check_helo(hostname)
        if refusal:
            return [refusal]  # the session stays as it was: no HELO name, no extensions used
        session.host_name = hostname
        # aiosmtpd lists SIZE, 8BITMIME, SMTPUTF8, STARTTLS, AUTH; it pipelines but says nothing.
        last = responses.pop()  # "250 HELP"
        responses = [r for r in responses if r.strip() != "250-AUTH"]  # no mechanism offered
        return [*responses, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-DSN", last]

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        refusal = policy.check_helo(hostname)
        if refusal:
            return refusal
        session.host_name = hostname
        return f"250 {self.config.hostname}"

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.draining:
            return policy.SHUTTING_DOWN.format(host=self.config.hostname)
        smtputf8 = "SMTPUTF8" in mail_options
        address = "" if address == "<>" else address
        if address:
            reply = policy.check_address(address, smtputf8=smtputf8, sender=True)
            if reply:
                return reply
        app = self.app_of(session)
        if app is not None:  # the same checks run at accept, for both doors
            reply = tenants.sender_refusal(app, address) or self.acceptor.rate_refusal_now(app)
            if reply:
                return reply
        envelope.mail_from = address or "<>"
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        peer = _peer_host(session)
        if self.bounces is not None and self.bounces.owns(address):
            # reports for our bounce domain come from anywhere; they are ingested, not relayed
            refusal = policy.check_recipient_count(
                len(envelope.rcpt_tos), self.config.max_recipients
            ) or self.bounces.refusal(address)
            if refusal:
                return refusal
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 Ok"
        if address == "<>":
            return policy.NULL_RECIPIENT
        if not (
            session.authenticated
            or policy.client_allowed(peer, self.config.allowed_networks)
            or self.acceptor.apps.in_networks(peer)
        ):
            return policy.RELAY_DENIED.format(rcpt=address)  # logged by push, like every refusal
        refusal = policy.check_recipient_count(
            len(envelope.rcpt_tos), self.config.max_recipients
        ) or policy.check_address(address, smtputf8=bool(envelope.smtp_utf8), sender=False)
        if refusal:
            return refusal
        app = self.app_of(session)
        refusal = await self.acceptor.refusal_at_rcpt(
            address, _auth_user(session), app.name if app is not None else ""
        )
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        mail_from = "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from)
        reports = [r for r in envelope.rcpt_tos if self.bounces and self.bounces.owns(r)]
        recipients = tuple(r for r in envelope.rcpt_tos if r not in reports)
        if reports and self.bounces is not None:
            # the accept path checks the content of what it queues; a report is read here
            reply, content = policy.check_content(content, self.config.bare_newline)
            if reply:
                return reply
            try:
                taken = await self.bounces.take(content, reports)
            except Exception:
                log.exception("report ingest failed client=%s", _peer_host(session))
                return policy.STORE_FAILED
            if not recipients:
                return f"250 2.0.0 Ok: report taken ({taken.kind}, {taken.events} events)"
        dsn = server.dsn() if isinstance(server, OutpostSMTP) else EnvelopeDsn(envelope)
        sub = Submission(
            mail_from=mail_from,
            recipients=recipients,
            raw=content,
            client_addr=_peer_host(session),
            helo=session.host_name or "",
            auth_user=_auth_user(session),
            smtputf8=bool(envelope.smtp_utf8),
            body_8bit="BODY=8BITMIME" in envelope.mail_options,
            tls=session.ssl is not None,
            esmtp=bool(session.extended_smtp),
            dsn_ret=dsn.ret,
            dsn_envid=dsn.envid,
            dsn_recipients=tuple(
                (r, *dsn.recipients[r]) for r in recipients if r in dsn.recipients
            ),
            app=app.name if (app := self.app_of(session)) is not None else "",
        )
        try:
            queue_id = (await self.acceptor.accept(sub)).queue_id
        except Rejected as exc:
            return str(exc.args[0])
        except Exception:
            log.exception("accept failed client=%s from=<%s>", sub.client_addr, mail_from)
            return policy.STORE_FAILED
        if self.metrics is not None:
            self.metrics.accept(len(recipients))
        return f"250 2.0.0 Ok: queued as {queue_id}"

    # aiosmtpd uses a handler's auth_<MECHANISM> in place of its own: these let the built-in
    # ones read the exchange (capture_credentials stands in for the authenticator), then
    # check the password off the event loop.

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._auth(server, "PLAIN", args)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._auth(server, "LOGIN", args)

    async def _auth(self, server: SMTP, mechanism: str, args: list[str]) -> AuthResult:
        if server.envelope is not None and server.envelope.mail_from:
            await server.push(policy.AUTH_IN_TRANSACTION)  # RFC 4954 4
            return AuthResult(success=False, handled=True)
        builtin = server.auth_PLAIN if mechanism == "PLAIN" else server.auth_LOGIN
        exchanged = await builtin(None, args)
        data = exchanged.auth_data
        users = self.users
        if users is None or not isinstance(data, LoginPassword):
            return exchanged  # the client gave up, or sent something undecodable (answered)
        assert server.session is not None
        peer = _peer_host(server.session)
        user = data.login.decode("utf-8", "replace")
        ok = await self.verifier.verify(users, peer, user, data.password.decode("utf-8", "replace"))
        if not ok:
            log.warning("auth failed client=%s user=%r mechanism=%s", peer, user, mechanism)
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


def capture_credentials(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    """The authenticator aiosmtpd's built-in mechanisms call: it only hands the credentials
    back to RelayHandler._auth, which checks them without blocking the loop."""
    return AuthResult(success=False, handled=False, auth_data=data)


def _peer_host(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")


def _auth_user(session: Session) -> str:
    data = session.auth_data
    return data if isinstance(data, str) else ""


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class Listeners:
    """The SMTP servers of one relay process, and their drain at shutdown."""

    def __init__(
        self,
        config: RelayConfig,
        handler: RelayHandler,
        tls: ssl.SSLContext | None = None,
        *,
        reuse_port: bool = False,
    ) -> None:
        self._config = config
        self._handler = handler
        self._tls = tls
        self._reuse_port = reuse_port  # several worker processes listen on each port
        self._servers: list[asyncio.Server] = []

    def _protocol(self, implicit_tls: bool = False) -> asyncio.Protocol:
        if self._handler.draining:
            return _Refuse(policy.SHUTTING_DOWN.format(host=self._config.hostname))
        return OutpostSMTP(
            self._handler,
            hostname=self._config.hostname,
            ident=IDENT,
            data_size_limit=self._config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=None if implicit_tls else self._tls,  # no STARTTLS inside TLS
            timeout=self._config.timeout,
            auth_required=False,
            auth_require_tls=True,
            authenticator=capture_credentials if self._handler.users else None,
            # without a users file there is nobody to authenticate: don't offer AUTH at all
            auth_exclude_mechanism=None if self._handler.users else ["LOGIN", "PLAIN"],
            command_call_limit={"*": 1_000_000, "AUTH": 10},
        )

    async def start(self) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        bound = []
        listeners = [(addr, False) for addr in self._config.listen]
        listeners += [(addr, True) for addr in self._config.listen_tls]
        for (host, port), implicit in listeners:
            server = await exits.bind(
                host,
                port,
                loop.create_server(
                    functools.partial(self._protocol, implicit),
                    host,
                    port,
                    reuse_address=True,
                    reuse_port=self._reuse_port or None,
                    ssl=self._tls if implicit else None,
                ),
            )
            self._servers.append(server)
            for sock in server.sockets:
                addr = sock.getsockname()
                bound.append((str(addr[0]), int(addr[1])))
        log.info("listening on %s", " ".join(f"{h}:{p}" for h, p in bound))
        return bound

    async def drain(self, timeout: float) -> None:
        """Stop taking mail: new connections and idle sessions get 421, transactions finish."""
        self._handler.draining = True
        for session in list(self._handler.sessions):
            if session.idle:
                session.close_for_shutdown(self._config.hostname)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            busy = [s for s in self._handler.sessions if not s.idle]
            if not busy:
                break
            await asyncio.sleep(0.05)
        for session in list(self._handler.sessions):
            session.close_for_shutdown(self._config.hostname)
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()


class _Refuse(asyncio.Protocol):
    """What a connection gets while the relay drains: a 421 greeting and a close (RFC 5321 3.8)."""

    def __init__(self, reply: str) -> None:
        self._reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self._reply.encode() + b"\r\n")
        transport.close()
