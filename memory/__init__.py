"""reverie memory: the SQLite ledger (truth) plus a chromadb + FTS5 index with hybrid recall.

Facade: MemoryStore(home) — add_fact, observe_user_message, record_turn, recall, search, get,
list, edit, forget, history, export_jsonl, import_jsonl, import_locomo, reindex, stats,
active_facts, tombstoned_hashes. format_for_prompt renders recalled memories as quoted data.
Heavy libraries (chromadb, sentence-transformers) load on first use, not on import.
"""

from common.threads import passive_openmp as _passive_openmp

_passive_openmp()  # before torch or llama_cpp is imported (why: common/threads.py)
from .errors import MemoryStoreError
from .facts import ExtractedFact, extract_facts
from .recall import PROMPT_HEADER, Recalled, format_for_prompt

format_recalled = format_for_prompt  # the name assistant/services.py uses

from .store import ActiveFact, Memory, MemoryStore, text_hash  # noqa: E402

__all__ = ["ActiveFact", "ExtractedFact", "Memory", "MemoryStore", "MemoryStoreError",
           "PROMPT_HEADER", "Recalled", "extract_facts", "format_for_prompt", "format_recalled", "text_hash"]
