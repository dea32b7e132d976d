"""One night, several ways of training it: re-run the last night of a `reverie eval --facts F
--preferences P` data dir (same ledger: its facts, stated preferences and /fix corrections) in a
fresh copy per variant, with the product's own `sleep` and gate (all the bundled general
questions), then ask every preference probe of P greedily through the candidate adapter.

A variant is a JSON object of TrainConfig overrides; e.g.
  .venv/bin/python -m bench.habit_variants /tmp/reverie-eval-XXXX ../shared/data/persona-dev.jsonl \
      ../shared/data/preferences-dev.jsonl '{}' '{"per_example_loss": true}'   (JSON on stdout)
The copy keeps the source's caches (the base model's answers), not its adapters.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def preference_scores(home: Path, gguf: str, habits, max_tokens: int = 160) -> dict:
    from assistant.config import Settings
    from assistant.habits import follows
    from assistant.prompting import messages_for
    from quant.registry import Registry
    from quant.runtime import GenerationConfig, load_runtime

    sp = Settings.load(home).system_prompt
    rt = load_runtime(Registry(home).get(), "llama.cpp", n_ctx=1024, threads=2, adapter=gguf)
    cfg = GenerationConfig(max_tokens=max_tokens, loop_stop=True)
    per, examples = {}, {}
    try:
        for h in habits:
            answers = [rt.chat(messages_for(sp, p.prompt, ""), cfg)[0] for p in h.probes]
            per[h.id] = sum(follows(a, p) for a, p in zip(answers, h.probes))
            examples[h.id] = answers[0]
    finally:
        rt.close()
    n = sum(len(h.probes) for h in habits)
    return {"preference_acc": sum(per.values()) / n if n else 0.0, "per_preference": per,
            "examples": examples}


def run_variant(source: Path, facts_path, prefs_path, overrides: dict, log=print) -> dict:
    import assistant.sleep as S
    from assistant.habits import load_habits
    from assistant.probes import load_persona
    from memory.ledger import Ledger

    home = Path(tempfile.mkdtemp(prefix="reverie-variant-")) / "home"
    shutil.copytree(source, home, ignore=shutil.ignore_patterns("adapters", "work", "reports",
                                                                "*.lock"))
    led = Ledger(home)  # the copied ledger lists adapters whose files were not copied
    led.db.execute("delete from adapters")
    led.db.conn.commit()
    led.close()
    facts, habits = load_persona(facts_path), load_habits(prefs_path)
    exclude = tuple(q for f in facts for q in f.questions) + tuple(
        p.prompt for h in habits for p in h.probes)
    orig = S._train_config

    def train_config(opts, n=None):
        c = orig(opts, n)
        for k, v in overrides.items():
            setattr(c, k, v)
        return c

    S._train_config = train_config
    t0 = time.time()
    try:
        out = S.run_sleep(home, S.nightly_options(exclude, force=True), log=log)
    finally:
        S._train_config = orig
    m = out.metrics
    row = {"overrides": overrides, "status": out.status, "message": out.message,
           "personal_base": m.get("personal_base"), "personal_adapted": m.get("personal_adapted"),
           "general_base": m.get("general_base"), "general_adapted": m.get("general_adapted"),
           "factual_lost": m.get("factual_lost"),
           "factual_known": sum(1 for b in m.get("factual_base_correct", []) if b),
           "factual_noise_pct": m.get("factual_noise_pct"), "dataset": out.dataset,
           "train_seconds": (m.get("train") or {}).get("seconds"),
           "sleep_seconds": round(time.time() - t0, 1), "data_dir": str(home)}
    if out.adapter_id:
        row.update(preference_scores(home, str(home / "adapters" / out.adapter_id / "adapter.gguf"),
                                     habits))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="a data dir left by `reverie eval --facts --preferences`")
    ap.add_argument("facts", help="the eval's --facts file (its questions are never trained on)")
    ap.add_argument("preferences", help="the eval's --preferences file")
    ap.add_argument("variants", nargs="+", help="TrainConfig overrides as JSON objects")
    a = ap.parse_args(argv)
    if not (a.data_dir / "ledger.db").is_file():
        ap.error(f"{a.data_dir} is not a reverie data dir (no ledger.db): pass the data dir "
                 "`reverie eval --facts F --preferences P --json` reports as data_dir")
    try:
        variants = [json.loads(v) for v in a.variants]
    except ValueError as e:
        ap.error(f"a variant is not JSON ({e}); write one like '{{\"habit_ratio\": 1.0}}'")
    if not all(isinstance(v, dict) for v in variants):
        ap.error("each variant is a JSON object of TrainConfig fields, e.g. '{}'")
    os.environ.setdefault("REVERIE_GATE_FACTUAL", "320")
    rows = []
    for v in variants:
        rows.append(run_variant(a.data_dir, a.facts, a.preferences, v,
                                log=lambda m: print(m, file=sys.stderr, flush=True)))
    print(json.dumps({"source": str(a.data_dir), "variants": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
