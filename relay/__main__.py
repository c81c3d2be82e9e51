"""`python -m relay --config FILE`: the SMTP listeners and the delivery workers."""

from __future__ import annotations

import argparse
import asyncio
import sys

from relay import logs
from relay.app import serve
from relay.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: embedded defaults)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"outpost-relay: invalid config: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log.format, config.log.level)
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on every platform)
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
