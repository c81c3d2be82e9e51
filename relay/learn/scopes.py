"""Message streams and suppression scopes: which suppression entries stop which message (pure).

A message belongs to one stream, ``transactional`` or ``broadcast``. A suppression entry has a
scope: ``all`` (every stream: hard bounces, complaints, soft-bounce runs, manual entries by
default), ``broadcast`` (unsubscribes), or one campaign or list of the broadcast stream
(``campaign:<X-Outpost-Campaign>``, ``list:<List-Id>``). Transactional mail is stopped only by
``all`` entries, so a marketing unsubscribe never stops a password reset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

STREAMS = ("transactional", "broadcast")
ALL = "all"
BROADCAST = "broadcast"
UNSUBSCRIBE_SCOPES = ("broadcast", "campaign", "list")  # [streams] unsubscribe_scope

_LIST_ID = re.compile(r"<([^<>\s]+)>")


def list_id_of(value: str) -> str:
    """The list identifier of a List-Id header (RFC 2919: ``Name <id.example.org>``), lowercased."""
    m = _LIST_ID.search(value)
    return (m.group(1) if m else value.strip()).lower()[:255]


def covering(stream: str, campaign: str = "", list_id: str = "") -> tuple[str, ...]:
    """The scopes whose entries stop a message of this stream, campaign and list (strongest
    first)."""
    if stream != BROADCAST:
        return (ALL,)
    scopes = [ALL, BROADCAST]
    if campaign:
        scopes.append(f"campaign:{campaign}")
    if list_id:
        scopes.append(f"list:{list_id}")
    return tuple(scopes)


def unsubscribe_scope(mode: str, campaign: str, list_id: str) -> str:
    """Where an unsubscribe from one message applies: the broadcast stream, or only the
    message's campaign or list when configured so and the message has one."""
    if mode == "campaign" and campaign:
        return f"campaign:{campaign}"
    if mode == "list" and list_id:
        return f"list:{list_id}"
    return BROADCAST


def scope_of(event_type: str, details: Mapping[str, Any]) -> str:
    """The scope an event's suppression gets: an unsubscribe its own (default broadcast)."""
    if event_type == "unsubscribe":
        scope = str(details.get("scope") or BROADCAST)
        return scope if valid_scope(scope) and scope != ALL else BROADCAST
    return ALL


def valid_scope(scope: str) -> bool:
    """all, broadcast, campaign:<name> or list:<id> (non-empty, at most 255 characters)."""
    if scope in (ALL, BROADCAST):
        return True
    kind, _, name = scope.partition(":")
    return kind in ("campaign", "list") and 0 < len(name.strip()) <= 255 and name == name.strip()


def describe(reason: str, scope: str) -> str:
    """How a refusal or drop names it: 'unsubscribe, broadcast'."""
    return f"{reason}, {scope}"


def default_scope(reason: str) -> str:
    """The scope of an entry made without one: unsubscribes stop broadcast, the rest all."""
    return BROADCAST if reason == "unsubscribe" else ALL


def scope_error(reason: str, scope: str) -> str | None:
    """Why an (operator-given) entry's scope is refused, or None."""
    if not valid_scope(scope):
        return "scope must be all, broadcast, campaign:NAME or list:LIST-ID"
    if reason == "unsubscribe" and scope == ALL:
        return "an unsubscribe never stops transactional mail: scope must not be all"
    return None
