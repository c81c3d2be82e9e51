"""Receive: the SMTP door (aiosmtpd hooks), policy checks, AUTH, and the shared accept path."""
