"""Shared benchmark parts: tool installation, free ports, process groups, /proc sampling, stats."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_PY = (
    REPO / ".venv/bin/python" if (REPO / ".venv/bin/python").exists() else Path(sys.executable)
)
RESULTS = REPO / "tests" / "bench" / "results"
LOOPBACK = "127.0.0.1"

# binary -> Debian package that provides it
TOOLS = {
    "smtp-source": "postfix",
    "smtp-sink": "postfix",
    "postfix": "postfix",
    "nginx": "nginx-light",
    "wrk": "wrk",
    "nats-server": "nats-server",
}
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- tools


def which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(name, path=path)


def tool(name: str) -> str:
    found = which(name)
    if found is None:
        raise RuntimeError(f"{name} not found (package {TOOLS.get(name, '?')})")
    return found


def ensure_tools(names: Sequence[str]) -> None:
    """Install the Debian packages of the missing tools (apt-get, non-interactive).

    Services are not started by the install: a temporary policy-rc.d answers 101 ("action
    forbidden") while apt runs, so installing postfix or nginx never leaves a system daemon
    running on ports 25 or 80. The benchmark starts its own private instances.
    """
    missing = sorted({TOOLS[n] for n in names if which(n) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(
            f"missing {', '.join(missing)}; run as root or: apt-get install -y {' '.join(missing)}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {' '.join(missing)} (apt-get)")
    if "postfix" in missing:
        subprocess.run(
            ["debconf-set-selections"],
            input=b"postfix postfix/main_mailer_type select No configuration\n"
            b"postfix postfix/mailname string outpost-bench.localdomain\n",
            check=True,
            env=env,
        )
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text(
            "#!/bin/sh\n# outpost bench: no service starts during install\nexit 101\n"
        )
        policy.chmod(0o755)
    try:
        update = subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        if update.returncode != 0:
            log(f"apt-get update failed (continuing): {update.stderr.decode(errors='replace')}")
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            env=env,
            check=True,
        )
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    still = [n for n in names if which(n) is None]
    if still:
        raise RuntimeError(f"still missing after install: {', '.join(still)}")


def tool_versions() -> dict[str, str]:
    """'Postfix 3.7.11', 'nginx 1.22.1', 'wrk 4.1.0' (what is installed)."""
    out: dict[str, str] = {}
    checks = {
        "postfix": (["postconf", "-h", "mail_version"], r"([\d.]+)"),
        "nginx": (["nginx", "-v"], r"nginx/([\d.]+)"),
        "wrk": (["wrk", "-v"], r"wrk\s+(?:\S*/)?([\d.]+)"),
    }
    for name, (cmd, pattern) in checks.items():
        exe = which(cmd[0])
        if exe is None:
            continue
        r = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True)
        m = re.search(pattern, r.stdout + r.stderr)
        out[name] = f"{'Postfix' if name == 'postfix' else name} {m.group(1) if m else '?'}"
    return out


def code_version() -> str:
    """The commit under test, '+dirty' when relay/ or sidecar/ differ from it (others at work)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "relay", "sidecar"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


# --- ports and waiting


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int,
    timeout: float = 30.0,
    proc: subprocess.Popen[Any] | None = None,
    banner: bool = False,
) -> None:
    """Wait until something listens on 127.0.0.1:port (and, with banner, sends a line)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=2) as s:
                if banner:
                    s.settimeout(5)
                    if not s.recv(512):
                        raise ConnectionError("closed before the banner")
                return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout}s ({last})")


def wait_until(
    check: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition"
) -> float:
    """Poll check() until true; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- processes


class Processes(contextlib.AbstractContextManager["Processes"]):
    """Everything the benchmark starts: each child in its own process group, stopped on exit.

    Exit (normal or by exception) runs the stop callbacks (newest first), then sends SIGTERM to
    each leader still alive, waits, and SIGKILLs whatever is left in its process group.
    """

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[Any], int]] = []
        self._callbacks: list[tuple[str, Callable[[], None]]] = []

    def start(
        self, name: str, cmd: Sequence[str], stop_signal: int = signal.SIGTERM, **kw: Any
    ) -> subprocess.Popen[Any]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(list(cmd), start_new_session=True, **kw)
        self._procs.append((name, proc, stop_signal))
        return proc

    def on_exit(self, name: str, callback: Callable[[], None]) -> None:
        self._callbacks.append((name, callback))

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 15.0) -> int | None:
        for i, (name, p, sig) in enumerate(self._procs):
            if p is proc:
                del self._procs[i]
                return _stop_group(name, p, sig, timeout)
        return proc.poll()

    def stop_all(self) -> None:
        while self._callbacks:
            name, cb = self._callbacks.pop()
            try:
                cb()
            except Exception as exc:  # keep stopping the rest
                log(f"stopping {name}: {exc!r}")
        while self._procs:
            name, p, sig = self._procs.pop()
            _stop_group(name, p, sig, 15.0)

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _stop_group(name: str, proc: subprocess.Popen[Any], sig: int, timeout: float) -> int | None:
    if proc.poll() is None:
        # the leader first (the relay drains and stops its own render workers), then the group
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} (pid {proc.pid}) ignored signal {sig}; killing")
    # the leader may be gone while others in its group live on: finish them too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    return proc.returncode


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP become SystemExit so every finally block (and Processes) runs."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


