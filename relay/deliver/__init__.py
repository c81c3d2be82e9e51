"""Deliver: leases and schedule, SMTP out, MX lookup, and DSNs back to the app's sender."""
