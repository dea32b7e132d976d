"""Feedback and adapter registry operations for the CLI."""
from __future__ import annotations

import shutil
from pathlib import Path


def _ledger(home: Path):
    from memory.ledger import Ledger

    return Ledger(home)


def feedback_list(home: Path, kind: str | None = None, limit: int = 50):
    from memory.feedback import FeedbackLog

    return FeedbackLog(_ledger(home)).list(kind, limit)


def feedback_get(home: Path, fid: str):
    from memory.feedback import FeedbackLog

    return FeedbackLog(_ledger(home)).get(fid)


def feedback_remove(home: Path, fid: str):
    from memory.feedback import FeedbackLog

    return FeedbackLog(_ledger(home)).remove(fid)


def adapters_list(home: Path):
    from memory.adapters_ledger import AdapterLedger

    return AdapterLedger(_ledger(home)).list()


def adapter_get(home: Path, aid: str):
    from memory.adapters_ledger import AdapterLedger

    return AdapterLedger(_ledger(home)).get(aid)


def adapter_promote(home: Path, aid: str):
    from lora import load_adapter
    from memory.adapters_ledger import AdapterLedger

    from .errors import ReverieError

    led = AdapterLedger(_ledger(home))
    row = led.get(aid)
    if not Path(row.gguf).exists():
        raise ReverieError(f"{row.id}'s GGUF file {row.gguf} is missing; it cannot be promoted.")
    load_adapter(Path(row.path), base_model_sha256=row.base_sha256)  # validates, lists mismatches
    return led.promote(row.id)


def adapter_rollback(home: Path, model: str | None = None):
    """Promote the parent of the current adapter, or go back to the bare base model."""
    from memory.adapters_ledger import AdapterLedger
    from quant.registry import Registry

    from .errors import ReverieError

    name = Registry(home).get(model).name
    led = AdapterLedger(_ledger(home))
    cur = led.promoted(name)
    if cur is None:
        raise ReverieError(f"no promoted adapter for {name}; nothing to roll back.")
    if cur.parent:
        return led.promote(cur.parent)
    led.demote_all(name)
    return None


def adapter_diff(home: Path, a: str, b: str) -> dict:
    import json

    ra, rb = adapter_get(home, a), adapter_get(home, b)
    fa, fb = set(json.loads(ra.fact_ids)), set(json.loads(rb.fact_ids))
    ma, mb = json.loads(ra.metrics or "{}"), json.loads(rb.metrics or "{}")
    keys = ["personal_adapted", "general_adapted", "ppl_ratio", "kl_drift", "bwt"]
    return {"a": ra.id, "b": rb.id, "facts_only_in_a": sorted(fa - fb), "facts_only_in_b": sorted(fb - fa),
            "metrics": {k: [ma.get(k), mb.get(k)] for k in keys}}


def adapter_remove(home: Path, aid: str):
    from memory.adapters_ledger import AdapterLedger

    row = AdapterLedger(_ledger(home)).remove(aid)
    if row.path and Path(row.path).is_dir():
        shutil.rmtree(row.path, ignore_errors=True)
    return row
