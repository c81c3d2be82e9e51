"""The apps' HTTP API keys: `<id>.<secret>` bearer keys, found by id, verified by hash.

Each [[apps]] entry's ``api_keys_file`` holds `<id>:<hash>` lines, hashed as the SMTP users
file hashes passwords (relay.receive.auth.UserFile, argon2id or scrypt): the file never holds
a usable key. The id only says which line to check, so one request costs one hash check (and
none once a key was verified in this process); an unknown id costs the same check, against a
dummy, so the time taken does not tell which ids exist.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping

from relay.config import AppConfig, ConfigError
from relay.receive.auth import UserFile, Verifier, hash_password

KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def new_key(key_id: str) -> tuple[str, str]:
    """A fresh key and its api_keys_file line: (the key, shown once; '<id>:<argon2id hash>')."""
    if not KEY_ID.match(key_id):
        raise ValueError(f"{key_id!r}: a key id is 1-64 letters, digits, '_' or '-'")
    secret = secrets.token_urlsafe(32)
    return f"{key_id}.{secret}", f"{key_id}:{hash_password(secret)}"


def split_key(key: str) -> tuple[str, str]:
    """'<id>.<secret>' -> (id, secret); ('', '') for anything else."""
    key_id, sep, secret = key.partition(".")
    if not sep or not secret or not KEY_ID.match(key_id):
        return "", ""
    return key_id, secret


class ApiKeys:
    """Every app's keys: which app a bearer key belongs to."""

    def __init__(self, files: Mapping[str, UserFile]) -> None:
        self._files = dict(files)  # app name -> its key file
        self._app_of_id = {key_id: app for app, keys in self._files.items() for key_id in keys}
        self._any = next(iter(self._files.values()), None)

    @classmethod
    def load(cls, apps: Iterable[AppConfig]) -> ApiKeys:
        """Read every app's api_keys_file; ConfigError on an unreadable file, a line that is no
        `<id>:<hash>`, a bad id, or an id two apps share."""
        files: dict[str, UserFile] = {}
        owner: dict[str, str] = {}
        problems: list[str] = []
        for i, app in enumerate(apps):
            if not app.api_keys_file:
                continue
            what = f"apps[{i}].api_keys_file"
            try:
                keys = UserFile.load(app.api_keys_file, what)
            except ConfigError as exc:
                problems += exc.problems
                continue
            for key_id in keys:
                if not KEY_ID.match(key_id):
                    problems.append(
                        f"{what}: key id {key_id!r} must be 1-64 letters, digits, '_' or '-'"
                    )
                elif key_id in owner:
                    problems.append(
                        f"{what}: key id {key_id!r} already belongs to app {owner[key_id]!r}"
                    )
                owner.setdefault(key_id, app.name)
            files[app.name] = keys
        if problems:
            raise ConfigError(*problems)
        return cls(files)

    def __bool__(self) -> bool:
        return bool(self._files)

    async def app_of(self, verifier: Verifier, client_addr: str, key: str) -> str | None:
        """The name of the app the key belongs to, or None (wrong, unknown or malformed key).

        Checked off the event loop by ``verifier``, which also slows repeated failures from
        one client address.
        """
        if self._any is None:
            return None
        key_id, secret = split_key(key)
        app = self._app_of_id.get(key_id)
        keys = self._files[app] if app is not None else self._any
        # an unknown id is checked against a dummy hash (UserFile.verify): the same work
        ok = await verifier.verify(keys, client_addr, key_id if app is not None else "", secret)
        return app if ok else None
