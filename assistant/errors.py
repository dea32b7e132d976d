"""The one exception type the CLI turns into a clean message and exit code 1."""


class ReverieError(Exception):
    """A user-facing error; the message says what went wrong and how to fix it."""
