"""The text rules of classify() as data: reply-text families per reason, status and code tables.

Plain strings, tuples and dicts, no code: ``relay.learn.bounce.classifier`` compiles them once.
Patterns are Python regular expressions matched against lower-cased diagnostics whose
whitespace is collapsed and whose addresses and IPs are masked (" xaddr ", " xip "). A gap
between two words of a rule is counted in words (``_WORDS``: a few whole words of the same
sentence, each step one unambiguous separator-then-word), never in characters, and the words
after a gap start with a lookahead of their first letters, so a search stays linear and cheap
(tests/bench/bounce_speed.py checks every rule on 1 MB adversarial lines).

Order of evidence (``classifier.classify``): a SPECIFIC text (the families below, from remote
hosts' known replies and MTAs' own wordings) beats any status; then a specific RFC 3463 status
(``STATUS_REASONS``, not in ``VAGUE_STATUSES``); then a GENERIC text; then a vague status; then
the basic reply code. So "5.1.1 ... mailbox full" is mailboxfull, "5.1.1 ... access denied" is
userunknown, and "5.7.1 ... access denied" is policyviolation (5.7.1 alone: securityerror).
"""

from __future__ import annotations

# Up to N whole words between two parts of a rule, within one sentence (no . ; :), and the same
# across dots (domains, "5.7.1"): separators and words alternate, so no position is ambiguous
# and each is taken whole (possessive: nothing to backtrack into).
_WORDS3 = r"(?:[^\w.;:]++\w++){0,3}?[^\w.;:]++"
_WORDS4 = r"(?:[^\w.;:]++\w++){0,4}?[^\w.;:]++"
_ANY10 = r"(?:[^\w;]++\w++){0,10}?[^\w;]++"
# _WORDS4 after a rule's first word that does not step over another first word of the same
# rule: a match from that later word exists whenever one from the earlier does, so the search
# finds it there, and a line of first words repeated costs one step per word, not four.
_WORDS4_BUT = r"(?:[^\w.;:]++(?!(?:{heads})[^\w.;:])\w++){{0,4}}?[^\w.;:]++"
_WORDS3_BUT = r"(?:[^\w.;:]++(?!(?:{heads})[^\w.;:])\w++){{0,3}}?[^\w.;:]++"
_SUSPEND_HEADS = r"account|mailbox|mail box|user|address|recipient|e-?mail"
_UNKNOWN_HEADS = (
    r"user|recipient|mailbox|mail box|address|account|addressee|destination|rcpt|e-?mail"
)

