"""Bounce parsing speed on one core, and every bounce regex against 1 MB adversarial lines.

    .venv/bin/python -m tests.bench.bounce_speed [--quick]     # alone, prints JSON
    .venv/bin/python -m tests.bench.run --only bounce          # as a section of `make bench`

- **Throughput**: ``parse_report`` over every fixture in tests/data/bounces (real DSNs,
  non-standard bounces, delays, complaints, auto-replies), in this one process, best of a few
  rounds; and ``classify`` over the diagnostics those reports yielded. Target: 1 000 bounces/s,
  reported per wall-clock second and per CPU second of this process (one core's worth of work
  whatever else the machine is doing).
- **Catastrophic backtracking**: every compiled pattern of the bounce package (each reason's
  rule in ``rules.py`` as ``classify`` compiles it, and the module-level patterns of the
  readers and recognisers) searched in 1 MB lines built to make it work hard: one character
  repeated, the pattern's own words repeated (alone and cycled, so gapped rules keep starting),
  digits and dots, masked addresses; then again at a quarter of the size, to tell linear from
  superlinear. Target: each search under 100 ms. Figures only, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import re
import time
from pathlib import Path
from typing import Any

from relay.learn import bounce as bounce_package
from relay.learn.bounce import classify, parse_report
from relay.learn.bounce.classifier import rule_pattern
from relay.learn.bounce.rules import AFTER_DATA, AT_RCPT, GENERIC_RULES, SPECIFIC_RULES

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "bounces"
MB = 1 << 20
LIMIT_MS = 100.0


def _fixtures() -> list[bytes]:
    return [p.read_bytes() for p in sorted(FIXTURES.glob("*.eml"))]


def throughput(rounds: int, seconds: float) -> dict[str, Any]:
    """Best reports/s and classifications/s over ``rounds`` rounds of about ``seconds`` each."""
    corpus = _fixtures()
    diagnostics = [
        (r.status, r.diagnostic) for raw in corpus for r in parse_report(raw).results
    ] or [("5.1.1", "550 5.1.1 user unknown")]
    best_reports = best_classify = best_cpu = 0.0
    for _ in range(rounds):
        n, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            for raw in corpus:
                parse_report(raw)
            n += len(corpus)
        best_reports = max(best_reports, n / (time.perf_counter() - start))
        best_cpu = max(best_cpu, n / max(time.process_time() - cpu, 1e-9))
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            for status, diagnostic in diagnostics:
                classify(status, diagnostic)
            n += len(diagnostics)
        best_classify = max(best_classify, n / (time.perf_counter() - start))
    return {
        "fixtures": len(corpus),
        "mean_bytes": sum(map(len, corpus)) // max(len(corpus), 1),
        "reports_per_s": round(best_reports),
        "reports_per_cpu_s": round(best_cpu),
        "classify_per_s": round(best_classify),
        "rounds": rounds,
        "loadavg": round(os.getloadavg()[0], 2),
    }


def patterns() -> dict[str, re.Pattern[str]]:
    """Every pattern to check: each rule of rules.py as classify() compiles it, and every
    module-level compiled regex of the bounce package (each object once)."""
    found: dict[str, re.Pattern[str]] = {}
    for kind, rules in (("specific", SPECIFIC_RULES), ("generic", GENERIC_RULES)):
        for i, (reason, alternatives) in enumerate(rules):
            found[f"rules.{kind}[{i}] {reason}"] = rule_pattern(alternatives)
    found["rules.AT_RCPT"] = re.compile(AT_RCPT)
    found["rules.AFTER_DATA"] = re.compile(AFTER_DATA)
    seen: set[int] = set()
    prefix = bounce_package.__name__ + "."
    for info in pkgutil.walk_packages(bounce_package.__path__, prefix):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
                if id(value) not in seen and not name.startswith(("_SPECIFIC", "_GENERIC")):
                    seen.add(id(value))
                    found[f"{info.name.removeprefix(prefix)}.{name}"] = value
    return found


def adversarial_lines(pattern: re.Pattern[str], size: int) -> dict[str, str]:
    """1 MB (``size``) lines that keep ``pattern`` partially matching."""
    source = re.sub(r"\(\?=\[[^\]]*\]\)", "", pattern.pattern)  # compile_fast's lookahead
    source = re.sub(r"\\[a-zA-Z]", " ", source)  # \b, \d, \s: not words
    words = list(dict.fromkeys(re.findall(r"[a-z][a-z'-]{2,}", source.lower())))
    lines = {
        "a": "a" * size,
        "spaces": " " * size,
        "digits": ("5.5.5 550-" * (size // 10 + 1))[:size],
        "xaddr": (" xaddr " * (size // 7 + 1))[:size],
    }
    if words:
        cycle = " ".join(words) + " "
        lines["words cycled"] = (cycle * (size // len(cycle) + 1))[:size]
    for word in words[:6]:
        lines[f"'{word}' repeated"] = ((word + " ") * (size // (len(word) + 1) + 1))[:size]
        lines[f"'{word}' unspaced"] = (word * (size // len(word) + 1))[:size]
    return lines


def _search_ms(pattern: re.Pattern[str], line: str, repeat: int = 2) -> float:
    """CPU milliseconds of one search, best of ``repeat`` (CPU time of this process, so other
    work on the machine does not count; it only ever adds)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        pattern.search(line)
        best = min(best, (time.process_time() - start) * 1000)
    return best


def regex_check(size: int) -> dict[str, Any]:
    """Worst search time per pattern over its adversarial lines, those over the limit, and a
    linearity check: the worst line again at a quarter of the size (linear: about 4x faster,
    quadratic: about 16x; a ratio above 8 is reported as superlinear)."""
    worst: dict[str, tuple[float, str, str]] = {}
    compiled = patterns()
    for name, pattern in compiled.items():
        for label, line in adversarial_lines(pattern, size).items():
            ms = _search_ms(pattern, line)
            if ms > worst.get(name, (-1.0, "", ""))[0]:
                worst[name] = (ms, label, line)
    rows = []
    for name, (ms, label, line) in sorted(worst.items(), key=lambda kv: -kv[1][0]):
        ms = _search_ms(compiled[name], line, 3)
        quarter = _search_ms(compiled[name], line[: len(line) // 4], 3)
        ratio = ms / quarter if quarter > 5 else None  # below 5 ms timer noise rules
        rows.append(
            {
                "pattern": name,
                "ms": round(ms, 1),
                "line": label,
                "quarter_ms": round(quarter, 1),
                "superlinear": ratio is not None and ratio > 8,
            }
        )
    return {
        "line_bytes": size,
        "patterns": len(rows),
        "limit_ms": LIMIT_MS,
        "within_limit": sum(1 for r in rows if r["ms"] < LIMIT_MS),
        "over_limit": [r for r in rows if r["ms"] >= LIMIT_MS],
        "superlinear": [r["pattern"] for r in rows if r["superlinear"]],
        "slowest": rows[:8],
        "max_ms": rows[0]["ms"] if rows else None,
    }


def run(quick: bool = False) -> dict[str, Any]:
    return {
        "throughput": throughput(rounds=1 if quick else 3, seconds=0.5 if quick else 2.0),
        "regex": regex_check(MB // 16 if quick else MB),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds, 64 KB lines")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
