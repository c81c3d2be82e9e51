"""Render: one recipient's copy of a message (link rewriting, pixel, headers, tokens, DKIM last)."""
