"""Test helper: verify DKIM signatures with OpenDKIM's test mode, a verifier independent of dkimpy.

Needs Debian's `opendkim` package (the binary is /usr/sbin/opendkim). Without it, tests calling
`require_opendkim()` skip, or fail when the CI environment variable is set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
_RESULT = re.compile(r"\bdkim=(\w+)([^;]*)")
_PROP = re.compile(r"\bheader\.([a-z])=(\S+)")


@dataclass(frozen=True)
class DkimResult:
    """One signature's verdict from OpenDKIM's Authentication-Results: dkim=pass header.d=..."""

    result: str
    domain: str
    selector: str
    algorithm: str


def opendkim_binary() -> str | None:
    return shutil.which("opendkim", path=_SEARCH_PATH)


def require_opendkim() -> str:
    """The opendkim path; skip the test without it, or fail it when running in CI."""
    path = opendkim_binary()
    if path is None:
        msg = (
            "opendkim not found (PATH, /usr/sbin): install Debian packages "
            "'opendkim opendkim-tools' to run the independent DKIM verifier"
        )
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


def parse_results(output: str) -> list[DkimResult]:
    """Per-signature results from the Authentication-Results header opendkim -vvv prints."""
    start = output.find("hname='Authentication-Results'")
    if start < 0:
        return []
    results = []
    for m in _RESULT.finditer(output[start:]):
        props = dict(_PROP.findall(m.group(2)))
        results.append(
            DkimResult(
                result=m.group(1),
                domain=props.get("d", ""),
                selector=props.get("s", ""),
                algorithm=props.get("a", ""),
            )
        )
    return results


def run_opendkim(
    message: bytes, records: dict[str, str], tmp_path: Path
) -> tuple[list[DkimResult], str]:
    """Run `opendkim -x CONF -vvv -t FILE` with TestPublicKeys; the results and the raw output.

    records maps "selector._domainkey.domain" to the TXT value ("v=DKIM1; k=rsa; p=...").
    opendkim exits 0 whatever the verdict, so the verdict is read from its output.
    """
    binary = require_opendkim()
    work = Path(tmp_path) / f"opendkim-{len(list(Path(tmp_path).glob('opendkim-*')))}"
    work.mkdir(parents=True)
    keys = work / "keys"
    keys.write_text(
        "".join(f"{name.rstrip('.').lower()} {value}\n" for name, value in records.items())
    )
    conf = work / "opendkim.conf"
    conf.write_text(f"Mode v\nSyslog no\nTestPublicKeys {keys}\n")
    msg = work / "message.eml"
    msg.write_bytes(message)
    proc = subprocess.run(
        [binary, "-x", str(conf), "-vvv", "-t", str(msg)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
    if proc.returncode != 0:
        output += f"\n[opendkim exited with status {proc.returncode}]"
    return parse_results(output), output


def verify_with_opendkim(
    message: bytes, records: dict[str, str], tmp_path: Path
) -> tuple[bool, str]:
    """True when the message has at least one signature and every signature passes."""
    results, output = run_opendkim(message, records, tmp_path)
    ok = bool(results) and all(r.result == "pass" for r in results)
    return ok, output
