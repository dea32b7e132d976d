"""`reverie eval --scenario FILE`: the product used the way a person uses it, scored at the end.

Owns: the scenario file format (`load_scenario` validates every line), scoring one probe answer
(`score`), hiding forgotten texts in what is printed or written (`redact`), and running a scenario
(`run_scenario`) in an isolated data dir: each day's chat through ChatSession, nights through
`sleep`, forgets through assistant.forget, then every probe asked in four arms (base, memory,
adapter, adapter+memory), each in a fresh conversation that records nothing.
Does not know how sleep trains, how forget deletes, or how the report looks (assistant.report).

File format, one JSON object a line — events first, in order, then probes:
  {"day": 1, "say": "I live in Leeds."}          a chat line (slash commands too); one chat a day
  {"day": 1, "sleep": true}                      the nightly `reverie sleep`
  {"day": 2, "forget": "Leeds"}                  `reverie memory forget --matching TEXT --yes`
  {"probe": "Where do I live?", "expect": ["Leeds"], "forbid": ["York"]}
"""
from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import ReverieError

Log = Callable[[str], None]
EVENT_KINDS = ("say", "sleep", "forget")
PROBE_KEYS = ("probe", "expect", "forbid")
# The first of these that contains no forgotten text replaces one in reports and JSON.
MARKS = ("[forgotten]", "[redacted]", "[...]")
FORMAT = ('Events are {"day": int >= 1, "say": str} | {"day": int, "sleep": true} | '
          '{"day": int, "forget": str}; probes, after all events, are '
          '{"probe": str, "expect": [str, ...], "forbid": [str, ...]}.')


@dataclass(frozen=True)
class Event:
    day: int
    kind: str  # say | sleep | forget
    text: str = ""
    line: int = 0


@dataclass(frozen=True)
class ScenarioProbe:
    question: str
    expect: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class Scenario:
    path: str
    events: tuple[Event, ...]
    probes: tuple[ScenarioProbe, ...]

    @property
    def forgotten(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.text for e in self.events if e.kind == "forget"))

    @property
    def days(self) -> list[int]:
        return sorted({e.day for e in self.events})


# --- loading -------------------------------------------------------------------------------

def _bad(path: Path, lineno: int, what: str, fix: str = FORMAT) -> ReverieError:
    return ReverieError(f"{path}:{lineno}: {what}. {fix}")


def _text(path, lineno, obj, key) -> str:
    v = obj[key]
    if not isinstance(v, str) or not v.strip():
        raise _bad(path, lineno, f"{key!r} must be a non-empty string, got {v!r}")
    return v.strip()


def _strings(path, lineno, obj, key) -> tuple[str, ...]:
    v = obj.get(key, [])
    if not isinstance(v, list) or not all(isinstance(s, str) and s.strip() for s in v):
        raise _bad(path, lineno, f"{key!r} must be a list of non-empty strings, got {v!r}",
                   f'Write it like "{key}": ["Leeds"], or [] for none.')
    return tuple(s.strip() for s in v)


def _event(path: Path, lineno: int, obj: dict, last_day: int) -> Event:
    kinds = [k for k in EVENT_KINDS if k in obj]
    unknown = sorted(set(obj) - {"day", *EVENT_KINDS})
    if unknown:
        raise _bad(path, lineno, f"unknown key(s) {', '.join(map(repr, unknown))}")
    if len(kinds) != 1:
        what = "no event type" if not kinds else f"more than one event type ({', '.join(kinds)})"
        raise _bad(path, lineno, f"{what}: an event has exactly one of say, sleep, forget")
    kind = kinds[0]
    if "day" not in obj:
        raise _bad(path, lineno, f"the {kind} event has no 'day'",
                   f'Add the day it happens on, e.g. {{"day": 1, "{kind}": ...}}.')
    day = obj["day"]
    if not isinstance(day, int) or isinstance(day, bool) or day < 1:
        raise _bad(path, lineno, f"'day' must be a whole number >= 1, got {day!r}",
                   'Write it without quotes, e.g. "day": 2.')
    if day < last_day:
        raise _bad(path, lineno, f"day {day} comes after day {last_day}",
                   "Events run in file order: keep the days in non-decreasing order.")
    if kind == "sleep":
        if obj["sleep"] is not True:
            raise _bad(path, lineno, f"'sleep' must be true, got {obj['sleep']!r}",
                       'Write {"day": N, "sleep": true}, or leave the line out.')
        return Event(day, "sleep", "", lineno)
    return Event(day, kind, _text(path, lineno, obj, kind), lineno)


