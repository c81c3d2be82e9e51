"""SMTP section: smtp-source against smtp-sink, Postfix and Outpost; end to end at the sink.

Scenarios, each with a fresh smtp-sink (and a fresh peer, store, temp dir):

- ``sink``: smtp-source straight into smtp-sink (the loopback ceiling);
- ``postfix``: a private Postfix relaying to smtp-sink (the incumbent; tests/bench/postfix.py);
- ``outpost-plain``: Outpost's relay to smtp-sink, tracking and DKIM off;
- ``outpost-full``: the same with opens, clicks, unsubscribe and RSA-2048 DKIM on;
- ``outpost-plain-np``, ``outpost-full-np``: the same with ``relay.processes`` = the machine's
  cores (whole relays sharing the port, each rendering in-process) where the others run one
  relay process with one render worker process.

Throughput: ``smtp-source -s 20 -m N -d -F MSG`` (20 sessions, each sending message after message
on its connection). The clock starts when smtp-source is launched (its first connection, i.e. the
first accept, follows within milliseconds) and stops when smtp-sink's own counter (``-c``, which
smtp-sink updates when it receives the final ".") reaches N: the time of the last delivery,
measured the same way for all four scenarios. Accept latency comes from a second pass with this
module's own client (20 concurrent sessions, each MAIL FROM ... 250 after DATA timed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import secrets
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.common import (
    LOOPBACK,
    REPO,
    VENV_PY,
    Processes,
    TreeSampler,
    code_version,
    cpu_busy,
    cpu_seconds,
    descendants,
    free_port,
    html_message,
    log,
    make_traversable,
    ratio,
    summary_ms,
    thread_cpu,
    tool,
    vm_hwm_mb,
    wait_port,
    wait_until,
    workdir,
)
from tests.bench.postfix import PostfixPeer

SESSIONS = 20
SIZES = {"5KB": 5_000, "50KB": 50_000}
SCENARIOS = (
    "sink",
    "postfix",
    "outpost-plain",
    "outpost-full",
    "outpost-plain-np",
    "outpost-full-np",
)


def smtp_source(sessions: int, messages: int, msgfile: Path, port: int) -> list[str]:
    """The load: smtp-source, ``sessions`` connections sending ``msgfile`` message after
    message (-d) until ``messages`` are sent, to the loopback port."""
    return [
        tool("smtp-source"),
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-d",
        "-F",
        str(msgfile),
        "-f",
        ENVELOPE_FROM,
        "-t",
        ENVELOPE_TO,
        "-M",
        HELO,
        f"{LOOPBACK}:{port}",
    ]


def relay_processes(scenario: str) -> int:
    """The relay.processes a scenario runs with: one per core for ``-np``, else one."""
    return os.cpu_count() or 1 if scenario.endswith("-np") else 1


ENVELOPE_FROM = "bench@example.com"
ENVELOPE_TO = "reader@example.org"
HELO = "client.example.com"
DKIM_DOMAIN, DKIM_SELECTOR = "example.com", "s1"

# --- smtp-sink with its running counter


class SmtpSink:
    """smtp-sink on a free loopback port; a thread reads its ``-c`` counter (``mesg=N``)."""

    _MESG = re.compile(rb"mesg=(\d+)")

    def __init__(self, procs: Processes, workdir: Path, dump_dir: Path | None = None) -> None:
        self.port = free_port()
        cmd = [tool("smtp-sink"), "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        if dump_dir is not None:
            dump_dir.mkdir(parents=True, exist_ok=True)
            dump_dir.chmod(0o777)
            make_traversable(dump_dir)
            cmd += ["-d", f"{dump_dir}/"]
        cmd += [f"{LOOPBACK}:{self.port}", "1024"]
        self._err = open(workdir / f"smtp-sink-{self.port}.err", "wb")  # noqa: SIM115
        self.proc = procs.start("smtp-sink", cmd, stdout=subprocess.PIPE, stderr=self._err)
        self.count = 0
        self.first_at: float | None = None
        self._cond = threading.Condition()
        self._reached: dict[int, float] = {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_port(self.port, timeout=10, proc=self.proc)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        tail = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            now = time.monotonic()
            tail = (tail + chunk)[-256:]
            found = self._MESG.findall(tail)
            if not found:
                continue
            n = int(found[-1])
            with self._cond:
                if n > self.count:
                    if self.first_at is None:
                        self.first_at = now
                    self.count = n
                    for target in [t for t in self._reached if self._reached[t] == 0.0]:
                        if n >= target:
                            self._reached[target] = now
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def expect(self, target: int) -> None:
        """Record the time the counter reaches target (call before the traffic starts)."""
        with self._cond:
            self._reached[target] = 0.0 if self.count < target else time.monotonic()

    def wait_for(self, target: int, timeout: float) -> float:
        """The monotonic time the counter reached target (expect() it first)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._reached.get(target, 0.0) == 0.0:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(
                        f"smtp-sink counted {self.count} messages, expected {target}"
                    )
                self._cond.wait(min(left, 0.5))
            return self._reached[target]


