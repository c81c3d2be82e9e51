"""Exit statuses shared by both daemons and outpostctl, and the start-up failures behind them.

A configuration or secrets problem is 2, the status Outpost has always used for an invalid config
(the systemd units' RestartPreventExitStatus=2: restarting can't fix it; argparse's usage errors
are 2 as well, and can't be fixed by a restart either). A listen address already in use is
sysexits.h EX_TEMPFAIL (75): the units restart on it, since the port may be free on the next try.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable
from typing import TypeVar

from relay.config import format_hostport

CONFIG = 2
ADDRESS_IN_USE = 75

T = TypeVar("T")


class AddressInUse(OSError):
    """A listen address another process holds; str() is the one line both daemons print."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"address in use: {format_hostport(host, port)}")
        self.host, self.port = host, port

    def __str__(self) -> str:
        return str(self.strerror)


async def bind(host: str, port: int, start: Awaitable[T]) -> T:
    """Await a listener's start; EADDRINUSE becomes AddressInUse naming host:port."""
    try:
        return await start
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(host, port) from None
        raise
