"""Chat sampling: do answers end, or loop until max_tokens? The old chat decode (greedy, no
repetition penalty, no loop stop) against the chat's settings now (Settings defaults: greedy with
repeat_penalty and the loop stop), in one run, on a fixed set of ordinary chat prompts.

Every answer takes the steps ChatSession.send takes to answer (build_messages -> format_chat ->
Settings.generation_config -> Runtime.stream -> GenerationStats.trimmed, the answer the chat
stores) on the default model with llama.cpp; memory recall and the ledger write are left out, they
are not what is measured. Configs alternate per prompt so neither always runs on a warmer machine.

Run: .venv/bin/python -m bench.sampling_bench [--max-tokens 256] [--penalties 1.1,1.3]
JSON goes to stdout and to bench/results/sampling_bench.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "sampling_bench.json"

# (kind, prompt, check): a fact is right when one of the words appears; a list asked for N
# items is right when it has exactly N list lines ("1. ...", "- ..."). Written for this bench.
PROMPTS = [
    ("how-to", "How do I boil an egg?", None),
    ("how-to", "How can I improve my cooking skills?", None),
    ("how-to", "How do I change a flat tire on a bicycle?", None),
    ("how-to", "What's a good way to start running if I've never done it before?", None),
    ("how-to", "How do I make a cup of tea?", None),
    ("how-to", "How can I fall asleep faster at night?", None),
    ("small-talk", "Hi! How are you today?", None),
    ("small-talk", "I just got back from a walk in the park. It was lovely.", None),
    ("small-talk", "What do you like to do for fun?", None),
    ("small-talk", "I'm feeling a bit tired this morning.", None),
    ("small-talk", "Thanks for your help yesterday!", None),
    ("small-talk", "Tell me something interesting.", None),
    ("fact", "What is the capital of France?", ("Paris",)),
    ("fact", "How many legs does a spider have?", ("eight", "8")),
    ("fact", "What is the largest planet in our solar system?", ("Jupiter",)),
    ("fact", "Who wrote Romeo and Juliet?", ("Shakespeare",)),
    ("fact", "What gas do plants take in from the air?", ("carbon dioxide", "CO2")),
    ("fact", "At what temperature does water boil at sea level in Celsius?", ("100",)),
    ("list", "List five fruits.", 5),
    ("list", "Give me three tips for saving money.", 3),
    ("list", "Name four things to pack for a beach trip.", 4),
    ("list", "What are some healthy breakfast ideas?", None),
    ("list", "List the days of the week.", 7),
    ("list", "Suggest a few names for a pet cat.", None),
]
_LIST_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S", re.M)


def is_right(answer: str, check) -> bool | None:
    if check is None:
        return None
    if isinstance(check, int):
        return len(_LIST_LINE.findall(answer)) == check
    return any(w.lower() in answer.lower() for w in check)


def repeated_ngram_rate(texts: list[str], n: int = 4) -> float:
    """Share of word n-grams that already occurred earlier in the same text, pooled over texts."""
    total = repeats = 0
    for text in texts:
        words = re.findall(r"\w+(?:'\w+)?", text.lower())
        seen = set()
        for i in range(len(words) - n + 1):
            g = tuple(words[i:i + n])
            total += 1
            repeats += g in seen
            seen.add(g)
    return repeats / total if total else 0.0


def _summary(rows: list[dict], max_tokens: int) -> dict:
    tokens = [r["completion_tokens"] for r in rows]
    facts = [r for r in rows if r["kind"] == "fact"]
    counted = [r for r in rows if r["kind"] == "list" and r["right"] is not None]
    finish = {k: sum(r["finish_reason"] == k for r in rows) for k in ("stop", "loop", "length")}
    gen_s = sum(r["total_s"] for r in rows)
    return {
        "answers": len(rows),
        "ended_before_max_tokens_share": sum(t < max_tokens for t in tokens) / len(rows),
        "finish_reasons": finish,
        "stopped_by_loop_detector": finish["loop"],
        "completion_tokens_mean": statistics.mean(tokens),
        "completion_tokens_median": statistics.median(tokens),
        "answer_tokens_mean": statistics.mean(r["answer_tokens"] for r in rows),
        # what the user saw streamed, and what the chat stores (trimmed at a loop)
        "repeated_4gram_rate_streamed": repeated_ngram_rate([r["streamed"] for r in rows]),
        "repeated_4gram_rate_answer": repeated_ngram_rate([r["answer"] for r in rows]),
        "fact_answers_right": sum(r["right"] for r in facts),
        "fact_prompts": len(facts),
        # the penalty also penalises "\n", digits and "." that every list line repeats
        "lists_with_the_asked_item_count": sum(r["right"] for r in counted),
        "list_prompts_with_a_count": len(counted),
        "generation_wall_s": gen_s,
        "turn_wall_s": sum(r["turn_s"] for r in rows),
        "tokens_per_s": sum(tokens) / gen_s if gen_s else 0.0,
    }


def run(max_tokens: int = 256, penalties: tuple[float, ...] = (), model: str | None = None,
        threads: int = 0, progress=None) -> dict:
    from assistant.chat import ChatSession

    home = Path(tempfile.mkdtemp(prefix="reverie-sampling-bench-"))
    session = ChatSession(home, model=model, backend="llama.cpp", use_memory=False,
                          use_adapter=False, max_tokens=max_tokens, threads=threads or None)
    rt = session.runtime
    new = session.settings
    configs = {"old": dataclasses.replace(new, repeat_penalty=1.0, loop_stop=False), "new": new}
    for p in penalties:  # with the loop stop, as the new settings
        configs[f"penalty_{p:g}"] = dataclasses.replace(new, repeat_penalty=p)

    def answer(prompt: str) -> tuple[str, str]:
        """ChatSession.send's answer path without recall and the ledger write:
        (what was streamed, the answer the chat stores)."""
        messages = session.build_messages(prompt)[0]
        streamed = "".join(rt.stream(rt.format_chat(messages), session.settings.generation_config()))
        return streamed, rt.last_stats.trimmed(streamed).strip()

    rows: dict[str, list[dict]] = {name: [] for name in configs}
    answer("Hello")  # warm-up: page cache, thread pool
    t_all = time.perf_counter()
    for i, (kind, prompt, check) in enumerate(PROMPTS):
        names = list(configs) if i % 2 == 0 else list(reversed(configs))
        for name in names:
            session.settings = configs[name]
            t0 = time.perf_counter()
            streamed, text = answer(prompt)
            turn_s = time.perf_counter() - t0
            st = rt.last_stats
            rows[name].append({
                "kind": kind, "prompt": prompt, "finish_reason": st.finish_reason,
                "completion_tokens": st.completion_tokens, "answer_tokens": rt.count_tokens(text),
                "total_s": st.total_s, "turn_s": turn_s,
                "right": is_right(text, check),
                "answer": text, "streamed": streamed})
            if progress:
                progress(name, prompt, st)
    wall = time.perf_counter() - t_all
    model_name, n_threads = rt.model.name, rt.threads
    session.close()

    summary = {name: _summary(r, max_tokens) for name, r in rows.items()}
    old, cur = summary["old"], summary["new"]

    def ratio(key):
        return cur[key] / old[key] if old[key] else None

    settings = {name: {"repeat_penalty": s.repeat_penalty, "loop_stop": s.loop_stop,
                       "temperature": 0.0, "top_k": 1, "max_tokens": s.max_tokens}
                for name, s in configs.items()}
    return {
        "bench": "sampling_bench", "model": model_name, "backend": "llama.cpp",
        "threads": n_threads, "prompts": len(PROMPTS), "max_tokens": max_tokens,
        "configs": settings, "summary": summary,
        "ratios_new_over_old": {k: ratio(k) for k in (
            "ended_before_max_tokens_share", "completion_tokens_mean", "completion_tokens_median",
            "repeated_4gram_rate_streamed", "repeated_4gram_rate_answer", "generation_wall_s",
            "turn_wall_s")},
        "wall_s": wall,
        "answers": rows,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--penalties", default="", help="extra configs: new settings at these repeat "
                    "penalties, comma-separated (e.g. 1.1,1.3)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(RESULT))
    a = ap.parse_args(argv)
    penalties = tuple(float(x) for x in a.penalties.split(",") if x.strip())

    def progress(name, prompt, st):
        print(f"{name:>12} {st.finish_reason:>6} {st.completion_tokens:4d}  {prompt}", file=sys.stderr)

    out = run(a.max_tokens, penalties, a.model, a.threads, progress)
    text = json.dumps(out, indent=2) + "\n"
    sys.stdout.write(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