# (reason, alternatives): the alternatives of a rule are joined with "|" into one pattern.
# Ordered: the first matching rule decides.
SPECIFIC_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Remote hosts' own replies (Google, Microsoft, Yahoo, Mimecast, Tencent, GoDaddy, Cox, ...)
    # whose words would otherwise fall into another family ("sending quota" is not a mailbox's).
    (
        "speeding",
        (
            r"(?:sending|submission|relay|daily|hourly|message|recipient) (?:smtp )?(?:relay )?"
            r"(?:limit|quota|rate) (?:exceeded|reached)",
            r"limit exceeded for (?:user|customer|sender)",
            r"exceeded (?:the )?(?:permitted|allowed) (?:limits|threshold)",
            r"tenant has exceeded",
            r"(?:sent|sending) too many (?:messages|e-?mails|mails)",
            r"receiving mail too quickly",
            r"(?:connection|domain|ip|sender) frequency limited",
        ),
    ),
    (
        "blocked",
        (
            r"ip not in whitelist",
            r"try again later, closing connection",
            r"helo/ehlo argument is invalid",
            r"access denied, please try again later",
            r"does not accept e-?mail over ipv6",
            r"restrictdomainstoipaddresses",
            r"suspected spam ip",
            r"ip temporarily blacklisted",
            r"bad sender ip",
            r"bad ip profile",
            r"confirm this mail server",
            r"not accepting connections",
            r"host network not allowed",
            r"invalid ip for sending",
            r"no access from mail server",
            r"has not passed validation",
            r"after initial connection",
            r"forbidden by your ip",
            r"too many spams from your ip",
            r"currently sending spam",
            r"\[tss?0\d\]",
            r"temporarily deferred due to (?:unexpected volume|user complaints)",
            r"\b(?:cxbl|cdrbl|ipbl\d{4})\b",
        ),
    ),
    (
        "policyviolation",
        (r"content presents a potential security issue",),
    ),
    (
        "rejected",
        (
            r"mail sending denied",
            r"sender (?:was )?not authenticated",
            r"sender not in allowed-senders list",
            r"banned sender",
            r"unregistered domains",
            r"delivery not authori[sz]ed",
            r"administrative prohibition",
            r"sender blacklisted",
            r"envelope blocked",
            r"does not accept mail from",
            r"without a valid sender domain",
            r"senderfilterconfig",
            r"no third-party dsns",
            r"unsigned dsn",
            r"from: domain is invalid",
            r"fully qualified e-?mail address required",
            r"returned mail not accepted here",
            r"access to submit messages to this e-?mail system has been rejected",
            r"on the recipient's list of senders",
        ),
    ),
    (
        "norelaying",
        (r"client was not authenticated", r"not an open relay", r"relaying mail to", r"rcpthost"),
    ),
    (
        "filtered",
        (r"extended inactivity", r"bounced address", r"not found recipient account"),
    ),
    (
        "spamdetected",
        (
            r"content filter",
            r"mail content denied",
            r"message content rejected",
            r"bulk.advertising",
        ),
    ),
    (
        "userunknown",
        (r"domain or user isn't in my list of allowed rcpthosts",),
    ),
    (
        "suspend",
        (r"mailbox cannot be accessed", r"banned recipient"),
    ),
    (
        "systemerror",
        (
            r"temporary system problem",
            r"temporarily rejected message",
            r"service not active",
            r"failed to be replicated",
            r"agent busy",
            r"can't create user output file",
            r"could not load drd",
            r"transaction failed",
        ),
    ),
    (
        "syntaxerror",
        (
            r"protocol violation",
            r"no commands allowed to pipeline",
            r"may not be repeated",
            r"no identity changes permitted",
            r"unrecognized authentication type",
            r"too many unauthenticated commands",
            r"bad address syntax",
        ),
    ),
    (
        "expired",
        (r"timeout - closing connection",),
    ),
    (
        "mailboxfull",
        (
            r"over ?quota",
            r"quota (?:exceeded|exceed|full|limit|violation|usage exceeded)",
            r"(?:mail ?box|inbox|mail ?folder|maildir|account|user|recipient|disk)"
            + _WORDS3
            + r"(?=[ifo])(?:is full|full\b|over (?:its |the )?(?:quota|limit|storage))",
            r"(?:mail ?box|inbox|mail ?folder|maildir|account|disk) (?:is )?full\b",
            r"exceed(?:s|ed|ing)? (?:its |the |his |her |their |your )?(?:mailbox )?"
            r"(?:storage|quota|disk)",
            r"(?:reached|hit) (?:its |the |his |her |their |your )?(?:disk |storage )?quota",
            r"disk quota",
            r"(?:user|domain)disk quota",
            r"allowed quota",
            r"full mailbox",
            r"mail ?box space not enough",
            r"not enough (?:storage )?space",
            r"does not have enough space",
            r"insufficient (?:disk )?(?:space|storage) (?:for|in) (?:the )?(?:user|recipient"
            r"|mailbox)",
            r"too many (?:messages|mails|e-?mails) (?:on|in) (?:the |his |her |their |your )?"
            r"(?:server|mail ?box|inbox|account|folder)",
            r"mailbox size limit",
            r"mail ?box" + _WORDS3 + r"(?=e)exceed",
            r"mailbox would exceed",
            r"space has been used up",
            r"too much mail data",
            r"exceeding receiving limits",
            r"boite du destinataire pleine",
            r"postfach (?:ist )?voll",
            r"casella (?:di posta )?piena",
            r"buz[oó]n (?:est[aá] )?lleno",
        ),
    ),
    (
        "exceedlimit",
        (
            r"message length exceeds administrative limit",
            r"exceeded (?:google's|the) message size limits?",
            r"message header size exceeds limit",
        ),
    ),
    (
        "mesgtoobig",
        (
            r"(?:message|mail|e-?mail|file|data)s? (?:is |was )?too (?:large|big)",
            r"message size (?:exceeds|limit|too)",
            r"size (?:limit|exceed)",
            r"exceeds? (?:the )?(?:fixed )?(?:maximum )?(?:message |allowed |inbound )+size",
            r"exceeded maximum inbound message size",
            r"maximum (?:incoming |inbound )?(?:message )?size",
            r"max(?:imum)? message size exceeded",
            r"message length exceeds",
            r"line limit exceeded",
            r"larger than (?:the )?(?:maximum|allowed|permitted)",
            r"taille limite du message",
        ),
    ),
    (
        "suspend",
        (
            rf"(?:{_SUSPEND_HEADS})"
            + _WORDS4_BUT.format(heads=_SUSPEND_HEADS)
            + r"(?=[sdiflbe])(?:suspended|disabled|deactivated|discontinued|inactive|frozen|locked"
            r"|de-activated|expired|blocked by the administrator)",
            r"\b(?:suspended|disabled|deactivated|inactive|frozen|expired) (?:account|mailbox"
            r"|user|address|recipient)",
            r"invalid/inactive user",
            r"(?:tried|trying) to reach is (?:disabled|inactive|suspended)",
            r"(?:is|has been|currently) suspended",
            r"temporar(?:y|ily) locked",
            r"temporarily inactive",
            r"recipient suspend",
            r"\[suspend\]",
            r"boite du destinataire archivee",
            r"mailbox unavailable or access denied",
        ),
    ),
    (
        "hasmoved",
        (
            r"(?:has|have) moved",
            r"has been replaced by",
            r"address (?:has )?changed",
            r"no forwarding address",
            r"user not local",
            r"owner has changed",
        ),
    ),
    (
        "norelaying",
        (
            r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|not allowed|refused"
            r"|rejected)",
            r"not (?:permitted|allowed|authori[sz]ed) to relay",
            r"(?:unable|cannot|can't|do not|don't|will not|won't)(?: to)? relay",
            r"relaying (?:mail )?to" + _ANY10 + r"(?:prohibited|denied|not allowed)",
            r"not a (?:gateway|relay)",
            r"as a relay",
            r"no relaying",
            r"insecure mail relay",
            r"rcpthosts",
            r"relay not (?:permitted|allowed)",
            r"not configured to relay",
            r"not local host",
            r"we don't handle mail for",
            r"requires authentication when attempting to send to a non-local",
        ),
    ),
    (
        "notaccept",
        (
            r"null ?mx",
            r"(?:domain|host|server|system|site)s? (?:does not|doesn't|do not|will not) accept"
            r" (?:any )?(?:e-?)?mail",
            r"host/domain does not accept mail",
            r"accepts no (?:e-?)?mail",
            r"no mail service",
            r"does not receive (?:e-?)?mail",
            r"no mx record found for domain=",
            r"name server: \.: host not found",
        ),
    ),
    (
        "rejected",
        (
            r"sender address rejected",
            r"sender (?:email )?address (?:has been )?(?:rejected|blacklisted|blocked)",
            r"sender (?:domain|address) (?:does not|doesn't|must|is not|not)",
            r"sender (?:domain )?verif(?:y|ication) failed",
            r"sender verif",
            r"unroutable sender",
            r"sender (?:address )?(?:unknown|not found|invalid)",
            r"invalid sender",
            r"sender (?:is )?(?:rejected|denied|not allowed|not pre-approved|spammer)",
            r"sender rejected",
            r"sender domain is empty",
            r"sender is in my black ?list",
            r"domain of sender",
            r"envelope (?:sender|from) (?:address )?(?:rejected|refused|denied|invalid|not)",
            r"from address (?:rejected|not allowed)",
            r"mail from" + _ANY10 + r"(?:rejected|refused|denied)",
            r"in reply to mail from command",
            r"null sender is not allowed",
            r"empty envelope senders",
            r"batv",
            r"bogus mail from",
            r"mail from not owned by user",
            r"email address is not verified",
            r"not on the recipient's list of senders",
            r"not allowed to post to this (?:mailing )?list",
            r"emetteur invalide",
            r"resolver\.rst\.",
        ),
    ),
    (
        "hostunknown",
        (
            r"host (?:or domain name )?not found(?!,? try again)",
            r"host unknown",
            r"unknown host",
            r"domain (?:name )?not found",
            r"no such domain",
            r"unknown domain",
            r"domain (?:does not|doesn't|did not|must) exist",
            r"domain is not reachable",
            r"domain (?:is )?(?:not (?:valid|registered)|invalid)",
            r"invalid domain",
            r"name or service not known",
            r"nxdomain",
            r"no (?:valid )?(?:mx|mail exchanger)(?: records?)?(?: found| for| available|\b)",
            r"could(?: not|n't) find any host",
            r"non-?existent (?:host|domain)",
            r"bad destination (?:system|host)",
            r"no route to domain",
            r"unrout(?:e)?able (?:address|domain)",
            r"mail domain mentioned in email address is unknown",
            r"account or domain may not exist",
            # "Returned mail - nameserver error report" is phquery's (a CSO/ph directory, not
            # DNS): its lines word the cause ("No matches to nameserver query", userunknown)
            r"dns error report",
        ),
    ),
    # a rule of its own: its leading digits would otherwise make every digit a start for all of
    # the rule above
    ("hostunknown", (r"553 \S+ does not exist",)),
    (
        "userunknown",
        (
            r"user unknown",
            r"unknown user",
            r"unknown (?:or illegal )?(?:e-?mail )?(?:recipient|address|mailbox|account|alias"
            r"|local[- ]part)",
            r"(?:recipient|addressee|address|mailbox) (?:is )?unknown",
            r"no such (?:user|recipient|mailbox|account|address|person|local user)",
            rf"(?:{_UNKNOWN_HEADS})"
            + _WORDS4_BUT.format(heads=_UNKNOWN_HEADS)
            + r"(?=[dniw])(?:(?:does|do|did)(?: not|n't) exist|not exist|not found"
            r"|not be found|n't be found|is unknown|not known|not recogni[sz]ed|was not found)",
            r"\b(?:does not|doesn't|dont|don't) have an? (?:[\w.-]+ )?account",
            r"not (?:a )?(?:known|valid|recogni[sz]ed) (?:user|recipient|mailbox|address|e-?mail)",
            r"is not a (?:known user|valid mailbox|local address)",
            r"not an active address",
            r"not listed in (?:the )?(?:domino |public )?(?:directory|name and address book)",
            r"invalid (?:final delivery )?(?:userid|user ?name|recipient|mailbox|e-?mail"
            r" address|address)",
            r"no (?:mail ?box|mailbox|account) (?:here|by that name|available|found|for)",
            r"mailbox (?:is )?(?:unavailable|not (?:present|found)|invalid|inactive)",
            r"bad[ _-](?:destination )?(?:recipient|mailbox|address)",
            r"badrcptto",
            r"mailbox name not allowed",
            r"not our customer",
            r"archived recipient",
            r"address invalid",
            r"can't accept user",
            r"destination addresses were unknown",
            r"non-?existent user",
            r"not a local address",
            r"envelope recipient has been denied",
            r"badrecipientto|validrcptto",
            r"missing home directory",
            r"user not active",
            r"unknown virtual user",
            r"xaddr >? not found",
            r"recipient (?:address )?rejected: (?:access denied|invalid|unknown|user)",
            r"recipnotfound|recipientnotfound|resolver\.adr\.",
            r"there is no one at this address",
            r"no longer (?:valid|available|exists|in use|on (?:this )?server|used|accepts mail)",
            r"is no longer (?:at|with|a valid|an active)",
            r"(?:left|not with|not at) th(?:e|is) (?:company|organi[sz]ation)",
            r"does not have a final email delivery point",
            r"no matches to nameserver query",
            r"recipient (?:is )?not (?:local|ok|valid|accepted)",
            r"refuses to accept your mail",
            r"nie istnieje",
            r"existiert nicht",
            r"unbekannt",
            r"n'existe pas",
            r"inconnu",
            r"non recens",
            r"no existe",
            r"desconocid",
            r"non esiste",
            r"nessun utente",
            r"sconosciut",
            r"n[aã]o existe",
            r"\bdd this user",
        ),
    ),
    (
        "filtered",
        (
            r"not accepting (?:any )?(?:e-?)?mail",
            r"only accepting mail from",
            r"(?:recipient|user) (?:has )?(?:blocked|refused|rejected) (?:you|your|the sender|mail"
            r"|messages|e-?mails)",
            r"blocked by (?:the )?(?:recipient|user)",
            r"rejected by recipient",
            r"(?:recipient|user)'?s? (?:filter|rules|settings|preferences)",
            r"due to user rules",
            r"user reject",
            r"refuse to receive mail",
            r"this account is protected by",
            r"has restricted sms e-mail",
            r"requires confirmation",
        ),
    ),
    (
        "virusdetected",
        (
            r"virus",
            r"malware",
            r"infected",
            r"potentially executable",
        ),
    ),
    (
        "requireptr",
        (
            r"reverse (?:dns|lookup)",
            r"\brdns\b",
            r"\bptr\b",
            r"cannot find your hostname",
            r"cannot resolve your address",
            r"ip name lookup failed",
            r"no reverse",
        ),
    ),
    (
        "authfailure",
        (
            r"\bdmarc\b",
            r"\bspf\b",
            r"\bdkim\b",
            r"sender policy framework",
            r"fails? to pass authentication checks",
            r"unauthenticated (?:e-?mail|senders?)",
        ),
    ),
    (
        "badreputation",
        (
            r"(?:poor|low|bad) (?:e-?mail )?reputation",
            r"reputation (?:of|problems|score)",
            r"ip reputation",
        ),
    ),
    (
        "speeding",
        (
            r"rate.?limit",
            r"throttl",
            r"receiving mail (?:at|too) (?:a )?(?:rate|fast)",
            r"sending rate",
            r"exceeded (?:the )?(?:hourly|daily|sending|message|recipient|max)s? "
            r"(?:limit|quota|emails)",
            r"too fast",
            r"too frequent",
            r"slow down",
            r"gr[ae]ylist",
        ),
    ),
    (
        "toomanyconn",
        (
            r"too many (?:connections|concurrent|sessions|simultaneous|smtp|recipients"
            r"|errors|invalid)",
            r"connection limit",
            r"maximum (?:number of )?(?:connections|messages per|recipients)",
            r"trop de connexions",
        ),
    ),
    (
        "blocked",
        (
            r"blocked using",
            r"block ?list",
            r"black ?list",
            r"deny ?list",
            r"\blisted (?:in|on|at|by|as)\b",
            r"dnsbl",
            r"\brbl\b",
            r"spamhaus",
            r"spamcop",
            r"\bsorbs\b",
            r"barracudacentral",
            r"abuseat\.org",
            r"(?:\bip\b|ip address|client host|sending host|your host|your server|your network"
            r"|sending server|mail server)"
            + _WORDS4
            + r"(?=[bnrlp])(?:blocked|banned|rejected|listed"
            r"|blacklisted|refused|not allowed)",
            r"(?:blocked|banned|blacklisted)"
            + _WORDS3
            + r"(?=[ihcsn])(?:ip|host|client|server|network)\b",
            r"banned sending ip",
            r"dynamic(?:ally assigned)? ip|residential ip|dynamic/zombied",
            r"open (?:relay|proxy)",
            r"not currently accepting mail from your ip",
            r"unusual rate of unsolicited mail",
            r"helo command rejected",
            r"bad helo",
            r"refused to talk to me",
            r"you are not allowed to connect",
            r"go away",
        ),
    ),
    (
        "spamdetected",
        (
            r"spam",
            r"junk ?mail",
            r"\bube\b",
            r"\bucb\b",
            r"mass[- ]?mail",
            r"unsolicited",
            r"bulk (?:e-?)?mail",
            r"uribl",
            r"surbl",
            r"phish",
            r"content filter rejection",
            r"message filtered",
            r"looks like spam",
        ),
    ),
    (
        "policyviolation",
        (
            r"polic(?:y|ies)",
            r"closed mailing list",
            r"members-only list",
            r"illegal attachment",
            r"messages with multiple addresses",
            r"organizational settings",
            r"organization policy",
        ),
    ),
    (
        "failedstarttls",
        (
            r"starttls",
            r"\btls"
            + _WORDS3_BUT.format(heads="tls")
            + r"(?=[rfn])(?:required|failed|failure|not (?:available|supported|offered))",
            r"(?:must|should) use tls",
            r"encryption (?:needed|required)",
            r"tls handshake",
        ),
    ),
    (
        "securityerror",
        (
            r"authentication (?:credentials invalid|failure|failed|required|turned on)",
            r"verification failure",
            r"not authorized to send mail, authentication",
            r"certificate",
            r"\bdane\b",
            r"dnssec",
        ),
    ),
    (
        "notcompliantrfc",
        (
            r"rfc ?(?:2822|5322|822|5321)",
            r"multiple (?:from|date|subject|message-id|to) headers?",
            r"duplicate (?:from|date|subject|message-id|to)? ?headers?",
            r"bare (?:lf|cr|linefeed|line ?feed)",
            r"\bnot (?:rfc[- ]?)?compliant",
        ),
    ),
    (
        "contenterror",
        (
            r"attachment",
            r"\bmime\b",
            r"content (?:rejected|refused|not allowed|violation|restriction)",
            r"message content",
            r"(?:invalid|malformed|bad|missing) (?:message )?headers?",
            r"header (?:syntax|error|rejected|too|size)",
            r"8-?bit",
            r"line too long",
            r"(?:illegal|invalid) character",
            r"executable",
            r"embedded images",
            r"message is malformed",
            r"base64 encoding",
            r"improperly-formatted",
        ),
    ),
    (
        "mailererror",
        (
            r"^procmail:|bin/(?:procmail|maildrop)",
            r"command (?:failed:|died with status|output:)",
            r"mailer error",
            r"pipe to \|",
            r"x-unix; \d+",
        ),
    ),
    (
        "systemfull",
        (
            r"mail system full",
            r"insufficient system (?:storage|resources)",
            r"system (?:is )?full",
            r"out of (?:disk|storage)",
        ),
    ),
    # a failed connection named in a delay warning is its cause, not the warning's own "delivery
    # attempts will continue" (expired)
    (
        "networkerror",
        (r"connection to (?:the )?(?:mail exchanger|remote (?:host|server)|mail server) failed",),
    ),
    (
        "expired",
        (
            r"expired",
            r"retry time(?:out)? (?:not reached|exceeded)",
            r"too long (?:in|on) (?:the )?queue",
            r"(?:in|on) the queue too long",
            r"(?:could not|couldn't|was not) (?:be )?delivered (?:for|within|in) (?:more than )?\d",
            r"delivered for more than",
            r"failed to deliver to domain",
            r"not been collected",
            r"maximum (?:delivery|retry) (?:attempts|time)",
            r"delivery attempts (?:exhausted|exceeded|will continue)",
            r"delivery failed \d+ attempts",
            r"unable to deliver message after multiple retries",
            r"giving up on",
            r"gave up",
            r"queue lifetime",
            r"queue period",
            r"server did not respond",
            r"could not find a gateway for",
            r"failing for a long time",
            r"has been delayed",
            r"message timed out",
        ),
    ),
    (
        "networkerror",
        (
            r"host not found,? try again",
            r"connection (?:refused|reset|lost|closed|dropped|timed out)",
            r"network (?:is )?unreachable",
            r"no route to host",
            r"host (?:is )?unreachable",
            r"(?:could not|couldn't|unable to|can't|cannot|failed to) connect",
            r"lost connection",
            r"broken pipe",
            r"temporary failure in name resolution",
            r"servfail",
            r"dns (?:error|failure|lookup fail)",
            r"host name lookup failure",
            r"malformed (?:or unexpected )?name ?server reply",
            r"dns records for the destination computer could not be found",
            r"too many hops",
            r"exceeded \d+ hops",
            r"mail loop",
            r"loop detected",
            r"hop count exceeded",
            r"mail forwarding loop",
            r"message looping|routing loop|forwarding loop count",
            r"unable to resolve route",
            r"unroutable mail domain|unrouteable mail domain",
        ),
    ),
    (
        "systemerror",
        (
            r"\bloop",
            r"system (?:error|failure|config)",
            r"internal (?:server )?error",
            r"server error",
            r"configuration error",
            r"misconfigur",
            r"out of memory",
            r"local error",
            r"local problem",
            r"processing error",
            r"error while being processed",
            r"queue file write error",
            r"interrupted system call",
            r"timeout waiting for input",
            r"service (?:is )?(?:not available|unavailable|currently unavailable|temporarily "
            r"unavailable)",
            r"server (?:is )?(?:busy|unavailable)",
        ),
    ),
    (
        "syntaxerror",
        (
            r"syntax error",
            r"command unrecogni[sz]ed",
            r"unrecogni[sz]ed command",
        ),
    ),
    (
        "suppressed",
        (
            r"on (?:the |our |an? )?(?:account'?s? )?suppression list",
            r"address (?:is )?suppressed",
        ),
    ),
)