def _probe(path: Path, lineno: int, obj: dict) -> ScenarioProbe:
    unknown = sorted(set(obj) - set(PROBE_KEYS))
    if unknown:
        extra = " (probes have no day: they are asked after the last event)" if "day" in unknown else ""
        raise _bad(path, lineno, f"unknown key(s) {', '.join(map(repr, unknown))} in a probe{extra}")
    if "probe" not in obj:
        raise _bad(path, lineno, "this line has expect/forbid but no 'probe' question",
                   'Add the question, e.g. {"probe": "Where do I live?", "expect": ["Leeds"]}.')
    p = ScenarioProbe(_text(path, lineno, obj, "probe"), _strings(path, lineno, obj, "expect"),
                      _strings(path, lineno, obj, "forbid"), lineno)
    if not p.expect and not p.forbid:
        raise _bad(path, lineno, "the probe has neither 'expect' nor 'forbid', so it always passes",
                   "Give the answer's aliases in expect, or texts it must not say in forbid.")
    return p


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario; a bad line is a ReverieError naming the file, the line and
    how to fix it."""
    from .probes import read_jsonl

    path = Path(path)
    events: list[Event] = []
    probes: list[ScenarioProbe] = []
    for lineno, obj in read_jsonl(path, "scenario file"):
        if any(k in obj for k in PROBE_KEYS):
            probes.append(_probe(path, lineno, obj))
        elif probes:
            raise _bad(path, lineno, "an event after the probes",
                       "Probes are asked after the last event: move every event above the first probe.")
        else:
            events.append(_event(path, lineno, obj, events[-1].day if events else 1))
    if not probes:
        raise ReverieError(f"{path} has no probes; add at least one line like "
                           '{"probe": "Where do I live?", "expect": ["Leeds"], "forbid": []} '
                           "after the events.")
    return Scenario(str(path), tuple(events), tuple(probes))


# --- scoring and redaction -------------------------------------------------------------------

def _has(text: str, needle: str) -> bool:
    return bool(needle) and needle.casefold() in (text or "").casefold()


def score(answer: str, expect: Sequence[str] = (), forbid: Sequence[str] = ()) -> bool:
    """A probe passes when the answer contains one expect alias (an empty list always matches)
    and no forbid string, both case-insensitively."""
    return (not expect or any(_has(answer, e) for e in expect)) and not any(_has(answer, f) for f in forbid)


def leaks(answer: str, forgotten: Sequence[str]) -> bool:
    """Whether the answer says any text a forget event named (case-insensitive)."""
    return any(_has(answer, t) for t in forgotten)


def redact(obj, forgotten: Sequence[str]):
    """obj (a string, or a dict/list of them) with every forgotten text replaced, case-insensitively,
    so printing or writing it never puts a forgotten text back. Scores use the raw answers."""
    texts = sorted({t for t in forgotten if t}, key=len, reverse=True)
    if not texts:
        return obj
    # a mark that itself contains a forgotten text ("forgot") would write it back
    mark = next((m for m in MARKS if not leaks(m, texts)), "")
    return _redact(obj, texts, mark)


def _redact(obj, texts: list[str], mark: str):
    if isinstance(obj, dict):
        return {_redact(k, texts, mark): _redact(v, texts, mark) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact(v, texts, mark) for v in obj]
    if not isinstance(obj, str):
        return obj
    s = obj
    for repl in (mark, ""):  # the mark next to the text around it could spell one again; then delete
        for _ in range(8):
            if not leaks(s, texts):
                return s
            before = s
            for t in texts:
                s = re.sub(re.escape(t), repl, s, flags=re.IGNORECASE)
            if s == before:
                break  # a case folding re cannot match (e.g. "ß" vs "SS"): mask below
    return s if not leaks(s, texts) else mark


# --- running ---------------------------------------------------------------------------------

def _arm_flags(arm: str) -> tuple[bool, bool]:
    return "memory" in arm, arm.startswith("adapter")


def run_scenario(path: Path | str, home: Path | None = None, log: Log = print, steps: int = 0,
                 on_train=None, out_dir: Path | None = None, learning_rate: float = 0.0) -> dict:
    """Run the scenario's events in order, then ask its probes in the four arms. Returns the
    results (forgotten texts redacted), with the report written under `<home>/reports/`."""
    from .chat import ChatSession
    from .evaluate import ARMS
    from .sleep import nightly_options
    from .sleep import run_sleep

    t0 = time.time()
    sc = load_scenario(path)
    # the data dir is passed to everything explicitly; the environment is never touched
    home = Path(home) if home else Path(tempfile.mkdtemp(prefix="reverie-scenario-"))
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    questions = tuple(p.question for p in sc.probes)
    forgotten = sc.forgotten
    log(f"scenario {sc.path}: {len(sc.events)} events over {len(sc.days)} day(s), "
        f"{len(sc.probes)} probes; data dir {home}")

    days: list[dict] = []
    sleeps: list[dict] = []
    forgets: list[dict] = []
    session, day = None, None
    try:
        for ev in sc.events:
            if ev.day != day:
                if session is not None:
                    session.close()
                    session = None
                day = ev.day
                days.append({"day": day, "turns": []})
            if ev.kind == "say":
                if session is None:  # each day is a new conversation
                    session = ChatSession(home, backend="llama.cpp", use_memory=True, use_adapter=True)
                if ev.text.startswith("/"):
                    r = session.command(ev.text)
                    reply = r.output
                else:
                    reply = session.send(ev.text).answer
                days[-1]["turns"].append({"say": ev.text, "reply": reply})
            elif ev.kind == "sleep":
                log(f"day {ev.day}: sleep")
                opts = nightly_options(questions, steps=steps, learning_rate=learning_rate)
                out = run_sleep(home, opts, log=log, on_train=on_train)
                gate = out.gate or {}
                sleeps.append({"day": ev.day, "status": out.status, "message": out.message,
                               "adapter": out.adapter_id,
                               "gate": {"passed": gate.get("passed"), "reasons": gate.get("reasons", [])}
                               if gate else None, "seconds": round(out.seconds, 1)})
                log(f"day {ev.day}: sleep → {out.status}: {redact(out.message, forgotten)}")
            else:
                from .forget import forget_matching  # lazily: forget's own module owns the how

                res = forget_matching(home, ev.text, apply=True)
                forgets.append({"day": ev.day, "text": ev.text, "result": res})
                log(f"day {ev.day}: forget [{len(forgets)}]")
    finally:
        if session is not None:
            session.close()

    probes = [{"question": p.question, "expect": list(p.expect), "forbid": list(p.forbid),
               "answers": {}} for p in sc.probes]
    arms: dict[str, dict] = {}
    served = None
    for arm in ARMS:
        use_memory, use_adapter = _arm_flags(arm)
        s = ChatSession(home, backend="llama.cpp", use_memory=use_memory, use_adapter=use_adapter,
                        record=False)
        try:
            adapter = s.served.file if use_adapter and s.served else None
            if use_adapter:
                served = adapter
            twin = arm.replace("adapter+", "").replace("adapter", "base") if use_adapter else None
            log(f"probing {arm} ({len(probes)} probes)")
            for p in probes:
                if use_adapter and adapter is None:
                    # no promoted adapter: this arm is its twin, and greedy decoding says the same
                    answer = p["answers"][twin]["answer"]
                else:
                    s.new()  # each probe is a fresh conversation
                    answer = s.send(p["question"]).answer
                p["answers"][arm] = {"answer": answer, "passed": score(answer, p["expect"], p["forbid"]),
                                     "leak": leaks(answer, forgotten)}
        finally:
            s.close()
        n = len(probes)
        passed = sum(p["answers"][arm]["passed"] for p in probes)
        arms[arm] = {"scenario_acc": passed / n, "passed": passed, "probes": n,
                     "leaks": sum(p["answers"][arm]["leak"] for p in probes),
                     "memory": use_memory, "adapter": adapter,
                     **({"same_as": twin} if use_adapter and adapter is None else {})}

    from memory import MemoryStore

    from .forget import leaked_files

    store = MemoryStore(home)
    try:
        st = store.stats()
    finally:
        store.close()
    by_kind: dict[str, int] = {}
    for ks, n in st["by_kind_status"].items():
        kind, _, status = ks.partition("/")
        if status == "active":
            by_kind[kind] = by_kind.get(kind, 0) + n
    memories = {"by_kind": by_kind, "by_kind_status": st["by_kind_status"], "total": st["memories"],
                "tombstones": st["tombstones"]}
    # measured before the report exists, and the report is redacted, so it never adds a leak
    data_leaks = leaked_files(home, list(forgotten)) if forgotten else []
    results = {
        "scenario": sc.path, "data_dir": str(home), "days": len(sc.days),
        "events": {k: sum(e.kind == k for e in sc.events) for k in EVENT_KINDS},
        "arms": arms, "data_leaks": data_leaks, "memories": memories,
        "adapter": {"served": served,
                    "note": "" if served else "no adapter was promoted: the adapter arms are the "
                                              "base model (their answers are base's and memory's)"},
        "sleeps": sleeps, "forgets": forgets, "forgotten": len(forgotten), "probes": probes,
        "conversation": days, "seconds": round(time.time() - t0, 1),
    }
    results = redact(results, forgotten)
    from .report import write_scenario_report

    out_dir = Path(out_dir or home / "reports" / f"scenario-{time.strftime('%Y%m%d-%H%M%S')}")
    results["report_dir"] = str(out_dir)
    results["report_path"] = str(out_dir / "report.md")
    write_scenario_report(results, out_dir)
    return results


__all__ = ["Event", "Scenario", "ScenarioProbe", "leaks", "load_scenario", "redact", "run_scenario",
           "score"]
