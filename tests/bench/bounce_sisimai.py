"""Agreement of `outpostctl bounce parse` with Sisimai's verdicts on a corpus of bounce files.

Development only: Sisimai (Debian's ``libsisimai-perl``) labels the messages and is never a
runtime dependency. Usage, from the repository root:

    apt-get install -y libsisimai-perl
    .venv/bin/python -m tests.bench.bounce_sisimai DIR_OR_FILE [...] [--name NAME] [-v]
        [--json OUT]

For every message Sisimai reads as a bounce (reason not ``delivered``/``vacation``), each
recipient it names is one case:

- **recipient found**: Outpost printed a row for that address (case-insensitive);
- **hard/soft**: that row's type (or the message's first row when the address was not found)
  is ``hard`` exactly when Sisimai's reason is one of userunknown hostunknown hasmoved notaccept;
- **reason**: that row's reason is Sisimai's (see ``SAME_AS_4`` for names Sisimai 4 lacks, and
  ``UNDECIDED``: onhold and undefined compare as one).

Each figure is printed twice: *strict*, against Sisimai's labels as they are, and *corrected*,
with the known reference errors of ``bounce_sisimai_errata`` replaced by the right answer.

A message Sisimai does not read at all is listed (``-v``) but not scored. Files of one corpus
are passed to one ``outpostctl`` process and one Perl process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.bench.bounce_sisimai_errata import erratum_for
from tests.bench.common import REPO, VENV_PY

HARD = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})
NOT_BOUNCES = frozenset({"delivered", "vacation"})

# Reasons introduced by Sisimai 5 -> the Sisimai 4 reasons the same reply was given before, so a
# Sisimai 4.25 label is not counted as a disagreement with the newer, finer name.
SAME_AS_4: dict[str, frozenset[str]] = {
    "authfailure": frozenset({"securityerror", "policyviolation", "rejected", "blocked"}),
    "badreputation": frozenset({"blocked"}),
    "requireptr": frozenset({"blocked"}),
    "notcompliantrfc": frozenset({"contenterror", "securityerror"}),
    "speeding": frozenset({"toomanyconn", "blocked"}),
    "failedstarttls": frozenset({"securityerror"}),
}

_PERL = r"""
use strict; use warnings; use Sisimai; use JSON::PP;
binmode STDOUT; my $out = [];
for my $f (@ARGV) {
  my $v = eval { Sisimai->make($f, 'delivered' => 1) } || [];
  for my $e (@$v) {
    push @$out, { file => $f, recipient => $e->recipient->address, reason => $e->reason,
      status => $e->deliverystatus, agent => $e->smtpagent,
      diagnostic => substr($e->diagnosticcode // '', 0, 160) };
  }
}
print JSON::PP->new->canonical->ascii->encode($out);
"""


def files_of(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix in (".eml", ".txt", ".msg") and p.stat().st_size
            )
        elif path.is_file():
            found.append(path)
    return found


def sisimai_labels(files: list[Path]) -> list[dict[str, Any]]:
    """Sisimai's rows (file, recipient, reason, status, agent, diagnostic) for ``files``."""
    with tempfile.NamedTemporaryFile("w", suffix=".pl") as script:
        script.write(_PERL)
        script.flush()
        done = subprocess.run(
            ["perl", script.name, *map(str, files)],
            capture_output=True,
            check=True,
        )
    rows: list[dict[str, Any]] = json.loads(done.stdout.decode("utf-8", "replace"))
    return rows


def outpost_rows(files: list[Path]) -> list[dict[str, Any]]:
    """`outpostctl bounce parse` output, one row per recipient, for ``files``."""
    done = subprocess.run(
        [str(VENV_PY), "-m", "relay.cli", "bounce", "parse", *map(str, files)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


# Sisimai's two names for "could not decide": which one it prints depends on whether the module
# that read the message kept any text (the same Gmail-style layout gets onhold from one module
# and undefined from another), so a vague verdict against a vague label is agreement.
UNDECIDED = frozenset({"onhold", "undefined"})


def same_reason(ours: str, theirs: str) -> bool:
    if ours in UNDECIDED and theirs in UNDECIDED:
        return True
    return ours == theirs or theirs in SAME_AS_4.get(ours, frozenset())


def _judge(rows: list[dict[str, Any]], recipient: str, reason: str) -> tuple[bool, bool, bool, str]:
    """(recipient found, hard/soft agrees, reason agrees, Outpost's row) for one expected case;
    the expected recipient "" means the bounce names none, found when Outpost names none."""
    match = [r for r in rows if r["recipient"].lower() == recipient.lower()]
    row = (match or rows or [None])[0]
    want_type = "hard" if reason in HARD else "soft"
    type_ok = row is not None and row["type"] == want_type
    reason_ok = row is not None and same_reason(row["reason"], reason)
    got = "no row" if row is None else f"{row['recipient'] or '-'} {row['type']}/{row['reason']}"
    return bool(match), type_ok, reason_ok, got


def _figures(counts: dict[str, int]) -> dict[str, float]:
    total = counts["cases"] or 1
    return {
        "hard_soft_pct": round(100 * counts["hardsoft"] / total, 1),
        "reason_pct": round(100 * counts["reason"] / total, 1),
        "recipient_pct": round(100 * counts["recipient"] / total, 1),
    }


def _line(title: str, counts: dict[str, int]) -> str:
    pct = _figures(counts)
    return (
        f"{title}: hard/soft {counts['hardsoft']}/{counts['cases']} ({pct['hard_soft_pct']}%)  "
        f"reason {counts['reason']}/{counts['cases']} ({pct['reason_pct']}%)  "
        f"recipient found {counts['recipient']}/{counts['cases']} ({pct['recipient_pct']}%)"
    )


def score(files: list[Path], name: str, verbose: bool) -> dict[str, Any]:
    labels = sisimai_labels(files)
    ours = outpost_rows(files)
    by_file: dict[str, list[dict[str, Any]]] = {}
    for row in ours:
        by_file.setdefault(row["file"], []).append(row)
    digests = {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    labelled = {row["file"] for row in labels}
    strict = {"cases": 0, "recipient": 0, "hardsoft": 0, "reason": 0}
    corrected = dict(strict)
    misses: list[str] = []
    applied: list[str] = []
    stale: list[str] = []
    for label in labels:
        if label["reason"] in NOT_BOUNCES:
            continue
        rows = by_file.get(label["file"], [])
        verdicts = _judge(rows, label["recipient"], label["reason"])
        want = (label["recipient"], label["reason"])
        fname = Path(label["file"]).name
        erratum = erratum_for(digests.get(label["file"], ""), label["recipient"])
        if erratum is not None and erratum.sisimai_reason != label["reason"]:
            stale.append(f"{fname}: {erratum.sisimai_recipient} is now {label['reason']}")
            erratum = None
        if erratum is not None:
            want = (erratum.recipient, erratum.reason)
            applied.append(
                f"{fname}: sisimai {label['recipient']} {label['reason']} -> "
                f"{erratum.recipient or '(none)'} {erratum.reason} | {erratum.text[:90]}"
            )
        fixed = _judge(rows, *want) if erratum is not None else verdicts
        for counts, (found, type_ok, reason_ok, _) in ((strict, verdicts), (corrected, fixed)):
            counts["cases"] += 1
            counts["recipient"] += found
            counts["hardsoft"] += type_ok
            counts["reason"] += reason_ok
        found, type_ok, reason_ok, got = fixed
        if not (found and type_ok and reason_ok):
            want_type = "hard" if want[1] in HARD else "soft"
            misses.append(
                f"{fname}: {'corrected' if erratum else 'sisimai'} {want[0] or '(none)'} "
                f"{want_type}/{want[1]} ({label['agent']}) | outpost {got} "
                f"| {label['diagnostic'][:100]!r}"
            )
    unread = sorted(str(f) for f in files if str(f) not in labelled)
    result = {
        "corpus": name,
        "files": len(files),
        "cases": strict["cases"],
        "not_read_by_sisimai": len(unread),
        "reference_errors": len(applied),
        "strict": _figures(strict),
        "corrected": _figures(corrected),
    }
    print(
        f"== {name}: {len(files)} files, {strict['cases']} Sisimai-labelled bounce recipients "
        f"({len(unread)} files Sisimai does not read)\n"
        f"{_line('strict (Sisimai as is)', strict)}\n"
        f"{_line(f'corrected ({len(applied)} known reference errors)', corrected)}"
    )
    for line in stale:
        print(f"  stale erratum, not applied: {line}")
    if verbose:
        for line in misses:
            print("  disagreement: " + line)
        for line in applied:
            print("  reference error: " + line)
        for path in unread:
            print(f"  not read by Sisimai: {Path(path).name}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="corpus directories or files")
    parser.add_argument("--name", help="corpus name in the output (default: the first path)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list disagreements")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    files = files_of(args.paths)
    if not files:
        print("no files", file=sys.stderr)
        return 2
    result = score(files, args.name or str(args.paths[0]), args.verbose)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