# Wordings that say only roughly why: a specific status (below) beats them.
GENERIC_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "blocked",
        (r"\bblocked\b", r"\bbanned\b", r"not allowed to send"),
    ),
    (
        "policyviolation",
        (
            r"not authori[sz]ed",
            r"prohibit",
            r"not permitted",
            r"not allowed",
            r"refused",
            r"restricted",
            r"denied",
            r"forbidden",
            r"administrative",
        ),
    ),
    (
        "securityerror",
        (r"\b(?:tls|ssl)\b", r"encrypt", r"authenticat", r"\bauth\b"),
    ),
    (
        "expired",
        (r"timed out", r"time-?out"),
    ),
    (
        "userunknown",
        (
            r"(?:recipient|address) (?:address )?rejected",
            r"rejected recipient",
            r"no valid recipients",
            r"undeliverable address",
            r"address not (?:found|valid|present)",
            r"invalid (?:recipient|user)",
        ),
    ),
)

# RFC 3463 / RFC 5248 subject.detail -> reason, for class 5 (and class 4 unless listed below).
STATUS_REASONS: dict[str, str] = {
    "1.0": "userunknown",
    "1.1": "userunknown",
    "1.2": "hostunknown",
    "1.3": "userunknown",
    "1.4": "filtered",
    "1.6": "hasmoved",
    "1.7": "rejected",
    "1.8": "rejected",
    "1.9": "systemerror",
    "1.10": "notaccept",
    "2.0": "filtered",
    "2.1": "filtered",
    "2.2": "mailboxfull",
    "2.3": "exceedlimit",
    "2.4": "filtered",
    "3.0": "systemerror",
    "3.1": "systemfull",
    "3.2": "notaccept",
    "3.3": "systemerror",
    "3.4": "mesgtoobig",
    "3.5": "systemerror",
    "4.0": "networkerror",
    "4.1": "networkerror",
    "4.2": "networkerror",
    "4.3": "systemerror",
    "4.4": "hostunknown",
    "4.5": "systemfull",
    "4.6": "networkerror",
    "4.7": "expired",
    "5.0": "syntaxerror",
    "5.1": "syntaxerror",
    "5.2": "syntaxerror",
    "5.3": "toomanyconn",
    "5.4": "systemerror",
    "5.5": "systemerror",
    "5.6": "securityerror",
    "6.0": "contenterror",
    "6.1": "contenterror",
    "6.2": "contenterror",
    "6.3": "contenterror",
    "6.4": "contenterror",
    "6.5": "contenterror",
    "6.6": "contenterror",
    "6.7": "contenterror",
    "6.8": "contenterror",
    "6.9": "contenterror",
    "6.10": "contenterror",
    "7.0": "securityerror",
    "7.1": "securityerror",
    "7.2": "securityerror",
    "7.3": "securityerror",
    "7.4": "securityerror",
    "7.5": "securityerror",
    "7.6": "securityerror",
    "7.7": "securityerror",
    "7.8": "securityerror",
    "7.9": "securityerror",
    "7.10": "failedstarttls",
    "7.11": "failedstarttls",
    "7.12": "securityerror",
    "7.13": "suspend",
    "7.14": "securityerror",
    "7.15": "securityerror",
    "7.16": "mesgtoobig",
    "7.17": "hasmoved",
    "7.18": "hasmoved",
    "7.19": "securityerror",
    "7.20": "authfailure",
    "7.21": "authfailure",
    "7.22": "authfailure",
    "7.23": "authfailure",
    "7.24": "authfailure",
    "7.25": "requireptr",
    "7.26": "authfailure",
    "7.27": "notaccept",
    "7.28": "speeding",
    "7.29": "authfailure",
    "7.30": "securityerror",
}

