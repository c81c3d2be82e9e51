"""A private Postfix instance on loopback, relaying everything to one host:port (the peer).

Its own config_directory and queue_directory under a temporary directory (`postfix -c DIR`),
nothing of the system's Postfix is touched or needed running. Postfix itself runs as usual: the
master as root, the daemons as the `postfix` user, queue files fsync'd before the 250 reply.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.bench.common import log, make_traversable, tool, wait_port

MAIN_CF = """\
# outpost bench: a relay-only Postfix peer on loopback
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
myhostname = postfix-peer.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
smtpd_peername_lookup = no
smtp_host_lookup = native
default_destination_concurrency_limit = {concurrency}
message_size_limit = 52428800
biff = no
append_dot_mydomain = no
smtputf8_enable = no
maillog_file = {maillog}
maillog_file_prefixes = {base}
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME
"""


class PostfixPeer:
    """`with PostfixPeer(base_dir, port, relay_port) as pf:` ... started, then stopped.

    Needs root (the master binds and changes to the postfix user).
    """

    def __init__(self, base: Path, port: int, relay_port: int, concurrency: int = 20) -> None:
        self.base = base
        self.port = port
        self.relay_port = relay_port
        self.concurrency = concurrency
        self.config_dir = base / "etc"
        self.queue_dir = base / "queue"
        self.data_dir = base / "data"
        self.maillog = base / "maillog"
        self.started = False

    # --- setup

    def configure(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError(
                "the Postfix peer needs root (its master binds and drops to postfix)"
            )
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        # the daemons run as `postfix`: they must reach their queue and data directories
        os.chmod(self.base, 0o755)
        make_traversable(self.base)  # and pass through the (0700) temporary directories
        shutil.chown(self.data_dir, user="postfix")
        master = Path("/etc/postfix/master.cf")
        if not master.exists():
            master = Path("/usr/share/postfix/master.cf.dist")
        shutil.copy(master, self.config_dir / "master.cf")
        (self.config_dir / "main.cf").write_text(
            MAIN_CF.format(
                queue=self.queue_dir,
                data=self.data_dir,
                relay_port=self.relay_port,
                concurrency=self.concurrency,
                maillog=self.maillog,
                base=self.base,
            )
        )
        cf = str(self.config_dir)
        # no chroot (the queue is a temp dir), no smtpd on port 25, ours on 127.0.0.1:port
        self._postconf("-F", "*/*/chroot = n")
        self._postconf("-MX", "smtp/inet")
        self._postconf("-MX", "submission/inet", check=False)
        self._postconf("-MX", "smtps/inet", check=False)
        svc = f"127.0.0.1:{self.port}"
        self._postconf("-Me", f"{svc}/inet = {svc} inet n - n - - smtpd")
        r = self._run(["postfix", "-c", cf, "check"])
        if r.returncode != 0:
            raise RuntimeError(f"postfix check failed: {r.stdout}{r.stderr}{self._tail()}")

    def _postconf(self, *args: str, check: bool = True) -> None:
        r = self._run(["postconf", "-c", str(self.config_dir), *args])
        if check and r.returncode != 0:
            raise RuntimeError(f"postconf {' '.join(args)}: {r.stderr.strip()}")

    def _run(self, cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool(cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=timeout
        )

    def _tail(self, lines: int = 15) -> str:
        try:
            text = self.maillog.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\nmaillog:\n" + "\n".join(text[-lines:])

    # --- lifecycle

    def start(self) -> None:
        self.configure()
        r = self._run(["postfix", "-c", str(self.config_dir), "start"])
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stdout}{r.stderr}{self._tail()}")
        self.started = True
        wait_port(self.port, timeout=30, banner=True)

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if not self.started:
            return
        pid = self.master_pid()
        r = self._run(["postfix", "-c", str(self.config_dir), "stop"], timeout=60)
        if r.returncode != 0:
            log(f"postfix stop: {r.stdout}{r.stderr}".strip())
            r = self._run(["postfix", "-c", str(self.config_dir), "abort"], timeout=60)
        # `postfix stop` waits for the master; make sure, by its pid
        if pid is not None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                log(f"postfix master {pid} still running; SIGKILL")
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        self.started = False

    def queue_size(self) -> int:
        """Messages still in the queue (incoming, active, deferred, hold), counted as files."""
        total = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(self.queue_dir / sub):
                total += len(files)
        return total

    def __enter__(self) -> PostfixPeer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False
