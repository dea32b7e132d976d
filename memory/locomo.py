"""Reading LoCoMo-format conversations (snap-research/LoCoMo) into episodic turns.

Owns: the file's shape (a list of samples with `conversation` {speaker_a, speaker_b,
session_N_date_time, session_N: [{speaker, dia_id, text, blip_caption?}]} and `qa`), session
dates, and validation with messages that say which sample/turn is wrong. Knows nothing about
storage; the store turns Episodes into memories.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .errors import MemoryStoreError

_SESSION = re.compile(r"^session_(\d+)$")


@dataclass
class Episode:
    conversation_id: str
    dia_id: str
    speaker: str
    text: str
    session: int
    session_time: str
    created: float


def parse_date(value: str) -> float | None:
    """LoCoMo session times look like "1:56 pm on 8 May, 2023"."""
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y"):
        try:
            return datetime.strptime(value.strip(), fmt).timestamp()
        except ValueError:
            continue
    return None


def load(path: Path) -> list[dict]:
    path = Path(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MemoryStoreError(f"{path} does not exist; check the path.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MemoryStoreError(f"{path} is not a LoCoMo JSON file ({e}).") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(s, dict) for s in data):
        raise MemoryStoreError(f"{path}: expected a JSON list of conversation samples.")
    return data


def episodes(sample: dict, index: int = 0, fallback_time: float = 0.0) -> list[Episode]:
    """All turns of one sample in session order; raises naming the sample and turn if malformed."""
    sid = sample.get("sample_id") or f"sample-{index}"
    conv = sample.get("conversation")
    if not isinstance(conv, dict):
        raise MemoryStoreError(f"sample {sid}: missing the 'conversation' object; is this LoCoMo?")
    sessions = sorted((int(m.group(1)), key) for key in conv if (m := _SESSION.match(key)))
    out: list[Episode] = []
    for n, key in sessions:
        turns = conv[key]
        if not isinstance(turns, list):
            raise MemoryStoreError(f"sample {sid}: {key} must be a list of turns.")
        when = str(conv.get(f"{key}_date_time") or "")
        base = parse_date(when) or fallback_time
        for j, turn in enumerate(turns):
            if not isinstance(turn, dict) or not all(
                    isinstance(turn.get(f), str) and turn.get(f) for f in ("speaker", "dia_id", "text")):
                raise MemoryStoreError(f"sample {sid} {key} turn {j}: needs non-empty string "
                                       "'speaker', 'dia_id' and 'text'.")
            text = turn["text"].strip()
            if isinstance(turn.get("blip_caption"), str) and turn["blip_caption"].strip():
                # The shared photo is part of what was said ("what did Melanie paint?").
                text += f" [shares a photo: {turn['blip_caption'].strip()}]"
            out.append(Episode(str(sid), turn["dia_id"], turn["speaker"], text, n, when,
                               base + j))  # +j seconds keeps turn order within a session
    if not out:
        raise MemoryStoreError(f"sample {sid}: no session_N turn lists found.")
    return out


_EVIDENCE_SEP = re.compile(r"[;,]\s*|\s+(?=D\d)")


def evidence_ids(evidence) -> list[str]:
    """A QA item's evidence turn ids. LoCoMo has entries holding two ids in one string
    ("D8:6; D9:17"): split, so each id can be found (unsplit, no turn has that id and the item
    scores 0 whatever recall returns)."""
    out: list[str] = []
    for entry in evidence or []:
        out += [e for e in _EVIDENCE_SEP.split(str(entry).strip()) if e and e not in out]
    return out


def qa_items(sample: dict, categories=(1, 2, 3, 4)) -> list[dict]:
    """The QA items of the given categories that have evidence, evidence ids split."""
    return [{**q, "evidence": evidence_ids(q["evidence"])} for q in sample.get("qa", [])
            if q.get("category") in categories and evidence_ids(q.get("evidence"))]
