"""Retrain vs incremental, and what `memory forget` does to the weights (issue 4's "measure both").

Part 1 runs `reverie eval`'s experiment (assistant.evaluate.run_experiment) twice on the same
persona facts and nights, once with every night `--strategy retrain` (from base on the whole
ledger) and once `--strategy incremental` (yesterday's adapter continued on the new facts plus
replay), and reports per night: sleep wall time, training steps and examples, the gate's
held-back recall, and the four arms on the persona's own probe questions (never trained); at the
end the accuracy matrix, backward transfer and general ability of the last adapter.

Part 2 continues the retrain run's data dir: it forgets the first FORGET facts of night 1, runs
one more sleep (which must retrain from base without them), and asks those facts' probe
questions of the base model, the adapter before the forget and the adapter after it. Recall of
a forgotten fact should fall back to the base model's level.

Run: .venv/bin/python -m bench.strategy_bench --facts ../shared/data/persona-dev.jsonl \
         --nights 2 --out bench/results/strategy_bench.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench import emit

FORGET = 3


def _log(line: str) -> None:
    print(f"[strategy] {line}", file=sys.stderr, flush=True)


def one_strategy(strategy: str, facts: Path, nights: int, general: list[Path], general_limit: int,
                 home: Path) -> dict:
    from assistant.evaluate import run_experiment

    t0 = time.time()
    r = run_experiment(facts, general, nights=nights, general_limit=general_limit, home=home,
                       log=_log, strategy=strategy)
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger

    rows = {a.id: a for a in AdapterLedger(Ledger(home)).list()}
    per_night = []
    for s, scored in zip(r["sleeps"], r["per_night"]):
        row = rows.get(s["adapter"])
        m = json.loads(row.metrics) if row is not None else {}
        train = m.get("train", {})
        per_night.append({
            "night": s["night"], "status": s["status"], "adapter": s["adapter"],
            "strategy_used": row.strategy if row is not None else None,
            "train_steps": train.get("steps"), "train_seconds": round(train.get("seconds", 0), 1),
            "gate_held_back": [m.get("personal_base"), m.get("personal_adapted")],
            "gate_bwt": m.get("bwt"), "gate_general": [m.get("general_base"), m.get("general_adapted")],
            "ppl_ratio": m.get("ppl_ratio"), "kl_drift": m.get("kl_drift"),
            "probe_acc": {k: v for k, v in scored.items() if k != "night"},
        })
    return {"strategy": strategy, "wall_s": round(time.time() - t0, 1), "per_night": per_night,
            "arms_last_night": {a: {"personal_acc": v["personal_acc"], "personal_ci": v["personal_ci"]}
                                for a, v in r["arms"].items()},
            "R_adapter": r["R"].get("adapter"), "bwt_adapter": r["bwt"],
            "general_acc_delta": r["general_acc_delta"], "general_acc_delta_ci": r["general_acc_delta_ci"],
            "kl_drift": r["kl_drift"], "ppl_ratio": r["ppl_ratio"]}


def forget_then_sleep(home: Path, facts_path: Path, nights: int) -> dict:
    """Forget FORGET night-1 facts in the retrain run's data dir, sleep, and compare recall."""
    import os

    from assistant.gate_eval import Probe, ask_probes
    from assistant.probes import load_persona
    from assistant.runtime_api import open_runtime
    from assistant.sleep import SleepOptions, run_sleep
    from memory import MemoryStore
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger
    from quant.registry import Registry

    os.environ["REVERIE_HOME"] = str(home)
    persona = [f for f in load_persona(facts_path) if f.night <= nights]
    gone = [f for f in persona if f.night == 1][:FORGET]
    store = MemoryStore(home)
    active = store.active_facts()
    model = Registry(home).get()
    before = AdapterLedger(Ledger(home)).promoted(model.name)
    forgotten, forgotten_ids = [], []
    for f in gone:  # the ledger holds what /remember stored (maybe reworded): match on the answer
        hit = next((m for m in active if f.answer.lower() in m.text.lower()), None)
        if hit is not None:
            store.forget(hit.id)
            forgotten.append(f)
            forgotten_ids.append(hit.id)
    store.close()
    t0 = time.time()
    exclude = tuple(q for f in persona for q in f.questions)
    out = run_sleep(home, SleepOptions(exclude_questions=exclude), log=_log)
    wall = time.time() - t0
    after = AdapterLedger(Ledger(home)).get(out.adapter_id) if out.adapter_id else None
    probes = [Probe(f.id, q, f.answer, f.aliases) for f in forgotten for q in f.questions]
    kept = [Probe(f.id, q, f.answer, f.aliases) for f in persona if f not in forgotten
            for q in f.questions]
    from assistant.config import Settings

    sp = Settings.load(home).system_prompt
    acc = {}
    for name, gguf in (("base", None), ("adapter_before_forget", before.gguf if before else None),
                       ("adapter_after_forget", after.gguf if after else None)):
        if name != "base" and gguf is None:
            continue
        rt = open_runtime(home, None, "llama.cpp", n_ctx=2048, adapter=gguf)
        try:
            acc[name] = {"forgotten_facts": ask_probes(rt, probes, sp).acc,
                         "kept_facts": ask_probes(rt, kept, sp).acc}
        finally:
            rt.close()
    return {"forgotten": [f.statement for f in forgotten], "n_probes_forgotten": len(probes),
            "n_probes_kept": len(kept), "sleep_status": out.status, "sleep_message": out.message,
            "strategy_used": after.strategy if after else None,
            "new_adapter_trained_on_a_forgotten_fact": (
                None if after is None else bool(set(forgotten_ids) & set(json.loads(after.fact_ids)))),
            "dataset": out.dataset, "sleep_wall_s": round(wall, 1), "recall": acc}


def main(argv=None) -> int:
    from bench.train_bench import loadavg

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--facts", type=Path, required=True)
    ap.add_argument("--nights", type=int, default=2)
    ap.add_argument("--general", type=Path, action="append", default=[])
    ap.add_argument("--general-limit", type=int, default=50)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    out: dict = {"what": __doc__.splitlines()[0], "facts": str(a.facts), "nights": a.nights,
                 "load_before": loadavg()}
    with tempfile.TemporaryDirectory(prefix="reverie-strategy-") as tmp:
        for strategy in ("retrain", "incremental"):
            home = Path(tmp) / strategy
            out[strategy] = one_strategy(strategy, a.facts, a.nights, a.general, a.general_limit, home)
            _log(json.dumps({k: v for k, v in out[strategy].items() if k != "R_adapter"}))
        out["forget"] = forget_then_sleep(Path(tmp) / "retrain", a.facts, a.nights)
        _log(json.dumps(out["forget"]))
    out["load_after"] = loadavg()
    emit(out, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