@contextlib.contextmanager
def workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"outpost-bench-{prefix}-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def make_traversable(path: Path) -> None:
    """Let other users (postfix, nobody) pass through path's (0700 temporary) parents."""
    for parent in path.parents:
        st = parent.stat()
        if st.st_mode & 0o001 == 0 and st.st_uid == os.geteuid():
            os.chmod(parent, (st.st_mode & 0o7777) | 0o011)


# --- /proc


def _status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a live process, in MB."""
    try:
        return int(_status(pid)["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


def cpu_seconds(pid: int, children: bool = False) -> float | None:
    """utime + stime of a live process (+ its reaped children's with children=True)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each live thread of a process (the main thread's id is the pid)."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def descendants(pid: int) -> list[int]:
    """pid and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def pss_mb(pids: Sequence[int]) -> float:
    """Sum of proportional set sizes (shared pages split between sharers), in MB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


class TreeSampler:
    """Samples the PSS of a process tree every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pid_fn: Callable[[], int | None], interval: float = 0.5) -> None:
        self._pid_fn = pid_fn
        self._interval = interval
        self.peak_mb = 0.0
        self.hwm_mb: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def sample(self) -> None:
        pid = self._pid_fn()
        if pid:
            pids = descendants(pid)
            self.peak_mb = max(self.peak_mb, pss_mb(pids))
            for p in pids:
                hwm = vm_hwm_mb(p)
                if hwm is not None:
                    self.hwm_mb[p] = max(self.hwm_mb.get(p, 0.0), hwm)

    @property
    def hwm_sum_mb(self) -> float:
        """Sum of each process's peak RSS (VmHWM) over the tree: an upper bound of its peak."""
        return sum(self.hwm_mb.values())

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


# --- numbers


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    data = sorted(values)
    k = max(0, min(len(data) - 1, int(round(q / 100 * len(data) + 0.5)) - 1))
    return data[k]


def summary_ms(seconds: Sequence[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": _r(percentile(ms, 50)),
        "p99_ms": _r(percentile(ms, 99)),
        "max_ms": _r(max(ms) if ms else None),
        "mean_ms": _r(statistics.fmean(ms) if ms else None),
    }


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


# --- messages


def html_message(
    size: int,
    links: int = 10,
    from_addr: str = "news@example.com",
    to_addr: str = "reader@example.org",
    campaign: str = "bench",
) -> bytes:
    """A newsletter-shaped HTML message of about `size` bytes with `links` distinct links.

    LF line endings (smtp-source -F turns them into CRLF; the own client does too).
    """
    head = (
        f"From: Outpost Bench <{from_addr}>\n"
        f"To: <{to_addr}>\n"
        "Subject: This week at Outpost\n"
        f"X-Outpost-Campaign: {campaign}\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/html; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "\n"
    ).encode()
    top = b"<!doctype html>\n<html><head><title>This week</title></head><body>\n"
    end = b"</body></html>\n"
    link_lines = [
        f'<p><a href="https://www.example.com/articles/{i}?utm_source=newsletter&amp;id={i}">'
        f"Article {i}: relays, queues and signatures</a></p>\n".encode()
        for i in range(links)
    ]
    filler = (
        b"<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
        b"incididunt ut labore et dolore magna aliqua.</p>\n"
    )
    fixed = len(head) + len(top) + len(end) + sum(map(len, link_lines))
    n_fill = max(0, (size - fixed) // len(filler))
    body = bytearray(top)
    # spread the links through the text, like a real newsletter
    per = max(1, n_fill // max(1, links))
    fills = 0
    for line in link_lines:
        for _ in range(per):
            if fills < n_fill:
                body += filler
                fills += 1
        body += line
    while fills < n_fill:
        body += filler
        fills += 1
    body += end
    msg = head + bytes(body)
    pad = size - len(msg)
    if pad > 8:
        msg = msg[: -len(end)] + b"<!--" + b"x" * (pad - 8) + b"-->\n" + end
    return msg


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


@dataclass
class Section:
    """One section's results: rows for the table, a dict for the JSON, notes for the reader."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def sidecar_config(
    d: Path, port: int, store: Path | None = None, store_keys: str = "", sidecar_keys: str = ""
) -> Path:
    """A sidecar config in d (fresh secrets, the store in d unless given; store_keys: the
    [store] lines instead, e.g. a PostgreSQL url; sidecar_keys: more [sidecar] lines); the
    admin token is in d/admin.token."""
    (d / "tracking.secrets").write_text(secrets.token_urlsafe(32) + "\n")
    (d / "admin.token").write_text(secrets.token_urlsafe(24) + "\n")
    path = d / "outpost.toml"
    path.write_text(
        f"""\
# outpost bench: the sidecar
[store]
{store_keys or f'path = "{store or d / "outpost.db"}"'}

[tracking]
base_url = "http://{LOOPBACK}:{port}"
secrets_file = "{d / "tracking.secrets"}"

[sidecar]
listen = "{LOOPBACK}:{port}"
admin_token_file = "{d / "admin.token"}"
{sidecar_keys}
[log]
level = "warning"
"""
    )
    return path
