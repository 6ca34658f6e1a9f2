"""Mailstead: IMAP4 and POP3 over one shared mailbox store."""

__version__ = "0.1.0"
