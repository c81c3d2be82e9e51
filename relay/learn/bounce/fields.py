"""Field values of reports: RFC 822-style field blocks (DSN, ARF), typed values, addresses."""

from __future__ import annotations

import re

ADDR_RE = re.compile(
    r"(?<![\w.+/=%-])([A-Za-z0-9!#$%&*+/=?^_{|}~-][A-Za-z0-9!#$%&'*+/=?^_`{|}~-]*"
    r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{1,24})(?![\w-]|\.[A-Za-z0-9])"
)


def parse_fields(text: str) -> list[list[tuple[str, str]]]:
    """Split RFC 822-style field blocks (DSN, ARF) separated by blank lines; unfold values."""
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
            continue
        if line[0] in " \t" and current:
            name, value = current[-1]
            current[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if colon and re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", name.strip()):
            current.append((name.strip().lower(), value.strip()))
    if current:
        blocks.append(current)
    return blocks


def field_value(block: list[tuple[str, str]], name: str) -> str:
    for key, value in block:
        if key == name:
            return " ".join(value.split())
    return ""


def strip_type(value: str) -> str:
    """'rfc822; <a@b>' -> 'a@b', 'smtp; 550 ...' -> '550 ...', 'dns; mx.example' -> 'mx.example'."""
    value = value.strip()
    match = re.match(r"([A-Za-z0-9-]+)\s*;\s*(.*)$", value, re.S)
    if match:
        value = match.group(2)
    return value.strip()


def clean_host(value: str) -> str:
    """'dns; mx.example.com. (2001:db8::1, the server for ...)' -> 'mx.example.com'."""
    parts = strip_type(value).split()
    return parts[0].strip("[]<>.").lower() if parts else ""


def clean_address(value: str) -> str:
    value = strip_type(value)
    match = ADDR_RE.search(value)
    if match:
        value = match.group(1)
    else:
        value = value.strip().strip("<>").strip()
        if " " in value or not value:
            return ""
    local, at, domain = value.rpartition("@")
    if not at:
        return value
    return f"{local}@{domain.lower().rstrip('.')}"
