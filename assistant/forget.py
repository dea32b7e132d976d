"""Forget that reaches everything: the ledger, the index, every adapter version and every file.

Owns `reverie memory forget` and chat's `/forget`: the ledger rows (memory.forgetting), the vector
index entries, the adapter versions trained on the text (withdrawn at once: their files deleted,
the newest clean version served, or none), every other file under the data dir that mentions it
(reports, caches, checkpoints), and the SQLite file itself (secure delete, VACUUM, WAL truncated).
A forget takes the sleep lock, so it never runs beside a training that may be reading the text.
`leaked_files` is the check: no file under the data dir may still hold the text, as bytes.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from .errors import ReverieError

# Files whose text is rewritten: JSON lines lose the lines that state the text, other text files
# get it replaced. Anything else (weights, SQLite, chromadb's binaries) is handled by its owner.
_LINE_FILES = (".jsonl",)
_TEXT_FILES = (".json", ".md", ".txt", ".csv", ".log", ".yaml", ".yml", ".tsv")
_CHUNK = 1 << 22


def _needles_in(data: bytes, needles: list[bytes]) -> bool:
    low = data.lower()
    return any(n in low for n in needles)


def file_mentions(path: Path, texts: list[str]) -> bool:
    """Does `path` contain any of `texts` as bytes (UTF-8, case-insensitive)?"""
    needles = [t.lower().encode("utf-8") for t in texts if t]
    if not needles:
        return False
    overlap = max(len(n) for n in needles)
    tail = b""
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    return False
                if _needles_in(tail + chunk, needles):
                    return True
                tail = chunk[-overlap:]
    except OSError:
        return False


def leaked_files(home: Path, texts: list[str]) -> list[str]:
    """Every file under `home` that still contains one of `texts` (bytes, case-insensitive)."""
    home = Path(home)
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and not p.is_symlink() and file_mentions(p, texts))


def _scrub_file(path: Path, texts: list[str]) -> bool:
    """Rewrite one text file without `texts`; returns whether it changed."""
    from common.files import atomic_write_text

    try:
        raw = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return False
    from memory.forgetting import decollide

    pats = [re.compile(re.escape(t), re.IGNORECASE) for t in texts]
    if not any(p.search(raw) for p in pats):
        return False
    for t in texts:  # numbers that merely contain a forgotten number are nudged, not dropped
        raw = decollide(raw, t)
    if path.suffix in _LINE_FILES:
        new = "".join(line for line in raw.splitlines(keepends=True)
                      if not any(p.search(line) for p in pats))
    else:
        from memory.forgetting import REDACTED, drop_mentions

        new = drop_mentions(raw, texts) if path.suffix == ".json" else raw
        for p in pats:
            new = p.sub(REDACTED, new)
    atomic_write_text(path, new, mode=path.stat().st_mode & 0o777)
    return True


def scrub_files(home: Path, texts: list[str], skip: tuple[Path, ...] = ()) -> list[str]:
    """Remove `texts` from every text file under `home` (see _LINE_FILES / _TEXT_FILES)."""
    home = Path(home)
    changed = []
    for p in home.rglob("*"):
        if (not p.is_file() or p.is_symlink() or p.suffix not in _LINE_FILES + _TEXT_FILES
                or any(s in p.parents for s in skip)):
            continue
        if _scrub_file(p, texts):
            changed.append(str(p.relative_to(home)))
    return sorted(changed)


def _adapters_that_saw(adapters, plan, texts: list[str]) -> list:
    mem_ids = {m["id"] for m in plan.memories}
    fb_ids = {f["id"] for f in plan.feedback}
    saw = []
    import json

    for row in adapters.list():
        if row.status == "withdrawn":
            continue
        ids = set(json.loads(row.fact_ids or "[]")) | set(json.loads(row.feedback_ids or "[]"))
        d = Path(row.path) if row.path else None
        trained_on = bool(ids & (mem_ids | fb_ids))
        if not trained_on and d is not None and d.is_dir():
            trained_on = any(file_mentions(p, texts) for p in d.rglob("*")
                             if p.is_file() and p.suffix in _LINE_FILES + _TEXT_FILES)
        if trained_on:
            saw.append(row)
    return saw


def _withdraw(home: Path, adapters, rows: list) -> dict:
    """Withdraw adapter versions: files deleted, merged models made from them removed, and for
    each model whose promoted version went, the newest clean version that was once promoted is
    served again (or none). Returns {model: serving id or ""} for the models that changed."""
    from quant.registry import Registry

    serving: dict[str, str] = {}
    registry = Registry(home)
    for row in rows:
        was_promoted = row.status == "promoted"
        adapters.set_status(row.id, "withdrawn")
        if row.path and Path(row.path).is_dir():
            shutil.rmtree(row.path, ignore_errors=True)
        for work in (Path(home) / "work").glob(f"{row.id}*"):
            shutil.rmtree(work, ignore_errors=True)
        for name in registry.names():
            if name.startswith(f"{row.model}-{row.id}"):
                try:
                    registry.remove(name)
                except Exception:  # noqa: BLE001 - a merged model that is already gone
                    pass
        if was_promoted:
            serving[row.model] = ""
    for model in serving:
        clean = [r for r in adapters.list(model) if r.status == "retired" and r.promoted
                 and r.gguf and Path(r.gguf).exists()]
        if clean:
            adapters.promote(clean[-1].id)
            serving[model] = clean[-1].id
    return serving


def _compact(db) -> bool:
    """Zero what the deletes left in the ledger file and empty the WAL. False when another
    process's open read kept the WAL from being truncated (it is then emptied at its next
    checkpoint; the deleted rows are already zeroed in the database file)."""
    import sqlite3

    try:
        db.execute("VACUUM")
    except sqlite3.OperationalError:
        pass  # another connection is mid-transaction; secure_delete already zeroed the rows
    busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0


def _describe(text: str, plan, withdrawn: list, serving: dict, applied: bool) -> str:
    c = plan.counts()
    parts = [f"{c['memories']} memor{'y' if c['memories'] == 1 else 'ies'}",
             f"{c['turns']} conversation turn{'' if c['turns'] == 1 else 's'}",
             f"{c['feedback']} feedback item{'' if c['feedback'] == 1 else 's'}"]
    verb = "forgot" if applied else "would forget"
    msg = f"{verb} {text!r}: " + ", ".join(parts)
    if withdrawn:
        ids = ", ".join(r.id for r in withdrawn)
        msg += f"; adapter version{'s' if len(withdrawn) > 1 else ''} {ids} trained on it " + (
            "withdrawn" if applied else "would be withdrawn")
        for model, sid in serving.items():
            msg += f"; {model} now serves {sid or 'no adapter (the base model)'}"
        if applied:
            msg += "; the next `reverie sleep` retrains without it"
    return msg + "."


def forget_matching(home: Path, text: str, apply: bool = False, ledger=None,
                    memory_ids: tuple[str, ...] = (), facts: bool = True,
                    check: tuple[str, ...] = ()) -> dict:
    """Forget everything that states `text` (case-insensitive). apply=False only previews.

    Returns {"text", "applied", "memories", "turns", "feedback", "adapters_withdrawn",
    "serving", "files_scrubbed", "still_on_disk", "summary"}."""
    from memory import MemoryStore, MemoryStoreError, text_hash
    from memory import forgetting
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger

    from .sleep import sleep_lock

    home = Path(home)
    try:
        needle = forgetting.check_needle(text)
    except MemoryStoreError as e:
        raise ReverieError(str(e)) from None
    own = ledger is None
    ledger = ledger or Ledger(home)
    try:
        store = MemoryStore(home, ledger)
        adapters = AdapterLedger(ledger)
        p = forgetting.plan(ledger.db, [needle], memory_ids, facts=facts)
        saw = _adapters_that_saw(adapters, p, [needle])
        res = {"text": needle, "applied": False, **p.to_dict(),
               "adapters_withdrawn": [r.id for r in saw], "serving": {}, "files_scrubbed": [],
               "still_on_disk": []}
        if not apply or (p.empty and not saw and not leaked_files(home, [needle])):
            res["summary"] = (_describe(needle, p, saw, {}, False) if not p.empty or saw
                              else f"nothing matches {needle!r}; nothing changed.")
            return res
        try:
            lock = sleep_lock(home)
            lock.__enter__()
        except ReverieError as e:
            raise ReverieError(f"{e} It may be training on this text: run the forget again when "
                               "it has finished (nothing was forgotten).") from None
        try:
            forgetting.apply(ledger.db, p, text_hash)
            store.vectors.delete([m["id"] for m in p.memories])
            serving = _withdraw(home, adapters, saw)
            res["files_scrubbed"] = scrub_files(home, [needle])
            forgetting.scrub_ledger(ledger.db, [needle])  # rows the withdrawal just wrote
            _compact(ledger.db)
        finally:
            lock.__exit__(None, None, None)
        res.update(applied=True, serving=serving,
                   still_on_disk=leaked_files(home, list(check) or [needle]))
        res["summary"] = _describe(needle, p, saw, serving, True)
        if res["still_on_disk"]:
            res["summary"] += (" Still mentioned in: " + ", ".join(res["still_on_disk"]) +
                               " (by what is kept: another memory that states it — see `reverie "
                               "memory search` — or a database another process holds open; "
                               "forget again with --matching once it has closed).")
        return res
    finally:
        if own:
            ledger.close()


def forget_memory(home: Path, memory_id: str, ledger=None) -> dict:
    """Forget one memory by id, with the turns it was said in, their feedback, and the training
    examples and turns that state its value (other facts that mention the value are kept)."""
    from memory import MemoryStore, MemoryStoreError
    from memory.facts import subject_of
    from memory.ledger import Ledger

    own = ledger is None
    ledger = ledger or Ledger(Path(home))
    try:
        try:
            m = MemoryStore(Path(home), ledger).get(memory_id)
        except MemoryStoreError as e:
            raise ReverieError(str(e)) from None
        value = subject_of(m.text)[1] if m.kind == "fact" else None
        needle = value if value and len(value) >= 3 else m.text
        # other facts may still state the value; what must be gone is this memory's text
        res = forget_matching(home, needle, apply=True, ledger=ledger, memory_ids=(m.id,),
                              facts=False, check=(m.text,))
        res["memory"] = {**m.to_dict(), "status": "forgotten"}
        return res
    finally:
        if own:
            ledger.close()
