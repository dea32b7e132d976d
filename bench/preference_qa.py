"""Memory-only habit following: state each preference in chat and /fix its demos, then ask every
probe in a fresh conversation with memory on and off (no adapter), scored by assistant.habits.

Run: .venv/bin/python -m bench.preference_qa [FILE] [--max-tokens N]  (JSON on stdout)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = "/work/shared/data/preferences-dev.jsonl"


def run(path=DEFAULT, max_tokens: int = 160, log=None) -> dict:
    from assistant.chat import ChatSession
    from assistant.habit_eval import tell_habits
    from assistant.habits import follows, load_habits

    habits = load_habits(path)
    home = Path(tempfile.mkdtemp(prefix="reverie-prefqa-"))
    t0 = time.time()
    s = ChatSession(home, backend="llama.cpp", use_memory=True, use_adapter=False,
                    max_tokens=max_tokens)
    tell_habits(s, habits)
    s.close()
    out = {"file": str(path), "max_tokens": max_tokens, "told_s": round(time.time() - t0, 1)}
    for arm, memory in (("memory", True), ("base", False)):
        s = ChatSession(home, backend="llama.cpp", use_memory=memory, use_adapter=False,
                        max_tokens=max_tokens, record=False)
        per, examples = {}, {}
        for h in habits:
            ok = 0
            for p in h.probes:
                s.new()
                ans = s.send(p.prompt).answer
                ok += follows(ans, p)
                examples.setdefault(h.id, ans)
            per[h.id] = ok
            if log:
                log(f"{arm} {h.id}: {ok}/{len(h.probes)}")
        s.close()
        n = sum(len(h.probes) for h in habits)
        out[arm] = {"followed": sum(per.values()), "probes": n, "acc": sum(per.values()) / n,
                    "per_preference": per, "example_answers": examples}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", default=DEFAULT)
    p.add_argument("--max-tokens", type=int, default=160)
    a = p.parse_args(argv)
    print(json.dumps(run(a.file, a.max_tokens, log=lambda m: print(m, file=sys.stderr)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
