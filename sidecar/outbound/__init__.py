"""Events out: every recorded event to webhooks and streams, each destination from its cursor."""
