"""Accept: the trace field this hop adds is one header field, whatever the client sent."""

from __future__ import annotations

import pytest

from relay.receive.pipeline import Submission, received_field, trace_word
from relay.render import headers

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


def sub(helo: str, rcpt: str = "b@example.org", smtputf8: bool = False) -> Submission:
    return Submission("a@example.com", (rcpt,), b"", "127.0.0.1", helo=helo, smtputf8=smtputf8)


@pytest.mark.parametrize(
    "helo",
    [
        "foo\rBcc: injected@evil.example\rX-Injected: yes",
        "foo\r\nBcc: injected@evil.example",
        "foo\nX-Injected: yes",
        "foo\udcff\udcfe",  # undecodable bytes, as aiosmtpd passes them (surrogateescape)
        '(comment) [1.2.3.4] <x> \\ "q"',
        "x" * 5000,
    ],
)
def test_received_field_is_one_field_whatever_the_helo(helo: str) -> None:
    field = received_field(sub(helo), queue_id="Q1", hostname="relay.test", now=0.0)
    fields = headers.fields(field + b"\r\n")
    assert [name for name, _ in fields] == ["received"]
    lines = field.split(b"\r\n")
    assert lines[-1] == b"" and all(line.startswith(b"\t") for line in lines[1:-1])
    assert b"\r" not in field.replace(b"\r\n", b"") and b"\n" not in field.replace(b"\r\n", b"")
    assert field.isascii() and len(field) < 600


def test_received_field_keeps_a_plain_helo_and_a_utf8_recipient() -> None:
    field = received_field(
        sub("client.test", "zoë@exämple.org", smtputf8=True), queue_id="Q1", hostname="r", now=0.0
    )
    assert field.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby r (Outpost)")
    assert "for <zoë@exämple.org>".encode() in field


def test_trace_word() -> None:
    assert trace_word("mx.example.org") == "mx.example.org"
    assert trace_word("a b\rc") == "a?b?c"
    assert trace_word("é") == "?" and trace_word("é", ascii_only=False) == "é"


def test_control_headers_are_bounded() -> None:
    from relay.receive.pipeline import Rejected, read_controls

    assert (
        read_controls({"x-outpost-tags": ", ".join(f"t{i}" for i in range(50))}).tags[-1] == "t49"
    )
    with pytest.raises(Rejected) as many:
        read_controls({"x-outpost-tags": ",".join("t" * 80_000)})
    assert many.value.args[0] == "550 5.6.0 Error: X-Outpost-Tags holds more than 50 tags"
    with pytest.raises(Rejected) as long:
        read_controls({"x-outpost-tags": "ok, " + "t" * 201})
    assert long.value.args[0] == (
        "550 5.6.0 Error: an X-Outpost-Tags tag is longer than 200 characters"
    )


def test_queue_ids_of_one_millisecond_never_collide() -> None:
    """200 000 ids with one timestamp are all different (random low bits alone would repeat
    about 600 times), and still sort by time."""
    from relay.receive.pipeline import new_queue_id

    ids = [new_queue_id(1_800_000_000.0) for _ in range(200_000)]
    assert len(set(ids)) == len(ids)
    assert new_queue_id(1_800_000_000.001) > max(ids)
    assert all(len(i) == 14 for i in ids[:10])


def test_a_forked_process_draws_its_own_queue_id_sequence() -> None:
    """Relay workers are forked from one supervisor: each must not repeat the parent's ids."""
    import os

    from relay.receive.pipeline import new_queue_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes its next id and leaves at once
        os.write(write, new_queue_id(1_800_000_000.0).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child != new_queue_id(1_800_000_000.0)
