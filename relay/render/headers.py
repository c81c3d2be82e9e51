"""Read and edit the header block of raw message bytes without re-serialising anything else."""

from __future__ import annotations

import re

_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")

# Outpost's control headers: read by the accept path, stripped from every delivered copy.
CONTROL_HEADERS = frozenset(
    {"x-outpost-campaign", "x-outpost-tags", "x-outpost-track", "x-outpost-stream"}
)
# Blind copies: never in a delivered copy (Postfix's cleanup removes them the same way).
BLIND_HEADERS = frozenset({"bcc", "resent-bcc"})


def split(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its terminating empty line, body). No header end: all header."""
    if raw.startswith((b"\r\n", b"\n")):
        return b"", raw
    for sep in (b"\r\n\r\n", b"\n\n"):
        pos = raw.find(sep)
        if pos >= 0:
            return raw[: pos + len(sep)], raw[pos + len(sep) :]
    return raw, b""


def fields(block: bytes) -> list[tuple[str, bytes]]:
    """The header fields as (lowercased name, raw bytes of the whole field incl. folds and EOL)."""
    out: list[tuple[str, bytes]] = []
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and out:
            name, prev = out[-1]
            out[-1] = (name, prev + line)
            continue
        m = _FIELD_NAME.match(line)
        out.append((m.group(1).decode("ascii").lower() if m else "", line))
    return out


def value(field_bytes: bytes) -> str:
    """The unfolded value of one raw field (8-bit bytes decoded as UTF-8, errors replaced)."""
    _, _, rest = field_bytes.partition(b":")
    text = rest.decode("utf-8", errors="replace")
    return re.sub(r"\r?\n[ \t]+", " ", text).strip()


def get(block: bytes, name: str) -> str | None:
    """The value of the first field of that name, or None."""
    name = name.lower()
    for fname, raw in fields(block):
        if fname == name:
            return value(raw)
    return None


def first_values(block: bytes) -> dict[str, str]:
    """Lowercased name -> unfolded value of its first field: one parse for several lookups."""
    out: dict[str, str] = {}
    for fname, raw in fields(block):
        if fname and fname not in out:
            out[fname] = value(raw)
    return out


def remove(block: bytes, names: set[str]) -> bytes:
    """The block without any field whose lowercased name is in names; other bytes untouched."""
    kept = [raw for fname, raw in fields(block) if fname not in names]
    end = _terminator(block)
    return b"".join(kept) + end


def prepend(block: bytes, *lines: bytes) -> bytes:
    """Add complete fields (each ending in CRLF) at the top, where trace fields belong."""
    return b"".join(lines) + block


def append(block: bytes, *lines: bytes) -> bytes:
    """Add complete fields (each ending in CRLF) after the existing ones."""
    end = _terminator(block)
    return block[: len(block) - len(end)] + b"".join(lines) + end


def _terminator(block: bytes) -> bytes:
    if block.endswith(b"\r\n\r\n"):
        return b"\r\n"
    if block.endswith(b"\n\n"):
        return b"\n"
    return b""


def field(name: str, text: str) -> bytes:
    """One header field as bytes, CRLF-terminated (text must already be folded if long)."""
    return f"{name}: {text}\r\n".encode()