# --- our own client: per-transaction accept latency


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), b"".join(lines)


def wire(message: bytes) -> bytes:
    """LF message -> CRLF, dot-stuffed, ending with CRLF.CRLF (what goes after DATA)."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + ln if ln.startswith(b".") else ln for ln in lines]
    return b"\r\n".join(stuffed) + b"\r\n.\r\n"


async def _session(
    port: int, data: bytes, count: int, lat: list[float], errors: Counter[str]
) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        await _reply(reader)
        writer.write(f"EHLO {HELO}\r\n".encode())
        await _reply(reader)
        mail = f"MAIL FROM:<{ENVELOPE_FROM}>\r\n".encode()
        rcpt = f"RCPT TO:<{ENVELOPE_TO}>\r\n".encode()
        for _ in range(count):
            t0 = time.perf_counter()
            writer.write(mail)
            code, text = await _reply(reader)
            if code != 250:
                errors[f"MAIL {code}"] += 1
                writer.write(b"RSET\r\n")
                await _reply(reader)
                continue
            writer.write(rcpt)
            code, text = await _reply(reader)
            if code not in (250, 251):
                errors[f"RCPT {code}"] += 1
                writer.write(b"RSET\r\n")
                await _reply(reader)
                continue
            writer.write(b"DATA\r\n")
            code, text = await _reply(reader)
            if code != 354:
                errors[f"DATA {code}"] += 1
                continue
            writer.write(data)
            code, text = await _reply(reader)
            if code != 250:
                errors[f"end of data {code}"] += 1
                continue
            lat.append(time.perf_counter() - t0)
        writer.write(b"QUIT\r\n")
        with contextlib.suppress(ConnectionError):
            await _reply(reader)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _latency(port: int, message: bytes, total: int, sessions: int) -> dict[str, Any]:
    data = wire(message)
    lat: list[float] = []
    errors: Counter[str] = Counter()
    per = [total // sessions + (1 if i < total % sessions else 0) for i in range(sessions)]
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(_session(port, data, n, lat, errors) for n in per if n), return_exceptions=True
    )
    elapsed = time.perf_counter() - t0
    for r in results:
        if isinstance(r, BaseException):
            errors[f"session: {r!r}"] += 1
    out = summary_ms(lat)
    out["rate_per_s"] = round(len(lat) / elapsed, 1) if elapsed else None
    out["errors"] = dict(errors)
    return out


def accept_latency(
    port: int, message: bytes, total: int, sessions: int = SESSIONS
) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_latency(port, message, total, sessions))
    return uvloop.run(_latency(port, message, total, sessions))


def send_one(port: int, message: bytes) -> None:
    out = accept_latency(port, message, 1, 1)
    if out["errors"] or out["n"] != 1:
        raise RuntimeError(f"test message refused: {out['errors']}")


# --- the systems under test


def relay_config(
    d: Path,
    port: int,
    sink_port: int,
    full: bool,
    concurrency: int = SESSIONS,
    processes: int = 1,
) -> Path:
    """Write the relay's TOML (and its secret, token, DKIM key) into d; with several
    processes each renders in-process (delivery.render_processes = 0)."""
    secrets_file = d / "tracking.secrets"
    secrets_file.write_text(secrets.token_urlsafe(32) + "\n")
    token = d / "admin.token"
    token.write_text(secrets.token_urlsafe(24) + "\n")
    on = "true" if full else "false"
    text = f"""\
