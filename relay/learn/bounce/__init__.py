"""Bounce reports in, verdicts out: the public face of the bounce parsers."""

from relay.learn.bounce.parse import *  # noqa: F403  (replaced by explicit exports when split)
