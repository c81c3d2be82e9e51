"""Bounce reports in, verdicts out: the public face of the bounce parsers (pure, no I/O).

Used by the relay (SMTP replies during delivery, DSNs arriving at the VERP domain) and the sidecar
(``/ingest/dsn``): bytes or reply values in, frozen dataclasses out, never an exception.
``parse_report`` lives in ``parse``, ``classify`` and ``Verdict`` in ``classifier``, ``REASONS``
in ``reasons``, the result types in ``report``, ``verp_recipient`` in ``verp``.
"""

from relay.learn.bounce.classifier import Verdict, classify
from relay.learn.bounce.parse import parse_report
from relay.learn.bounce.reasons import REASONS
from relay.learn.bounce.report import BounceResult, Complaint, Report
from relay.learn.bounce.verp import verp_recipient

__all__ = [
    "REASONS",
    "BounceResult",
    "Complaint",
    "Report",
    "Verdict",
    "classify",
    "parse_report",
    "verp_recipient",
]
