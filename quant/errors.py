"""Errors raised by quant/. Messages say what to do; the CLI prints them and exits 1."""


class QuantError(Exception):
    """Bad model, bad file, missing backend: a user-facing error with a fix in the message."""


class BackendUnavailable(QuantError):
    """A runtime's library is not installed or cannot run here."""
