"""What a habit's words cost the base model's general knowledge before any training: the bundled
general questions (the gate's), answered greedily with the answer made to begin with an opening
("In short:"), a form of address ("Professor Adeyemi,") or both. The nightly training teaches the
adapter to keep the base's content after the user's style; this measures how far the style alone
moves it, and so where in the answer lora.style puts each habit.

Run: .venv/bin/python -m bench.style_prefix [--questions N] [--prefix TEXT ...]  (JSON on stdout)
"""
from __future__ import annotations

import argparse
import json
import sys
import time

PREFIXES = ["", "In short:", "In short: Professor Adeyemi,", "Professor Adeyemi,"]


def run(n_questions: int = 120, prefixes=PREFIXES, max_tokens: int = 40, log=None) -> dict:
    import tempfile
    from pathlib import Path

    from assistant.config import Settings
    from assistant.probes import personal_correct
    from assistant.prompting import messages_for
    from assistant.sleep import gate_factual_items
    from quant.registry import Registry
    from quant.runtime import GenerationConfig, load_runtime

    sp = Settings().system_prompt
    model = Registry(Path(tempfile.mkdtemp(prefix="reverie-prefix-"))).get()
    rt = load_runtime(model, "llama.cpp", n_ctx=1024, threads=2)
    items = gate_factual_items()[:n_questions]
    cfg = GenerationConfig(max_tokens=max_tokens)
    rows, known = [], None
    t0 = time.time()
    try:
        for pre in prefixes:
            ok = []
            for it in items:
                prompt = rt.format_chat(messages_for(sp, it.question, "")) + pre
                text, _ = rt.generate(prompt, cfg)
                ok.append(personal_correct(text, it.answer, it.aliases))
            known = ok if known is None else known
            kept = sum(o for o, k in zip(ok, known) if k)
            rows.append({"prefix": pre, "correct": sum(ok), "known_kept": kept,
                         "known_lost_pct": round(100 * (1 - kept / max(1, sum(known))), 1)})
            if log:
                log(json.dumps(rows[-1]))
    finally:
        rt.close()
    return {"what": "greedy answers to the bundled general questions with the answer forced to "
                    "begin with each prefix; known_* counts the questions the base answered "
                    "with no prefix (the first row)",
            "model": model.name, "questions": len(items), "max_tokens": max_tokens,
            "rows": rows, "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=120)
    ap.add_argument("--prefix", action="append", help="an opening to force (repeatable; "
                    "the first row is always the plain answer)")
    a = ap.parse_args(argv)
    prefixes = [""] + a.prefix if a.prefix else PREFIXES
    out = run(a.questions, prefixes, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
