"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temp dir, on a loopback port.

Run as an unprivileged user (initdb refuses root: as root, the ``postgres`` system user the
package creates, else one made once with useradd). fsync stays on, as in production. Every
test gets its own database, created from a template that already has the schema.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

USER = "outpost"  # the database role the tests connect as (a password, scram-sha-256)
TEMPLATE = "outpost_template"


def run_in_thread(coro: Any) -> Any:
    """Run a coroutine to completion on its own loop in a thread (the caller's loop may run)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def binaries() -> Path | None:
    """Debian's versioned bin directory (the newest), or wherever initdb is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> int:
    part = Path(path).parents[1].name
    return int(part) if part.isdigit() else 0


def _system_user() -> str | None:
    """Who runs the server: None = this user (not root), else an unprivileged account."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "outpost-test"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "outpost-test"],
        check=True,
    )
    return "outpost-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    bin: Path
    root: Path
    port: int
    password_file: Path
    run_as: str | None
    _next: int = 0

    @classmethod
    def start(cls, bin_dir: Path) -> PgServer:
        run_as = _system_user()
        root = Path(tempfile.mkdtemp(prefix="outpost-pg-"))
        password_file = root / "password"
        password_file.write_text(secrets.token_hex(16) + "\n")
        server = cls(bin_dir, root, _free_port(), password_file, run_as)
        if run_as is not None:
            shutil.chown(root, run_as)
            shutil.chown(password_file, run_as)
        server._run(
            "initdb",
            "-D",
            str(root / "data"),
            "-U",
            USER,
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "-E",
            "UTF8",
            "--locale=C",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {server.port} -c unix_socket_directories=''"
            " -c fsync=on -c synchronous_commit=on -c max_connections=300"
        )
        try:
            server._run(
                "pg_ctl",
                "-D",
                str(root / "data"),
                "-l",
                str(root / "log"),
                "-o",
                options,
                "-w",
                "start",
            )
            run_in_thread(server._make_template())  # callers may be inside a running loop
        except BaseException:
            server.stop()  # never leave a server running behind a failed start
            raise
        return server

    def stop(self) -> None:
        try:
            if (self.root / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.root)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def store_section(self, database: str) -> dict[str, str]:
        """The [store] keys of a config that uses this database."""
        return {"url": self.url(database), "password_file": str(self.password_file)}

    async def connect(self, database: str) -> asyncpg.Connection:
        """A plain connection to one database (checks no store function answers)."""
        return await asyncpg.connect(
            self.url(database), password=self.password_file.read_text().strip()
        )

    async def admin(self) -> asyncpg.Connection:
        return await self.connect("postgres")

    async def _make_template(self) -> None:
        from relay.store.postgres import PostgresStore

        conn = await self.admin()
        try:
            await conn.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await conn.close()
        store = await PostgresStore.open(
            self.url(TEMPLATE), password_file=str(self.password_file), durable=False
        )
        await store.close()

    async def create_database(self, empty: bool = False) -> str:
        """A new database with the schema (empty: none, as a new server would have)."""
        self._next += 1
        name = f"test_{os.getpid()}_{self._next}"
        conn = await self.admin()
        try:
            template = "template0" if empty else TEMPLATE
            await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        conn = await self.admin()
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()