# outpost bench: relay to smtp-sink, tracking and DKIM {"on" if full else "off"}
[relay]
listen = ["{LOOPBACK}:{port}"]
processes = {processes}
hostname = "outpost-bench.localdomain"
max_recipients = 100
drain_timeout = "5s"

[store]
path = "{d / "outpost.db"}"

[delivery]
transport = "smarthost"
smarthost = "{LOOPBACK}:{sink_port}"
smarthost_tls = "none"
concurrency = {concurrency}
destination_concurrency = {concurrency}
render_processes = {1 if processes == 1 else 0}

[tracking]
base_url = "http://127.0.0.1:8025"
secrets_file = "{secrets_file}"
opens = {on}
clicks = {on}
unsubscribe = {on}
honeypot = {on}

[streams]
default = "broadcast"  # newsletters: tracked by default (transactional mail is not)

[sidecar]
listen = "127.0.0.1:{free_port()}"
admin_token_file = "{token}"

[log]
level = "warning"
"""
    if full:
        key = d / f"{DKIM_DOMAIN}.{DKIM_SELECTOR}.pem"
        if not key.exists():
            subprocess.run(
                [
                    str(VENV_PY),
                    "-m",
                    "relay.cli",
                    "dkim",
                    "keygen",
                    "--domain",
                    DKIM_DOMAIN,
                    "--selector",
                    DKIM_SELECTOR,
                    "--out",
                    str(key),
                ],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
        text += f"""
