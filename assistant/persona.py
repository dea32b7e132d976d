"""Between the memory ledger's facts and the trainer's input: first-person statements.

Memory stores extracted facts in the third person ("The user lives in Oslo."); the trainer's
phrasing rules and the user think in the first person ("I live in Oslo."). The rewrite itself
lives in memory.voice, shared with recall, so training data and recall never disagree on it.
"""
from __future__ import annotations

from memory.voice import first_person

__all__ = ["first_person"]
