"""Recognisers of non-standard bounces, one module per MTA family or text layout.

``recognise.text_hits`` tries them in order: AOL screen names, Apache James, qmail-style paragraphs,
labelled lines, listed addresses, then addresses next to failure words; ``transcript``
prefers a quoted SMTP reply line as the diagnostic.
"""
