"""`reverie eval --preferences FILE`: does the assistant answer the way the user asked to be
answered — from memory (the preferences in context), from the adapter (the habits in the
weights), or both?

Owns the habit experiment: in an isolated data dir, on each preference's night the user states it
in chat and `/fix`es the answer to each of its demo prompts with the demo answer; `sleep` runs;
then every probe of the preferences stated so far is asked in the four arms — base, memory,
adapter, adapter+memory — in a fresh conversation with the chat's own sampling and an answer
budget of 160 tokens, and scored by assistant.habits.follows.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

ARMS = (("base", False, False), ("memory", True, False), ("adapter", False, True),
        ("adapter+memory", True, True))
MAX_TOKENS = 160
Log = Callable[[str], None]


def tell_habits(session, habits) -> None:
    """What a user does to teach a habit: say it, then correct answers to show it."""
    for h in habits:
        session.new()
        session.send(h.statement)
        for prompt, answer in h.demos:
            session.send(prompt)
            session.command(f"/fix {answer}")


def serve_anyway(home: Path, adapter_id: str) -> None:
    """An experiment measures what training did: a candidate the gate rejected is served for the
    night's scoring all the same (chat serves the promoted adapter), and the report says so."""
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger

    ledger = Ledger(home)
    try:
        AdapterLedger(ledger).promote(adapter_id)
    finally:
        ledger.close()


def superseded(habits) -> dict[str, str]:
    """{older habit id: the newer habit id that replaced it}, by the product's own rule
    (memory.preferences: one opening, one sign-off, one form of address, one length rule at a
    time; the newer one wins). A replaced habit's probes are no longer expected to be followed."""
    from memory.preferences import extract_preferences

    owner: dict[str, str] = {}
    out: dict[str, str] = {}
    for h in sorted(habits, key=lambda h: h.night):  # stable: file order within a night
        for p in extract_preferences(h.statement):
            if owner.get(p.subject, h.id) != h.id:
                out[owner[p.subject]] = h.id
            owner[p.subject] = h.id
    return out


def score_preferences(home: Path, taught, night: int, log: Log) -> dict:
    """Every probe of the habits taught so far (those a newer habit replaced excepted), asked in
    a fresh chat in each of the four arms with the chat's own sampling; {arm: {preference_acc,
    per_preference rows with an example answer, adapter}}."""
    from .chat import ChatSession
    from .habits import follows

    gone = superseded(taught)
    live = [h for h in taught if h.id not in gone]
    arms = {}
    for arm, memory, adapter in ARMS:
        s = ChatSession(home, backend="llama.cpp", use_memory=memory, use_adapter=adapter,
                        max_tokens=MAX_TOKENS, record=False)
        try:
            rows = {}
            for h in live:
                answers = []
                for p in h.probes:
                    s.new()
                    answers.append(s.send(p.prompt).answer)
                rows[h.id] = {"followed": sum(follows(a, p) for a, p in zip(answers, h.probes)),
                              "probes": len(h.probes), "example": answers[0]}
            for old, new in gone.items():
                rows[old] = {"followed": 0, "probes": 0, "superseded_by": new}
            n = sum(r["probes"] for r in rows.values())
            arms[arm] = {"preference_acc": sum(r["followed"] for r in rows.values()) / n if n else 0.0,
                         "per_preference": rows,
                         "adapter": s.served.file if adapter and s.served else None}
        finally:
            s.close()
        log(f"night {night}: {arm} preference_acc {arms[arm]['preference_acc']:.3f}")
    return arms


def run_habits(path: Path | str, nights: int | None = None, home: Path | None = None,
               log: Log = print, steps: int = 0, on_train=None, learning_rate: float = 0.0) -> dict:
    from .chat import ChatSession
    from .habits import load_habits
    from .sleep import nightly_options, run_sleep

    habits = load_habits(path)
    last = max(h.night for h in habits)
    nights = nights or last
    home = Path(home or tempfile.mkdtemp(prefix="reverie-habits-"))
    probes = [p.prompt for h in habits for p in h.probes]
    log(f"isolated data dir {home}; {len(habits)} preferences over {nights} night(s)")
    t0 = time.time()
    per_night, sleeps = [], []
    for night in range(1, nights + 1):
        tonight = [h for h in habits if h.night == night]
        s = ChatSession(home, backend="llama.cpp", use_memory=True, use_adapter=True,
                        max_tokens=MAX_TOKENS)
        try:
            tell_habits(s, tonight)
        finally:
            s.close()
        log(f"night {night}: {len(tonight)} preferences stated, "
            f"{sum(len(h.demos) for h in tonight)} answers corrected; sleeping")
        out = run_sleep(home, nightly_options(probes, steps=steps, force=True,
                                              learning_rate=learning_rate),
                        log=log, on_train=on_train)
        sleeps.append({"night": night, "status": out.status, "message": out.message,
                       "style": out.dataset.get("style"), "gate": out.gate})
        if out.status == "rejected":
            serve_anyway(home, out.adapter_id)
            sleeps[-1]["served_anyway"] = True
        log(f"night {night}: sleep → {out.message}")
        arms = score_preferences(home, [h for h in habits if h.night <= night], night, log)
        per_night.append({"night": night, "arms": arms})
    final = per_night[-1]["arms"]
    return {"arms": {a: {"preference_acc": v["preference_acc"]} for a, v in final.items()},
            "per_night": per_night, "sleeps": sleeps, "data_dir": str(home),
            "superseded": superseded([h for h in habits if h.night <= nights]),
            "n_preferences": len([h for h in habits if h.night <= nights]),
            "seconds": round(time.time() - t0, 1)}
