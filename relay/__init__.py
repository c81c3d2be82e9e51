"""The relay: SMTP in, durable queue, rendered and signed copies out, and what was learned back."""
