"""Known errors of the reference (Sisimai 4.25) on the measured corpora, each with the reason.

``bounce_sisimai`` scores Outpost twice: against Sisimai's labels as they are (*strict*), and
against them with these cases replaced by the right answer (*corrected*), so a figure never
rises by copying a mistake and the mistakes stay listed. A case is one file (by the SHA-256 of
its bytes, so a renamed copy in another corpus is the same case) and the recipient Sisimai
named. An erratum applies only while Sisimai still gives the label recorded here; when a newer
Sisimai answers differently it is reported as stale and not applied.
"""

from __future__ import annotations

from dataclasses import dataclass

# Why Sisimai is wrong, one sentence per kind of mistake.
FILTERED_WITHOUT_COMMAND = (
    "the receiving system's own report (no SMTP reply quoted, or an X.1.x status) says the "
    "mailbox does not exist and mentions no filter; Sisimai 4.25 reads any user-unknown wording "
    "as filtered when it cannot tell at which SMTP command the mail was refused "
    "(Reason::Filtered::true, the branch for an unknown command)"
)
UNREAD_WORDING = (
    "the text names the cause, but none of Sisimai 4.25's phrases matches it, so it says "
    "onhold/undefined"
)
FIRST_RECIPIENT_ONLY = (
    "the notification gives one cause for both recipients; Sisimai attaches it to the first and "
    "gives the second only the closing line"
)
EXAMPLE_ADDRESS = (
    "Sisimai took the recipient from an example in the explanation text ('if mike.fox@yale.edu "
    "fails, try ...'); the bounce names the local part 'userx' only, so no address is right"
)


@dataclass(frozen=True)
class Erratum:
    """Sisimai's label for one case, and the right one."""

    name: str  # the file's name in flufl.bounce's tests/data, for people
    sha256: str  # first 16 hex digits of the file's SHA-256
    sisimai_recipient: str
    sisimai_reason: str
    recipient: str  # the right recipient ("" when the bounce names no address)
    reason: str  # the right reason
    why: str
    text: str  # the words that decide it, quoted from the bounce