[[dkim.keys]]
domain = "{DKIM_DOMAIN}"
selector = "{DKIM_SELECTOR}"
key_file = "{key}"
algorithm = "rsa-sha256"
"""
    path = d / "outpost.toml"
    path.write_text(text)
    return path


def start_relay(procs: Processes, config: Path, port: int, d: Path) -> subprocess.Popen[Any]:
    err = open(d / "relay.log", "ab")  # noqa: SIM115
    proc = procs.start(
        "relay",
        [str(VENV_PY), "-m", "relay", "--config", str(config)],
        cwd=REPO,
        stdout=err,
        stderr=err,
    )
    try:
        wait_port(port, timeout=30, proc=proc, banner=True)
    except Exception as exc:
        raise RuntimeError(f"relay did not start: {exc}\n{_tail(d / 'relay.log')}") from None
    return proc


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def store_states(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return dict(con.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall())
    finally:
        con.close()


def verify_render(d: Path, full: bool, message: bytes) -> dict[str, bool]:
    """One message through a relay of this config into a dumping smtp-sink: check what the
    delivered copy carries (DKIM-Signature, rewritten links, pixel, List-Unsubscribe)."""
    vd = d / "verify"
    vd.mkdir()
    dump = vd / "dump"
    with Processes() as procs:
        sink = SmtpSink(procs, vd, dump_dir=dump)
        port = free_port()
        cfg = relay_config(vd, port, sink.port, full)
        start_relay(procs, cfg, port, vd)
        sink.expect(1)
        send_one(port, message)
        sink.wait_for(1, 30)
        deadline = time.monotonic() + 10
        files: list[Path] = []
        while time.monotonic() < deadline:
            files = [p for p in dump.rglob("*") if p.is_file() and p.stat().st_size > 0]
            if files:
                time.sleep(0.2)  # smtp-sink finishes the file after counting
                break
            time.sleep(0.05)
    if not files:
        raise RuntimeError("verify: smtp-sink dumped nothing")
    copy = files[0].read_bytes()
    header = copy.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    checks = {
        "dkim_signature": b"\ndkim-signature:" in b"\n" + header.lower(),
        "links_rewritten": b"http://127.0.0.1:8025/c/" in copy,
        "pixel": b"http://127.0.0.1:8025/o/" in copy,
        "list_unsubscribe": b"\nlist-unsubscribe:" in b"\n" + header.lower(),
    }
    want = {k: full for k in checks}
    if checks != want:
        raise RuntimeError(f"verify: delivered copy is not as configured (full={full}): {checks}")
    return checks


# --- one scenario


def run_scenario(
    scenario: str,
    size_name: str,
    messages: int,
    latency_messages: int,
    keep: bool = False,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    size = SIZES[size_name]
    message = html_message(size)
    out: dict[str, Any] = {
        "scenario": scenario,
        "size": size_name,
        "message_bytes": len(wire(message)) - 5,
        "messages": messages,
        "sessions": SESSIONS,
        "loadavg_before": round(os.getloadavg()[0], 2),
        "code": code_version(),
    }
    with workdir(f"smtp-{scenario}-{size_name}", keep=keep) as d:
        msgfile = d / "message.eml"
        msgfile.write_bytes(message)
        if scenario.startswith("outpost"):
            out["render_checks"] = verify_render(d, scenario.startswith("outpost-full"), message)
        with Processes() as procs:
            sink = SmtpSink(procs, d)
            pid_fn: Callable[[], int | None]
            relay_proc = None
            peer: PostfixPeer | None = None
            if scenario == "sink":
                target = sink.port
                pid_fn = lambda: sink.proc.pid  # noqa: E731
            elif scenario == "postfix":
                target = free_port()
                peer = PostfixPeer(d / "postfix", target, sink.port, concurrency=SESSIONS)
                procs.on_exit("postfix", peer.stop)
                peer.start()
                pid_fn = peer.master_pid
            else:
                target = free_port()
                out["relay_processes"] = relay_processes(scenario)
                cfg = relay_config(
                    d,
                    target,
                    sink.port,
                    scenario.startswith("outpost-full"),
                    processes=relay_processes(scenario),
                )
                relay_proc = start_relay(procs, cfg, target, d)
                pid_fn = lambda: relay_proc.pid  # noqa: E731
            threads0 = thread_cpu(relay_proc.pid) if relay_proc is not None else {}
            spy = None
            if profile_dir is not None and relay_proc is not None:
                spy = _start_profile(procs, relay_proc.pid, profile_dir, f"{scenario}-{size_name}")

            # pass 1: throughput, end to end at the sink
            base = sink.count
            sink.expect(base + messages)
            ours0 = _our_cpu(sink, scenario)
            cpu0 = _cpu(pid_fn())
            busy0, w0 = cpu_busy(), time.monotonic()
            with TreeSampler(pid_fn) as sampler:
                t0 = time.monotonic()
                src = subprocess.run(
                    smtp_source(SESSIONS, messages, msgfile, target),
                    capture_output=True,
                    text=True,
                    timeout=3600,
                )
                t_accepted = time.monotonic()
                if src.returncode != 0:
                    raise RuntimeError(
                        f"smtp-source failed ({src.returncode}): {src.stderr.strip()[-2000:]}"
                    )
                timeout = max(120.0, messages / 20)
                t_end = sink.wait_for(base + messages, timeout)
            busy1, w1 = cpu_busy(), time.monotonic()
            cpu1 = _cpu(pid_fn())
            ours1 = _our_cpu(sink, scenario)
            if spy is not None:
                out["profile"] = _stop_profile(procs, spy)
            e2e = t_end - t0
            out["e2e_s"] = round(e2e, 3)
            out["msgs_per_s"] = round(messages / e2e, 1)
            out["accept_s"] = round(t_accepted - t0, 3)
            out["accept_msgs_per_s"] = round(messages / (t_accepted - t0), 1)
            out["machine_cpu_busy"] = round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3)
            if cpu0 is not None and cpu1 is not None:
                # CPU used on the machine meanwhile by anything but this scenario's processes
                # (others' work on a shared machine): noise, in cores
                busy_s = (busy1[0] - busy0[0]) / os.sysconf("SC_CLK_TCK")
                ours = (cpu1 - cpu0) + (ours1 - ours0)
                out["other_load_cores"] = round(max(0.0, busy_s - ours) / (w1 - w0), 2)
            if relay_proc is not None:
                # the relay process and its render workers (delivery.render_processes)
                out["rss_peak_mb"] = _r1(sampler.hwm_sum_mb)
                out["rss_main_mb"] = _r1(vm_hwm_mb(relay_proc.pid))
                out["rss_processes"] = len(sampler.hwm_mb)
                out["rss_measure"] = "sum of VmHWM over the relay process and its children"
            out["pss_peak_mb"] = _r1(sampler.peak_mb)
            if cpu0 is not None and cpu1 is not None:
                out["cpu_s"] = round(cpu1 - cpu0, 2)
                out["cpu_ms_per_msg"] = round((cpu1 - cpu0) * 1000 / messages, 3)
                out["cpu_cores_used"] = round((cpu1 - cpu0) / e2e, 2)
            if relay_proc is not None:
                threads1 = thread_cpu(relay_proc.pid)
                main = threads1.get(relay_proc.pid, 0.0) - threads0.get(relay_proc.pid, 0.0)
                other = sum(
                    v - threads0.get(t, 0.0) for t, v in threads1.items() if t != relay_proc.pid
                )
                out["cpu_split_s"] = {
                    "event loop thread": round(main, 2),
                    "other threads (aiosqlite, executor)": round(other, 2),
                    "child processes (render workers)": round(
                        max(0.0, (cpu1 or 0.0) - (cpu0 or 0.0) - main - other), 2
                    ),
                }
            # the sink has every message; the peer records its results a moment later
            if peer is not None:
                with contextlib.suppress(TimeoutError):
                    wait_until(lambda: peer.queue_size() == 0, 15, 0.1, "postfix queue")
                out["queue_left"] = peer.queue_size()
            if relay_proc is not None:
                db = d / "outpost.db"
                with contextlib.suppress(TimeoutError):
                    wait_until(
                        lambda: store_states(db).get("delivered", 0) >= messages,
                        15,
                        0.1,
                        "store: all delivered",
                    )
                out["store_states"] = store_states(db)
                if out["store_states"].get("delivered", 0) < messages:
                    raise RuntimeError(f"store: not all delivered: {out['store_states']}")

            # pass 2: accept latency with our own client (20 sessions)
            if latency_messages:
                sink.expect(sink.count + latency_messages)
                out["latency"] = accept_latency(target, message, latency_messages, SESSIONS)
            if relay_proc is not None:
                after = {p: vm_hwm_mb(p) or 0.0 for p in descendants(relay_proc.pid)}
                for p, v in sampler.hwm_mb.items():
                    after[p] = max(after.get(p, 0.0), v)
                out["rss_peak_after_latency_mb"] = _r1(sum(after.values()))
    return out


def _our_cpu(sink: SmtpSink, scenario: str) -> float:
    """CPU seconds of the harness, its waited-for children (smtp-source) and smtp-sink (unless
    the sink is the system under test, counted by _cpu)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    if scenario != "sink":
        total += cpu_seconds(sink.proc.pid) or 0.0
    return total


