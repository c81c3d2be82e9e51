"""`python -m relay --config FILE`: the SMTP listeners and the delivery workers."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable

from relay import exits, logs
from relay.app import serve
from relay.config import Config, ConfigError, load_config
from relay.preflight import file_problems
from relay.workers import Supervisor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: embedded defaults)")
    args = parser.parse_args(argv)
    os.umask(0o077)  # whatever this process creates (store, var/, outbox) is its owner's alone
    try:
        config = load_config(args.config)
        problems = file_problems(config, sidecar=False)
    except ConfigError as exc:
        problems = list(exc.problems)
    if problems:
        for problem in problems:
            print(f"outpost-relay: invalid config: {problem}", file=sys.stderr)
        return exits.CONFIG
    logs.setup(config.log.format, config.log.level)
    if config.relay.processes > 1:
        return Supervisor(config, run_worker).run()
    return run_worker(config, 0, None)


def run_worker(config: Config, index: int, ready: Callable[[], None] | None) -> int:
    """One relay on its own event loop (uvloop where installed)."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on every platform)
        return asyncio.run(serve(config, index, ready))
    return uvloop.run(serve(config, index, ready))


if __name__ == "__main__":
    sys.exit(main())
