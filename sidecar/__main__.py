"""`python -m sidecar --config FILE`: the HTTP service (tracking, ingest, admin API)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from relay import exits, logs
from relay.config import Config, ConfigError, load_config
from relay.notify import notify
from relay.preflight import file_problems
from sidecar.app import TRACKER, make_app, make_runner
from sidecar.hits import HitServer, serve_with
from sidecar.hitworkers import HitProcesses

log = logging.getLogger("outpost.sidecar")


async def listen(
    config: Config,
    runner: web.AppRunner,
    config_path: str | None = None,
    failed: Callable[[], None] | None = None,
) -> tuple[Callable[[], Awaitable[None]], int]:
    """Listen on sidecar.listen: tracking hits on the fast path (sidecar.hits) in front of the
    app, or the app alone (sidecar.fast_hits = false), or the hit processes in front of this
    one (sidecar.hit_processes > 0; ``failed`` when they keep dying). Returns (close, the port
    bound)."""
    host, port = config.sidecar.listen
    if config.sidecar.hit_processes > 0:
        assert runner.server is not None
        workers = HitProcesses(
            config,
            config_path,
            lambda: runner.app[TRACKER],
            runner.server,
            failed or (lambda: None),
        )
        await workers.start()
        return workers.stop, port
    if not config.sidecar.fast_hits:
        site = web.TCPSite(runner, host, port)
        await exits.bind(host, port, site.start())
        return site.stop, int(runner.addresses[0][1])
    assert runner.server is not None
    hits = HitServer(
        lambda: runner.app[TRACKER],
        serve_with(runner.server),
        config.sidecar.request_header_timeout,
    )
    loop = asyncio.get_running_loop()
    fast = await exits.bind(host, port, loop.create_server(hits, host, port, reuse_address=True))

    async def close() -> None:
        fast.close()
        await hits.close()

    return close, int(fast.sockets[0].getsockname()[1])


async def serve(config: Config, app: web.Application, config_path: str | None = None) -> int:
    """Serve until SIGTERM/SIGINT; READY=1 only once the socket listens and the store is open."""
    runner = make_runner(config, app)
    await runner.setup()
    host, _ = config.sidecar.listen
    stop = asyncio.Event()
    failed = asyncio.Event()

    def fail() -> None:
        failed.set()
        stop.set()

    try:
        close, port = await listen(config, runner, config_path, fail)
    except exits.AddressInUse as exc:
        log.error("cannot start: %s", exc)
        await runner.cleanup()
        return exits.ADDRESS_IN_USE
    except RuntimeError as exc:
        log.error("cannot start: %s", exc)
        await runner.cleanup()
        return 1
    log.info("listening on %s:%d", host, port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notify("READY=1\nSTATUS=serving")
    await stop.wait()
    notify("STOPPING=1")
    await close()  # the fast path's answers in flight (and the hit processes' hits) first
    await runner.cleanup()  # stops accepting, finishes requests, runs cleanup_ctx (flushes events)
    log.info("stopped")
    return 1 if failed.is_set() else 0


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
        return asyncio.run(serve(config, app, args.config))
    return uvloop.run(serve(config, app, args.config))


if __name__ == "__main__":
    sys.exit(main())
