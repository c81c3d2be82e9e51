"""Files and directories only their owner can read, whatever the umask: store, var/, outbox, keys.

Every directory Outpost creates is 0700 and every file 0600 (the mode is set explicitly after
creation, because a umask can only narrow what ``open``/``mkdir`` ask for, never widen it, and an
operator's umask may be anything). Existing paths are left as the operator made them.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_dirs(path: str | os.PathLike[str]) -> None:
    """Create the directory and any missing parents, each one 0700."""
    missing: list[Path] = []
    p = Path(path)
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            continue
        os.chmod(d, DIR_MODE)


def create_file(path: str | os.PathLike[str], *, exclusive: bool = True) -> int:
    """Open a new file for writing, 0600, its directory made first; returns the descriptor."""
    make_dirs(Path(path).parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(path, flags | (os.O_EXCL if exclusive else 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def touch(path: str | os.PathLike[str]) -> None:
    """Create an empty 0600 file unless it exists (SQLite then gives its -wal and -shm its mode)."""
    try:
        os.close(create_file(path))
    except FileExistsError:
        pass
