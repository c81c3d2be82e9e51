"""`python -m sidecar --config FILE`: the HTTP service (tracking, ingest, admin API)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from relay import logs
from relay.config import Config, ConfigError, load_config
from relay.notify import notify
from sidecar.app import make_app, make_runner

log = logging.getLogger("outpost.sidecar")


async def serve(config: Config, app: web.Application) -> None:
    """Serve until SIGTERM/SIGINT; READY=1 only once the socket listens and the store is open."""
    runner = make_runner(config, app)
    await runner.setup()
    host, port = config.sidecar.listen
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("listening on %s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notify("READY=1\nSTATUS=serving")
    await stop.wait()
    notify("STOPPING=1")
    await runner.cleanup()  # stops accepting, finishes requests, runs cleanup_ctx (flushes events)
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: embedded defaults)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        app = make_app(config)  # reads every secret file now: a bad one is a config error too
    except ConfigError as exc:
        print(f"outpost-sidecar: invalid config: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log.format, config.log.level)
    try:
        import uvloop
    except ImportError:  # optional
        asyncio.run(serve(config, app))
    else:
        uvloop.run(serve(config, app))
    return 0


if __name__ == "__main__":
    sys.exit(main())
