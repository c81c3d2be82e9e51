"""sd_notify(3) without libsystemd: READY=1 once listening, STOPPING=1 when draining."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send a state line to $NOTIFY_SOCKET; False when not run by systemd (or it went away)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
