"""Phrases of bounce notifications shared by the readers: bounce, delay, failure, intro lines."""

from __future__ import annotations

from relay.learn.bounce.fastre import compile_fast

BOUNCE_BODY = compile_fast(
    r"(?i)c(?:ould|an)(?:n't| ?not) (?:be delivered|be reached|deliver)|can't be delivered"
    r"|w(?:as|ere) not delivered|undeliverable|undelivered|delivery (?:has )?failed"
    r"|failed permanently|permanent (?:fatal )?error|permanent failure|unable to deliver"
    r"|was(?:n't| not) able to deliver|did not reach"
    r"|delivery to the following|qmail-send program"
    r"|created automatically by mail delivery software|following addresses had"
    r"|failed recipient|address(?:es)? failed|failed address|delivery failure|returned mail"
    r"|user unknown|unknown user|no such user|error during delivery|delivery problem"
    r"|has been delayed|will continue (?:to )?try|still (?:be )?trying"
    r"|delivery (?:is )?delayed|delivery status notification|mailbox unavailable"
    r"|does not exist|doesn't exist|invalid final delivery|user not found"
    r"|unknown recipient|host unknown|mail delivery failed|was rejected"
    r"|not (?:able to deliver|yet been delivered|accepting mail|be delivered|accepted"
    r"|a valid (?:user|recipient|address|mailbox))|delivery attempts"
    r"|error was detected|mailbox exceeds|over quota|delivery problems"
)


DELAY_RE = compile_fast(
    r"(?i)has been delayed|has not yet been delivered|not yet been delivered|will continue (?:to )?"
    r"try|still (?:be )?(?:trying|retrying|being retried)|will (?:be )?retr(?:y|ied)"
    r"|warning (?:message )?only|do not need to resend|don't need to resend"
    r"|delivery (?:is )?delayed|message delayed|delayed mail|delivery delayed|will keep trying"
    r"|delay(?:ed)? (?:notification|warning)|warning: message|attempts will continue"
    r"|transient non-fatal|delivery (?:status notification )?\(delay\)|not been delivered yet"
)


FAILURE_WORDS = compile_fast(
    r"(?i)unknown|no such|does not exist|doesn't exist|invalid|failed|failure|error"
    r"|rejected|refused|denied|unavailable|undeliver|could not|couldn't|unable"
    r"|disabled|inactive|suspended|quota|full|blocked|bad|illegal"
    r"|permanent|\b5\d\d\b|\b4\d\d\b|delayed|expired|no mailbox|too large|exceed"
    r"|did not|no longer|violation|looping"
    r"|not (?:found|deliver|accepting|exist|recogni|a valid|known|allowed|permitted)"
)
INTRO_RE = compile_fast(
    r"(?i)following (?:e-?mail )?(?:address|recipient|user|destination|mail ?box)"
    r"|to the following|did not reach|could not be delivered to|was not delivered to"
    r"|undeliverable to|failed to deliver to|delivery to the following|delivery has failed to"
    r"|addressed to|not be delivered to|unable to deliver (?:your message )?to"
    r"|failed recipients|recipients? (?:failed|could not)|your message to|addresses had"
    r"|failed addresses|message not delivered to|to which the message has not yet been"
    r"|not be reached|could not deliver (?:your message )?to|delivery problems? to"
)
