"""The known reference errors the Sisimai comparison corrects: well formed, and still true."""

from __future__ import annotations

import hashlib
from pathlib import Path

from relay.learn.bounce import REASONS, parse_report
from tests.bench.bounce_sisimai import same_reason
from tests.bench.bounce_sisimai_errata import ERRATA, erratum_for

DATA = Path(__file__).resolve().parents[1] / "data" / "bounces"


def test_each_erratum_names_a_case_once_and_a_known_reason() -> None:
    keys = [(e.sha256, e.sisimai_recipient.lower()) for e in ERRATA]
    assert len(keys) == len(set(keys))
    for erratum in ERRATA:
        assert len(erratum.sha256) == 16 and int(erratum.sha256, 16) >= 0
        assert erratum.reason in REASONS and erratum.sisimai_reason in REASONS
        assert not same_reason(erratum.reason, erratum.sisimai_reason) or (
            erratum.recipient != erratum.sisimai_recipient
        )
        assert erratum.why and erratum.text
        assert erratum.recipient == "" or "@" in erratum.recipient


def test_errata_on_our_fixtures_match_their_bytes_and_outposts_verdict() -> None:
    checked = 0
    for path in sorted(DATA.glob("*.eml")):
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        for result in parse_report(raw).results:
            erratum = erratum_for(digest, result.recipient)
            if erratum is None:
                continue
            assert (result.recipient, result.reason) == (erratum.recipient, erratum.reason)
            checked += 1
    assert checked == 4  # groupwise_02, netscape_01, simple_01 and the Office 365 NDR


def test_sisimais_two_undecided_names_compare_as_one() -> None:
    assert same_reason("onhold", "undefined") and same_reason("undefined", "onhold")
    assert not same_reason("onhold", "expired")
    assert same_reason("badreputation", "blocked") and not same_reason("blocked", "badreputation")