# Class 4 differences: a temporary routing failure is network trouble, not a missing host.
TRANSIENT_STATUS_REASONS: dict[str, str] = {
    "4.4": "networkerror",
    "7.0": "securityerror",
    "7.1": "blocked",
    "7.2": "blocked",
}

# A specific text's reason -> the status reasons that refine it (a sibling the status tells
# apart better than the wording: "message too large" with 5.2.3 is exceedlimit).
STATUS_REFINES: dict[str, frozenset[str]] = {
    "mesgtoobig": frozenset({"exceedlimit"}),
    "exceedlimit": frozenset({"mesgtoobig"}),
    "blocked": frozenset({"requireptr", "authfailure", "badreputation"}),
    "securityerror": frozenset({"authfailure", "failedstarttls", "requireptr"}),
    "policyviolation": frozenset({"authfailure", "requireptr"}),
}

# Statuses that name a category rather than a cause: a generic text beats them.
VAGUE_STATUSES: frozenset[str] = frozenset(
    {"0.0", "1.0", "2.0", "3.0", "4.0", "5.0", "6.0", "7.0", "7.1"}
)

# Basic reply codes (RFC 5321, RFC 7504) -> reason, used when nothing more specific is known.
CODE_REASONS: dict[int, str] = {
    421: "systemerror",
    450: "onhold",
    451: "systemerror",
    452: "systemfull",
    500: "syntaxerror",
    501: "syntaxerror",
    502: "syntaxerror",
    503: "syntaxerror",
    504: "syntaxerror",
    521: "notaccept",
    550: "onhold",
    551: "hasmoved",
    552: "mailboxfull",
    553: "onhold",
    554: "onhold",
    556: "notaccept",
}

