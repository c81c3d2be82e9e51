"""RFC 3834 auto-replies: vacation and out-of-office messages, recognised, never bounces."""

from __future__ import annotations

import re
from email.message import Message

from relay.learn.bounce.mime import header_value

_AUTOREPLY_SUBJECT = re.compile(
    r"(?i)^\s*+(?:(?:re|aw|fw|fwd)\s*:\s*)?(?:auto(?:matic)?[ _-]?(?:reply|response|respuesta"
    r"|antwort|risposta|r[ée]ponse|answer|responder)|auto:|out of (?:the )?office|ooo\b|away from"
    r"|on vacation|vacation|abwesenheit|r[ée]ponse automatique|respuesta autom[aá]tica"
    r"|fuera de la oficina|absence|absent|autoreply|autoresponse|i am away|i'm away"
    r"|thank you for your (?:e-?mail|message)|thanks for your (?:e-?mail|message)"
    r"|automatyczna odpowied[zź]|odpowied[zź] automatyczna|urlaub|niet aanwezig)"
)


def is_autoreply(msg: Message) -> bool:
    """RFC 3834 and the common vendor markers of vacation / out-of-office replies."""
    if header_value(msg, "Auto-Submitted").lower().startswith("auto-replied"):
        return True
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Vacation"):
        if header_value(msg, name):
            return True
    for name in ("Precedence", "X-Precedence"):
        if "auto_reply" in header_value(msg, name).lower().replace("-", "_"):
            return True
    return bool(_AUTOREPLY_SUBJECT.search(header_value(msg, "Subject")))
