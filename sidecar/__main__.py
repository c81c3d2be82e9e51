"""`python -m sidecar --config FILE`: the HTTP service (tracking, ingest, admin API)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from relay import exits, logs
from relay.config import Config, ConfigError, load_config
from relay.notify import notify
from relay.preflight import file_problems
from sidecar.app import make_app, make_runner

log = logging.getLogger("outpost.sidecar")


async def serve(config: Config, app: web.Application) -> int:
    """Serve until SIGTERM/SIGINT; READY=1 only once the socket listens and the store is open."""
    runner = make_runner(config, app)
    await runner.setup()
    host, port = config.sidecar.listen
    site = web.TCPSite(runner, host, port)
    try:
        await exits.bind(host, port, site.start())
    except exits.AddressInUse as exc:
        log.error("cannot start: %s", exc)
        await runner.cleanup()
        return exits.ADDRESS_IN_USE
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
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: embedded defaults)")
    args = parser.parse_args(argv)
    os.umask(0o077)  # whatever this process creates (store, var/, outbox) is its owner's alone
    try:
        config = load_config(args.config)
        problems = file_problems(config, relay=False)
        if not problems:
            app = make_app(config)  # reads every secret file now: a bad one is a config error too
    except ConfigError as exc:
        problems = list(exc.problems)
    if problems:
        for problem in problems:
            print(f"outpost-sidecar: invalid config: {problem}", file=sys.stderr)
        return exits.CONFIG
    logs.setup(config.log.format, config.log.level)
    try:
        import uvloop
    except ImportError:  # optional
        return asyncio.run(serve(config, app))
    return uvloop.run(serve(config, app))


if __name__ == "__main__":
    sys.exit(main())
