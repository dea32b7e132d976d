"""The memory package's one user-facing exception type.

memory/ cannot import assistant/ (the layers point the other way), so the facade in
assistant/memory_api.py turns MemoryStoreError into ReverieError for the CLI.
"""
from __future__ import annotations

from .ledger import LedgerError


class MemoryStoreError(LedgerError):
    """Bad input to the memory store (unknown id, empty query, malformed import, ...).

    The message always says what went wrong and how to fix it.
    """