def _cpu(pid: int | None) -> float | None:
    """CPU seconds of a process tree: live members, plus what the root reaped."""
    if pid is None:
        return None
    total = cpu_seconds(pid, children=True)
    if total is None:
        return None
    for p in descendants(pid)[1:]:
        total += cpu_seconds(p) or 0.0
    return total


def _r1(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


# --- profiling (py-spy, optional)


def _start_profile(procs: Processes, pid: int, directory: Path, name: str) -> dict[str, Any]:
    spy = _pyspy()
    if spy is None:
        log("py-spy not found (.venv/bin/pip install py-spy); no profile")
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / f"profile-{name}.txt"
    proc = procs.start(
        "py-spy",
        [
            spy,
            "record",
            "--native",
            "--threads",
            "--subprocesses",
            "--rate",
            "100",
            "--format",
            "raw",
            "-o",
            str(raw),
            "--pid",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return {"proc": proc, "raw": raw}


def _stop_profile(procs: Processes, spy: dict[str, Any]) -> dict[str, Any]:
    if not spy:
        return {}
    import signal

    proc = spy["proc"]
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    procs.stop(proc)
    return summarise_profile(spy["raw"])


def _pyspy() -> str | None:
    cand = VENV_PY.parent / "py-spy"
    if cand.exists():
        return str(cand)
    from shutil import which

    return which("py-spy")


# where a sample goes: the first category whose marker is in its stack (idle: in its leaf)
CATEGORIES = (
    ("idle (epoll wait)", ("epoll_wait", "epoll_pwait")),
    # the GIL's take/drop are condition variable waits and signals (inlined in libpython)
    ("GIL hand-offs (waiting for / releasing)", ("take_gil", "pthread_cond_")),
    ("DKIM signing", ("DkimSigner.sign",)),
    ("render: links, pixel, MIME", ("Renderer._track_body",)),
    ("render: headers, other", ("Renderer.render",)),
    ("hand-off to render workers", ("relay/render.py", "concurrent/futures/")),
    ("SMTP out (aiosmtplib)", ("aiosmtplib/",)),
    ("store calls (relay/store.py, aiosqlite)", ("relay/store.py", "aiosqlite/")),
    ("accept (relay/pipeline.py)", ("relay/pipeline.py",)),
    ("SMTP in (aiosmtpd, relay/smtpd.py)", ("aiosmtpd/", "relay/smtpd.py")),
    ("delivery scheduling", ("relay/delivery.py",)),
    ("tracking (sidecar/tracking.py, classify)", ("sidecar/tracking.py", "sidecar/classify.py")),
    ("events recorder (sidecar/events.py)", ("sidecar/events.py",)),
    ("aiohttp", ("aiohttp/",)),
)
WORKER_CATEGORIES = (
    ("DKIM signing", ("DkimSigner.sign",)),
    ("render: links, pixel, MIME", ("Renderer._track_body",)),
    ("render: headers, other", ("Renderer.render",)),
    ("idle (waiting for work)", ("_recv_bytes", "Queue.get", "Connection.recv", "wait")),
    ("IPC: pickling, pipes", ("multiprocessing/", "concurrent/futures/", "pickle")),
)


def _categorise(
    frames: list[str], table: tuple[tuple[str, tuple[str, ...]], ...], other: str = "other"
) -> str:
    stack = ";".join(frames)
    for name, markers in table:
        if name.startswith("idle (epoll"):
            where = frames[-1]
        elif name.startswith("GIL"):
            where = ";".join(frames[-3:])
        else:
            where = stack
        if any(m in where for m in markers):
            return name
    return other


def summarise_profile(raw: Path, top: int = 20) -> dict[str, Any]:
    """py-spy raw stacks (--native --threads --subprocesses) -> where the time goes: in the
    event loop thread of the profiled process, and in its render worker processes.

    The CPU time of aiosqlite's threads is read from /proc instead (cpu_split_s).
    """
    self_t: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    total = worker_total = 0
    try:
        lines = raw.read_text(errors="replace").splitlines()
    except OSError:
        return {"error": f"no profile written ({raw})"}
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        parts = [f for f in stack.split(";") if f]
        nested = sum(1 for f in parts if f.startswith("process "))
        frames = [_frame(f) for f in parts if not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        text = ";".join(frames)
        if nested <= 1 and "Runner.run" in text:
            total += count
            cats[_categorise(frames, CATEGORIES, "event loop internals, socket I/O")] += count
            py = [f for f in frames if ".py" in f or "<" in f]
            self_t[py[-1] if py else frames[-1]] += count
        elif "_process_worker" in text:
            worker_total += count
            workers[_categorise(frames, WORKER_CATEGORIES)] += count

    def pct(c: Counter[str], of: int, n: int = top) -> list[tuple[str, float]]:
        return [(k, round(100 * v / of, 1)) for k, v in c.most_common(n)] if of else []

    return {
        "file": str(raw),
        "samples": total,
        "note": "% of the event loop thread's samples (py-spy --native, idle included)",
        "categories_pct": pct(cats, total, 50),
        "innermost_python_frame_pct": pct(self_t, total),
        "render_worker_samples": worker_total,
        "render_worker_categories_pct": pct(workers, worker_total, 50),
    }


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _frame(text: str) -> str:
    m = _FRAME.match(text.strip())
    if not m:
        return text.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('fn')} ({path})"


# --- the section


def best_runs(
    attempts: list[dict[str, Any]], sizes: tuple[str, ...], scenarios: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Per (scenario, size): the run with the best end-to-end rate, with every round's figures
    summarised under "rounds"; a path whose runs all failed keeps its (last) error."""
    out = []
    for size_name in sizes:
        for scenario in scenarios:
            mine = [a for a in attempts if a["scenario"] == scenario and a["size"] == size_name]
            if not mine:
                continue
            good = [a for a in mine if "error" not in a]
            best = dict(max(good, key=lambda a: a["msgs_per_s"]) if good else mine[-1])
            best["rounds"] = [
                {
                    "round": a.get("round"),
                    "msgs_per_s": a.get("msgs_per_s"),
                    "accept_msgs_per_s": a.get("accept_msgs_per_s"),
                    "latency_p50_ms": a.get("latency", {}).get("p50_ms"),
                    "latency_p99_ms": a.get("latency", {}).get("p99_ms"),
                    "rss_peak_mb": a.get("rss_peak_mb"),
                    "other_load_cores": a.get("other_load_cores"),
                    "error": a.get("error"),
                }
                for a in mine
            ]
            out.append(best)
    return out


def run(
    messages: int,
    latency_messages: int,
    sizes: tuple[str, ...] = tuple(SIZES),
    scenarios: tuple[str, ...] = SCENARIOS,
    keep: bool = False,
    profile_dir: Path | None = None,
    repeat: int = 1,
    attempts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """All scenarios for all sizes, `repeat` rounds (interleaved, so that a noisy minute on a
    shared machine does not hit one path only); each path's best end-to-end run is reported,
    every run is kept in `attempts` (filled as runs complete, so an interruption keeps them)."""
    attempts = [] if attempts is None else attempts
    for rnd in range(repeat):
        for size_name in sizes:
            for scenario in scenarios:
                log(
                    f"smtp: {scenario} {size_name}: {messages} messages, {SESSIONS} sessions"
                    + (f" (round {rnd + 1}/{repeat})" if repeat > 1 else "")
                )
                try:
                    r = run_scenario(
                        scenario,
                        size_name,
                        messages,
                        latency_messages,
                        keep,
                        profile_dir if scenario.startswith("outpost") and rnd == 0 else None,
                    )
                except Exception as exc:
                    log(f"smtp: {scenario} {size_name} failed: {exc}")
                    r = {"scenario": scenario, "size": size_name, "error": str(exc)}
                r["round"] = rnd + 1
                attempts.append(r)
                lat = r.get("latency", {})
                log(
                    f"smtp: {scenario} {size_name}: {r.get('msgs_per_s')} msg/s end to end, "
                    f"accept p50 {lat.get('p50_ms')} ms p99 {lat.get('p99_ms')} ms, "
                    + (
                        f"RSS {r['rss_peak_mb']} MB"
                        if "rss_peak_mb" in r
                        else f"PSS {r.get('pss_peak_mb')} MB"
                    )
                    + f", other load {r.get('other_load_cores')} cores"
                )
    runs = best_runs(attempts, sizes, scenarios)
    by = {(r["scenario"], r["size"]): r for r in runs}
    ratios: dict[str, Any] = {}
    for size_name in sizes:
        a = by.get(("sink", size_name), {}).get("msgs_per_s")
        b = by.get(("postfix", size_name), {}).get("msgs_per_s")
        for c_name in SCENARIOS[2:]:
            c = by.get((c_name, size_name), {}).get("msgs_per_s")
            ratios[f"{c_name} {size_name}"] = {"c/b": ratio(c, b), "c/a": ratio(c, a)}
    return {
        "messages": messages,
        "latency_messages": latency_messages,
        "sessions": SESSIONS,
        "repeat": repeat,
        "runs": runs,
        "method": (
            "smtp-source -s 20 -m N -d -F MSG; clock from smtp-source launch to smtp-sink's -c "
            "counter reaching N; accept latency: own asyncio client, 20 sessions, MAIL..250 after "
            "DATA; Postfix and Outpost both with destination concurrency 20"
        ),
        "ratios": ratios,
    }
