"""Compile bounce patterns so a search skips quickly: a lookahead of their possible first letters.

Python's regular expression engine tries every alternative at every position of the text unless
the pattern starts with a set of characters it can scan for. ``compile_fast`` reads which
characters each top-level alternative can start with (letters, classes, groups, escapes; ``\\b``
and ``^`` skipped) and, when it can tell for every alternative, prefixes ``(?=[...])``: the same
matches, found at a fraction of the cost on long lines (tests/bench/bounce_speed.py). Words are
matched from their start, which lets the engine give up inside a word at once, and the lettered
alternatives that share a literal start are factored (``user a|user b`` is ``user (?:a|b)``), so
a word repeated down a line is read once per position, not once per alternative.
"""

from __future__ import annotations

import re
import string

_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")
_CLASS_ESCAPES = {"d": string.digits, "w": None, "s": None, "W": None, "S": None, "D": None}


def _split(text: str, sep: str = "|") -> list[str]:
    """Split at top-level ``sep`` (outside groups, classes and escapes)."""
    parts, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if text[i + 1 : i + 2] == "]":
                i += 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _group_end(text: str) -> int:
    """Index just past the group that opens at text[0] == "(", or -1."""
    depth, i, in_class = 0, 0, False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def _class_chars(body: str) -> str | None:
    if not body or body.startswith("^"):
        return None
    chars, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            escaped = _CLASS_ESCAPES.get(body[i + 1], body[i + 1])
            if escaped is None:
                return None
            chars.append(escaped)
            i += 2
            continue
        if i + 2 < len(body) and body[i + 1] == "-":
            chars.append("".join(chr(c) for c in range(ord(ch), ord(body[i + 2]) + 1)))
            i += 3
            continue
        chars.append(ch)
        i += 1
    return "".join(chars)


def _optional(rest: str) -> bool:
    return rest[:1] in ("?", "*") or rest.startswith("{0")


def first_chars(alternative: str) -> str | None:
    """The characters a match of ``alternative`` can start with; None when it cannot tell."""
    s = alternative
    while s.startswith(("\\b", "^")):
        s = s[2:] if s.startswith("\\b") else s[1:]
    if not s:
        return None
    if s.startswith("(?:"):
        end = _group_end(s)
        if end < 0 or _optional(s[end:]):
            return None
        found = [first_chars(part) for part in _split(s[3 : end - 1])]
        if any(f is None for f in found):
            return None
        return "".join(f for f in found if f)
    if s[0] == "[":
        close = s.find("]", 2)
        if close < 0 or _optional(s[close + 1 :]):
            return None
        return _class_chars(s[1:close])
    if s[0] == "\\":
        if len(s) < 2 or _optional(s[2:]):
            return None
        escaped = _CLASS_ESCAPES.get(s[1], s[1])
        return escaped if escaped is None or not s[1].isalnum() or s[1] == "d" else None
    if s[0] in ".()|*+?{$" or _optional(s[1:]):
        return None
    return s[0]


_META = set("\\.^$*+?{}[]|()")
_QUANTIFIERS = ("?", "*", "+", "{")


def _literal_tokens(alternative: str) -> tuple[list[str], str]:
    """The literal characters ``alternative`` starts with (each a token, escapes kept) and the
    rest; a character that a quantifier follows belongs to the rest."""
    tokens, i = [], 0
    while i < len(alternative):
        ch = alternative[i]
        if ch == "\\" and i + 1 < len(alternative) and not alternative[i + 1].isalnum():
            token = alternative[i : i + 2]
        elif ch not in _META:
            token = ch
        else:
            break
        if alternative[i + len(token) : i + len(token) + 1] in _QUANTIFIERS:
            break
        tokens.append(token)
        i += len(token)
    return tokens, alternative[i:]


def _factor(items: list[tuple[list[str], str]], fold: bool = False) -> str:
    """Alternatives that share a literal start matched once: ``user a|user b`` becomes
    ``user (?:a|b)``, so a search reads a repeated word once instead of once per alternative.
    The engine's order of preference is kept: an alternative joins an earlier one's group only
    when no alternative without a literal start (which could match at the same place) lies
    between them; alternatives with different literal starts never match at the same place.
    ``fold``: literals compared case-insensitively, as under ``(?i)``."""
    entries: list[tuple[str, list[tuple[list[str], str]]] | str] = []
    open_groups: dict[str, list[tuple[list[str], str]]] = {}
    for tokens, rest in items:
        if not tokens:
            entries.append(rest)
            open_groups = {}
            continue
        key = tokens[0].lower() if fold else tokens[0]
        if key in open_groups:
            open_groups[key].append((tokens, rest))
        else:
            open_groups[key] = [(tokens, rest)]
            entries.append((key, open_groups[key]))
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append(entry)
            continue
        members = entry[1]
        if len(members) == 1:
            out.append("".join(members[0][0]) + members[0][1])
            continue
        common = 1
        while all(len(t) > common for t, _ in members) and (
            len({t[common].lower() if fold else t[common] for t, _ in members}) == 1
        ):
            common += 1
        head = "".join(members[0][0][:common])
        tail = _factor([(t[common:], rest) for t, rest in members], fold)
        out.append(f"{head}(?:{tail})")
    return "|".join(out)


def compile_fast(pattern: str, words: bool = True) -> re.Pattern[str]:
    """``re.compile(pattern)``, prefixed with a lookahead of its possible first characters.

    With ``words`` (the default) the alternatives that begin with a letter match only at the
    start of a word, so a search also skips the inside of words ("xquota" is not "quota").
    """
    flags = ""
    match = _FLAGS.match(pattern)
    body = pattern
    if match:
        flags, body = match.group(1), pattern[match.end() :]
    parts = _split(body)
    found = [first_chars(part) for part in parts]
    if words:
        # one word-start check for all the alternatives that begin with a letter
        lettered = [p for p, f in zip(parts, found, strict=True) if f and f.isalpha()]
        others = [p for p, f in zip(parts, found, strict=True) if not (f and f.isalpha())]
        starts = [_literal_tokens(p.removeprefix("\\b")) for p in lettered]
        grouped = [rf"\b(?:{_factor(starts, 'i' in flags)})"] if lettered else []
        body = "|".join(grouped + others)
    prefix = f"(?{flags})" if flags else ""
    if not found or any(not f for f in found):
        return re.compile(prefix + body)
    chars = set("".join(f for f in found if f))
    if "i" in flags:
        chars |= {c.upper() for c in chars} | {c.lower() for c in chars}
    klass = "".join(sorted(re.escape(c) if c in "\\]^-[" else c for c in chars))
    return re.compile(f"{prefix}(?=[{klass}])(?:{body})")