ERRATA: tuple[Erratum, ...] = (
    Erratum(
        "groupwise_02.txt",
        "dc7013e3085b483b",
        "userx@example.com",
        "filtered",
        "userx@example.com",
        "userunknown",
        FILTERED_WITHOUT_COMMAND,
        "The recipient name is not recognized ... MSEXCH:IMS ... (000C05A6) Unknown Recipient "
        "(Exchange 5.5; Sisimai's own Exchange2003 table calls 000C05A6 userunknown)",
    ),
    Erratum(
        "simple_05.txt",
        "a8c71a7ea6bc3e61",
        "userx@example.net",
        "filtered",
        "userx@example.net",
        "userunknown",
        FILTERED_WITHOUT_COMMAND,
        "This user doesn't have a sbcglobal.net account (Yahoo's MTA)",
    ),
    Erratum(
        "simple_06.txt",
        "0f8515c9dd1409ba",
        "userx@example.com",
        "filtered",
        "userx@example.com",
        "userunknown",
        FILTERED_WITHOUT_COMMAND,
        "This user doesn't have a hamiltonpacific.com account (Yahoo's MTA)",
    ),
    Erratum(
        "yahoo_10.txt",
        "154a91ddf7455979",
        "userx@example.com",
        "filtered",
        "userx@example.com",
        "userunknown",
        FILTERED_WITHOUT_COMMAND,
        "This user doesn't have a yahoo.com account",
    ),
    Erratum(
        "yahoo_10.txt",
        "154a91ddf7455979",
        "userz@example.com",
        "filtered",
        "userz@example.com",
        "userunknown",
        FILTERED_WITHOUT_COMMAND,
        "This user doesn't have a yahoo.com account",
    ),
    Erratum(
        "simple_23.txt",
        "a0b756bdc6d521b4",
        "userx@example.it",
        "filtered",
        "userx@example.it",
        "userunknown",
        FILTERED_WITHOUT_COMMAND,
        "Your message has encountered delivery problems to local user userx. ... User not known",
    ),
    Erratum(
        "simple_25.txt",
        "5360887699b5997c",
        "userx@example.com",
        "filtered",
        "userx@example.com",
        "userunknown",
        FILTERED_WITHOUT_COMMAND,
        "This is the deliver program at ... userx@example.com No such user",
    ),
    Erratum(
        "simple_26.txt",
        "82f12fa6e050d08b",
        "userx@example.it",
        "filtered",
        "userx@example.it",
        "userunknown",
        FILTERED_WITHOUT_COMMAND,
        "has reached our local address userx@example.it, but this email address is wrong or no "
        "longer valid",
    ),
    Erratum(
        "simple_27.txt",
        "6071228c9643e164",
        "userx@example.net.py",
        "filtered",
        "userx@example.net.py",
        "userunknown",
        FILTERED_WITHOUT_COMMAND,
        "userx@example.net.py - no such user here. There is no user by that name at this server "
        "(MDaemon)",
    ),
    Erratum(
        "outpost-o365-ndr-recipientnotfound.eml",
        "9c98bec8bf32c360",
        "former.employee@contoso.com",
        "filtered",
        "former.employee@contoso.com",
        "userunknown",
        FILTERED_WITHOUT_COMMAND,
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup "
        "(Exchange Online's 5.1.10 is 'recipient not found'; Sisimai 4.25 knows 5.1.10 only as "
        "RFC 7505's null MX)",
    ),
    Erratum(
        "simple_13.txt",
        "b2772b19fa4fbe17",
        "userx@example.fr",
        "onhold",
        "userx@example.fr",
        "userunknown",
        UNREAD_WORDING,
        "L'adresse de messagerie référencée ci-dessus n'existe pas (French: the address does not "
        "exist); subject 'Utilisateur non recensé dans l'annuaire'",
    ),
    Erratum(
        "simple_01.txt",
        "564ece8fa1ba6c08",
        "bbbsss@example.com",
        "onhold",
        "bbbsss@example.com",
        "mailboxfull",
        UNREAD_WORDING,
        "RCPT To:<bbbsss@example.com> / 552 Message for <bbbsss@example.com> would exceed "
        "mailbox quota (MDaemon transcript)",
    ),
    Erratum(
        "simple_37.txt",
        "6d66fb0e6bc8f4f6",
        "user@example.edu",
        "onhold",
        "user@example.edu",
        "userunknown",
        UNREAD_WORDING,
        "Error Detail (phquery V3.0): ---- user@example.edu Does not have a final email delivery "
        "point (the directory lists the person with no mailbox)",
    ),
    Erratum(
        "dsn_04.txt",
        "33bf2d740e0268e0",
        "userx@example.ch",
        "undefined",
        "userx@example.ch",
        "mailboxfull",
        UNREAD_WORDING,
        "%MAIL-E-OPENOUT ... -SYSTEM-F-EXDISKQUOTA, disk quota exceeded (PMDF on VMS)",
    ),
    Erratum(
        "simple_40.txt",
        "729623ca382a7969",
        "user@example.com",
        "onhold",
        "user@example.com",
        "networkerror",
        UNREAD_WORDING,
        "(delay warning) The message has not yet been delivered to the following addresses: "
        "<user@example.com> host lsvk.de[213.165.78.137]: connection to mail exchanger failed",
    ),
    Erratum(
        "netscape_01.txt",
        "b5f9e9c9af5640a9",
        "bbbbb@corel.com",
        "onhold",
        "bbbbb@corel.com",
        "expired",
        FIRST_RECIPIENT_ONLY,
        "the destination computer was not reachable within the allowed queue period ... The "
        "following recipients did not receive your message: <aaaaa@corel.com> ... "
        "<bbbbb@corel.com>",
    ),
    Erratum(
        "yale_01.txt",
        "71ae0669860e3348",
        "mike.fox@yale.edu",
        "filtered",
        "",
        "userunknown",
        f"{EXAMPLE_ADDRESS}; and {FILTERED_WITHOUT_COMMAND}",
        "Message not delivered to the following: userx No matches to nameserver query "
        "(phquery: the directory has no such name)",
    ),
)


def erratum_for(sha256: str, sisimai_recipient: str) -> Erratum | None:
    """The erratum recorded for this file and Sisimai's recipient, if any."""
    for erratum in ERRATA:
        if sha256.startswith(erratum.sha256) and (
            erratum.sisimai_recipient.lower() == sisimai_recipient.lower()
        ):
            return erratum
    return None