# A "user unknown" wording given only after the message was sent (end of DATA) is the site's
# filter refusing this message, not a missing mailbox (unless the status itself says X.1.x).
AFTER_DATA: str = r"end of data|after data|in reply to data|after end of (?:data|message)"

# A relaying service's own generic words around the remote host's quoted reply (Amazon SES:
# "5.1.0 - Unknown address error 550-'5.7.1 Message rejected by filter'"): the quoted reply,
# group 1 its code and group 2 its text, is the diagnostic that is classified.
WRAPPED_REPLY: str = r"^\s*[245]\.\d{1,3}\.\d{1,3} - [a-z ]{0,40}error\s+([245]\d\d)[- ]'(.+)'"

# A report's diagnostic that says the refusal came at RCPT TO (Postfix, Exim, qmail wording, or
# Sendmail's "<address>... reason" RCPT reply).
AT_RCPT: str = (
    r"rcpt to|in reply to rcpt|after rcpt|recipient address rejected|\brcpt\b|like recipient"
    r"|recipient (?:not found|unknown|rejected|address)|xaddr >?\.{3}"
)

# Canonical subject.detail per reason, to derive a status when a report has none.
REASON_STATUS: dict[str, str] = {
    "authfailure": "7.26",
    "badreputation": "7.1",
    "blocked": "7.1",
    "contenterror": "6.0",
    "delivered": "0.0",
    "exceedlimit": "2.3",
    "expired": "4.7",
    "failedstarttls": "7.10",
    "feedback": "0.0",
    "filtered": "2.0",
    "hasmoved": "1.6",
    "hostunknown": "1.2",
    "mailboxfull": "2.2",
    "mailererror": "0.0",
    "mesgtoobig": "3.4",
    "networkerror": "4.0",
    "norelaying": "7.1",
    "notaccept": "1.10",
    "notcompliantrfc": "6.0",
    "onhold": "0.0",
    "policyviolation": "7.1",
    "rejected": "1.8",
    "requireptr": "7.25",
    "securityerror": "7.0",
    "spamdetected": "7.1",
    "speeding": "7.28",
    "suppressed": "0.0",
    "suspend": "2.1",
    "syntaxerror": "5.2",
    "systemerror": "3.0",
    "systemfull": "3.1",
    "toomanyconn": "5.3",
    "undefined": "0.0",
    "userunknown": "1.1",
    "vacation": "0.0",
    "virusdetected": "7.1",
}
