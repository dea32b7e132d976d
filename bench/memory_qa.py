"""Memory-only personal accuracy: tell the assistant facts in chat, then ask about them in new
conversations, with memory recall as the only way to know (no adapter).

For each persona item ({"id","statement","questions","answer","aliases"}) the statement is sent
in one chat conversation (`session.send`, as a user would; `tell="remember"` uses /remember
instead). Then every held-out question is asked in a fresh conversation; an answer is correct
when it contains `answer` or an alias, case-insensitively. Question turns are not recorded as
memories, so items stay independent of the order they are asked in.

Variants change only what is recalled and how it is shown (ChatRecall policy, the worked
example in front of the memories); the facts are told once and shared by all variants.

Run: .venv/bin/python -m bench.memory_qa [FACTS] [--variants default,user_turn] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_FACTS = "/work/shared/data/persona-dev.jsonl"

# name -> (ChatRecall overrides, memory on, worked example in front of the memories)
VARIANTS: dict[str, tuple[dict, bool, bool]] = {
    "default": ({}, True, True),
    "no_memory": ({}, False, True),
    "no_example": ({}, True, False),
    "third_person": ({"style": "third"}, True, True),
    "ids": ({"ids": True}, True, True),
    "k1": ({"k": 1}, True, True),
    "k5": ({"k": 5}, True, True),
    "no_threshold": ({"min_cosine": -1.0, "max_gap": 9.0}, True, True),
    "no_episodic": ({"episodic": False}, True, True),
}


def load_items(path: Path) -> list[dict]:
    items = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rec = json.loads(line)
        missing = {"id", "statement", "questions", "answer"} - set(rec)
        if missing:
            raise ValueError(f"{path}:{n}: missing {', '.join(sorted(missing))}; each line needs "
                             "id, statement, questions and answer.")
        items.append(rec)
    return items


def is_correct(answer: str, rec: dict) -> bool:
    text = answer.lower()
    return any(a.lower() in text for a in [rec["answer"], *rec.get("aliases", [])])


def ask_all(session, items: list[dict], variant: str, log=None) -> dict:
    from memory.recall import ChatRecall

    overrides, memory_on, example = VARIANTS[variant]
    session.services.recall_policy = ChatRecall(**overrides)
    session.use_memory = memory_on
    session.memory_example = example
    per_item, prompt_tokens, ttft = [], [], []
    for rec in items:
        answers = []
        for q in rec["questions"]:
            session.new()
            r = session.send(q)
            ok = is_correct(r.answer, rec)
            answers.append({"question": q, "answer": r.answer, "correct": ok,
                            "recalled": [getattr(m, "text", m) for m in r.recalled],
                            "prompt_tokens": r.prompt_tokens, "ttft_s": round(r.ttft_s, 4)})
            prompt_tokens.append(r.prompt_tokens)
            ttft.append(r.ttft_s)
        n_ok = sum(a["correct"] for a in answers)
        per_item.append({"id": rec["id"], "answer": rec["answer"], "correct": n_ok,
                         "asked": len(answers), "answers": answers})
        if log:
            log(f"{variant} {rec['id']}: {n_ok}/{len(answers)}")
    asked = sum(p["asked"] for p in per_item)
    return {"variant": variant, "policy": overrides, "memory": memory_on, "example": example,
            "accuracy": sum(p["correct"] for p in per_item) / asked if asked else 0.0,
            "asked": asked, "prompt_tokens_mean": statistics.mean(prompt_tokens) if asked else 0,
            "ttft_s_median": statistics.median(ttft) if asked else 0, "items": per_item}


def run(facts_path=DEFAULT_FACTS, model: str | None = None, backend: str = "llama.cpp",
        variants: list[str] | tuple[str, ...] = ("default",), tell: str = "chat",
        limit: int | None = None, max_tokens: int = 32, home: Path | None = None,
        log=None) -> dict:
    """Tell every fact once, then score each variant. Returns the first variant's numbers at the
    top level (accuracy, items, prompt_tokens_mean, ttft_s_median) and all under "variants"."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if tell not in ("chat", "remember", "both"):
        raise ValueError(f"tell must be chat, remember or both, got {tell!r}")
    items = load_items(Path(facts_path))[:limit]
    home = Path(home or tempfile.mkdtemp(prefix="reverie-memqa-"))
    from assistant.chat import ChatSession

    session = ChatSession(home, model=model, backend=backend, use_memory=True,
                               use_adapter=False, max_tokens=max_tokens)
    t0 = time.perf_counter()
    try:
        for rec in items:
            if tell in ("chat", "both"):
                session.send(rec["statement"])
            if tell in ("remember", "both"):
                session.command(f"/remember {rec['statement']}")
        told_s = time.perf_counter() - t0
        # Questions are not remembered: each one is scored against the told facts alone.
        session.services.after_turn = lambda *a, **k: None
        results = [ask_all(session, items, v, log) for v in variants]
    finally:
        session.close()
    first = results[0]
    return {"facts": str(facts_path), "model": session.runtime.model.name, "backend": backend,
            "tell": tell, "n_facts": len(items), "told_s": round(told_s, 2),
            "accuracy": first["accuracy"], "prompt_tokens_mean": first["prompt_tokens_mean"],
            "ttft_s_median": first["ttft_s_median"], "items": first["items"],
            "variants": {r["variant"]: r for r in results},
            "summary": {r["variant"]: round(r["accuracy"], 3) for r in results}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("facts", nargs="?", default=DEFAULT_FACTS)
    p.add_argument("--model", default=None)
    p.add_argument("--backend", default="llama.cpp")
    p.add_argument("--variants", default="default")
    p.add_argument("--tell", default="chat", choices=["chat", "remember", "both"])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--brief", action="store_true", help="omit per-answer details")
    a = p.parse_args(argv)
    out = run(a.facts, a.model, a.backend, a.variants.split(","), a.tell, a.limit, a.max_tokens,
              log=lambda m: print(m, file=sys.stderr, flush=True))
    if a.brief:
        out.pop("items")
        for v in out["variants"].values():
            v["items"] = [{k: i[k] for k in ("id", "correct", "asked")} for i in v["items"]]
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
