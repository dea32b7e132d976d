"""The JSONL export format of memories, and validation of a file before anything is imported.

Owns: the record shape (one memory per line, its history inline) and every check an import
makes, so the store can write a validated file in one transaction or not at all. Each error
names the line and the reason.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import MemoryStoreError

KINDS = ("episodic", "fact", "preference")
STATUSES = ("active", "superseded", "forgotten")
FORMAT_VERSION = 1
_ID = re.compile(r"^m_[0-9a-z_-]{4,64}$")
_FIELDS = {"id": str, "kind": str, "text": str, "subject": (str, type(None)), "status": str,
           "created": (int, float), "updated": (int, float), "source": dict, "history": list}
_HISTORY_FIELDS = {"text": str, "subject": (str, type(None)), "status": str,
                   "changed": (int, float), "reason": str}


def record_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def _check_fields(obj: dict, spec: dict, where: str) -> None:
    missing = [k for k in spec if k not in obj]
    if missing:
        raise MemoryStoreError(f"{where}: missing field(s) {', '.join(missing)}; every record "
                               "needs " + ", ".join(spec) + " (as written by `reverie memory export`).")
    unknown = sorted(set(obj) - set(spec))
    if unknown:
        raise MemoryStoreError(f"{where}: unknown field(s) {', '.join(unknown)}; remove them.")
    for key, types in spec.items():
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise MemoryStoreError(f"{where}: field {key!r} has the wrong type "
                                   f"({type(value).__name__}); fix the value.")


def validate_record(obj, lineno: int) -> dict:
    where = f"line {lineno}"
    if not isinstance(obj, dict):
        raise MemoryStoreError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
    _check_fields(obj, _FIELDS, where)
    if not _ID.match(obj["id"]):
        raise MemoryStoreError(f"{where}: id {obj['id']!r} is not a memory id (m_ followed by "
                               "letters, digits, '_' or '-').")
    if obj["kind"] not in KINDS:
        raise MemoryStoreError(f"{where}: kind {obj['kind']!r} must be one of {', '.join(KINDS)}.")
    if obj["status"] not in ("active", "superseded"):
        raise MemoryStoreError(f"{where}: status {obj['status']!r} cannot be imported; use active "
                               "or superseded (forgotten memories are never exported).")
    if not obj["text"].strip():
        raise MemoryStoreError(f"{where}: text is empty; give the memory some text.")
    for j, h in enumerate(obj["history"]):
        if not isinstance(h, dict):
            raise MemoryStoreError(f"{where}: history[{j}] must be an object.")
        _check_fields(h, _HISTORY_FIELDS, f"{where} history[{j}]")
        if h["status"] not in STATUSES:
            raise MemoryStoreError(f"{where} history[{j}]: unknown status {h['status']!r}.")
    return obj


def read_records(path: Path) -> list[dict]:
    """Every record of an export file, validated; raises on the first bad line, naming it."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MemoryStoreError(f"{path} does not exist; check the path.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MemoryStoreError(f"cannot read {path}: {e}; is it a JSONL export?") from None
    records: list[dict] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MemoryStoreError(f"line {lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                                   "each line must be one JSON object.") from None
        rec = validate_record(obj, lineno)
        if rec["id"] in seen:
            raise MemoryStoreError(f"line {lineno}: id {rec['id']} already appeared on line "
                                   f"{seen[rec['id']]}; remove the duplicate.")
        seen[rec["id"]] = lineno
        records.append(rec)
    return records
