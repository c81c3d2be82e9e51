"""Agreement of classify() with the reply texts Sisimai itself keeps per reason and per provider.

Development only: reads the Perl modules of Debian's ``libsisimai-perl`` at run time (nothing is
copied into Outpost) and scores ``classify(status, text)`` against the reason Sisimai gives:

- ``Sisimai/Reason/*.pm``: each reason's list of decisive phrases, classified as "550 <phrase>";
- ``Sisimai/Rhost/{GoogleApps,ExchangeOnline}.pm``: the providers' replies (code, status, text).

    .venv/bin/python -m tests.bench.bounce_sisimai_rules [-v] [--root DIR_OF_Sisimai.pm/Sisimai]

Reasons Sisimai 4 lacks are compared as in ``bounce_sisimai.SAME_AS_4``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

from relay.learn.bounce import classify
from tests.bench.bounce_sisimai import HARD, same_reason

_PROVIDERS = ("GoogleApps", "ExchangeOnline")


def reason_phrases(root: Path) -> list[tuple[str, str | None, str]]:
    """(reason, status, text) for every phrase of every Sisimai/Reason/*.pm list."""
    cases: list[tuple[str, str | None, str]] = []
    for module in sorted((root / "Reason").glob("*.pm")):
        found = re.search(r"state \$index = \[(.*?)\];", module.read_text(), re.S)
        if found is None:
            continue
        for single, double in re.findall(r"'([^']+)'|\"([^\"]+)\"", found.group(1)):
            cases.append((module.stem.lower(), None, "550 " + (single or double)))
    return cases


def provider_replies(root: Path) -> list[tuple[str, str | None, str]]:
    """(reason, status, text) for the reply tables of the provider modules."""
    cases: list[tuple[str, str | None, str]] = []
    for name in _PROVIDERS:
        reason = None
        for line in (root / "Rhost" / f"{name}.pm").read_text().splitlines():
            head = re.match(r"\s*'(\w+)'\s*=>\s*\[", line)
            if head:
                reason = head.group(1)
                continue
            three = re.match(r"\s*\[\s*'([^']*)'\s*,\s*'([^']*)'\s*,\s*'(.*)'\s*\],?", line)
            four = re.match(r"\s*\[\s*'([^']*)'\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*'(.*)'\s*\],?", line)
            if reason is None or not (three or four):
                continue
            if three:
                code, status, text = three.groups()
            else:
                assert four is not None
                status, low, _, text = four.groups()
                code, status = "", status + (low if status.endswith(".") else "")
            valid = status if re.fullmatch(r"[245]\.\d+\.\d+", status) else None
            cases.append((reason, valid, f"{code} {status} {text}".strip()))
    return cases


def score(name: str, cases: list[tuple[str, str | None, str]], verbose: bool) -> None:
    reasons = types = 0
    misses = []
    for want, status, text in cases:
        verdict = classify(status, text)
        reasons += same_reason(verdict.reason, want)
        types += verdict.type == ("hard" if want in HARD else "soft")
        if not same_reason(verdict.reason, want):
            misses.append(f"  {want:<15} got {verdict.reason:<15} | {text[:100]}")
    n = len(cases) or 1
    print(
        f"== {name}: {len(cases)} texts; reason {reasons}/{len(cases)} "
        f"({100 * reasons / n:.1f}%), hard/soft {types}/{len(cases)} ({100 * types / n:.1f}%)"
    )
    if verbose:
        print("\n".join(misses))


def installed_root() -> Path:
    """Where Perl finds Sisimai's modules (Sisimai.pm's directory + "Sisimai")."""
    try:
        done = subprocess.run(
            ["perl", "-MSisimai", "-e", 'print $INC{"Sisimai.pm"}'],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return Path("Sisimai")
    return Path(done.stdout.strip()).with_suffix("")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="Sisimai's module directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="list disagreements")
    args = parser.parse_args(argv)
    args.root = args.root or installed_root()
    if not (args.root / "Reason").is_dir():
        print(f"{args.root}: no Sisimai modules (apt-get install libsisimai-perl)")
        return 2
    score("Sisimai reason phrases", reason_phrases(args.root), args.verbose)
    score("Sisimai provider replies", provider_replies(args.root), args.verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
