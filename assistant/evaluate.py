"""`reverie eval`: in-context memory and the nightly adapter side by side on the same probes.

Owns the experiment: in an isolated data dir, for each night tell that night's facts in chat
(/remember), run `sleep`, then score four arms — base, memory, adapter, adapter+memory — on every
fact taught so far; general ability, drift and perplexity for the adapter; the R matrix and BWT
across nights; bootstrap CIs. Metrics come from lora.metrics, probes from assistant.probes.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

from .errors import ReverieError

ARMS = ("base", "memory", "adapter", "adapter+memory")
Log = Callable[[str], None]


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file()) if Path(p).exists() else 0


def run_experiment(facts_path: str | Path | None = None, general_paths: list | None = None,
                   nights: int | None = None, out_dir: Path | None = None, log: Log = print,
                   general_limit: int = 100, steps: int = 0, on_train=None, learning_rate: float = 0.0,
                   home: Path | None = None, gate_general: int = 60, gate_texts: int = 5,
                   facts_per_night: int = 0, strategy: str = "retrain",
                   preferences_path: str | Path | None = None,
                   factual_limit: int | None = None) -> dict:
    """With preferences_path the nights also teach habits (assistant.habit_eval): each night the
    user states that night's preferences and /fixes their demos beside telling the facts, and the
    four arms are scored on both: personal_acc and preference_acc from the same adapter."""
    from lora.metrics import (FactOutcome, accuracy_matrix, backward_transfer, bootstrap_ci,
                              matrix_to_lists, paired_bootstrap_ci)
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger

    from .chat import ChatSession
    from quant.registry import sha256_file

    from .gate_eval import BaseCache, Probe, answers_known, ask_probes, forgetting
    from .probes import (bundled_general_facts, bundled_general_mc, bundled_general_text, bundled_persona_demo,
                         load_multiple_choice, load_persona)
    from .runtime_api import find_model, open_runtime
    from .served import served_form
    from .services import Services
    from common.files import cached_sha256

    from .sleep import nightly_options, run_sleep

    t0 = time.time()
    facts = load_persona(facts_path) if facts_path else bundled_persona_demo()
    if facts_per_night:  # the first N of each night (the demo keeps its nights short)
        by_night: dict[int, list] = {}
        for f in facts:
            by_night.setdefault(f.night, []).append(f)
        facts = [f for n in sorted(by_night) for f in by_night[n][:facts_per_night]]
    if not facts:
        raise ReverieError("the facts file has no facts.")
    items = []
    for gp in general_paths or []:
        items += load_multiple_choice(gp)[:general_limit]
    if not items:
        items = bundled_general_mc()[:general_limit]
    texts = bundled_general_text()
    habits = []
    if preferences_path is not None:
        from .habits import load_habits

        habits = load_habits(preferences_path)
    max_night = max([f.night for f in facts] + [h.night for h in habits])
    nights = nights or max_night
    if nights < 1:
        raise ReverieError("--nights must be at least 1.")
    home = Path(home or tempfile.mkdtemp(prefix="reverie-eval-"))
    log(f"isolated data dir {home}; {len(facts)} facts over {nights} night(s); {len(items)} general items")
    exclude = tuple(q for f in facts for q in f.questions) + tuple(
        p.prompt for h in habits for p in h.probes)

    session = ChatSession(home, backend="llama.cpp", use_memory=True, use_adapter=False)
    sp = session.system_prompt
    # the base arm's answers do not change between nights: each question is asked once
    cache = BaseCache.for_model(home, cached_sha256(home, Path(session.runtime.model.path), sha256_file))
    outcomes: dict[str, list] = {a: [] for a in ARMS}
    per_night = []
    last = {}
    # the adapter the adapter arms use (its file, for the disk size), the form it is served in
    gguf, form, form_info = None, None, None
    sleeps = []
    for night in range(1, nights + 1):
        tonight = [f for f in facts if f.night == night]
        log(f"night {night}: telling {len(tonight)} facts in chat")
        session.new()
        for f in tonight:
            session.command(f"/remember {f.statement}")
        if habits:
            from .habit_eval import tell_habits

            said = [h for h in habits if h.night == night]
            tell_habits(session, said)
            log(f"night {night}: {len(said)} preferences stated, "
                f"{sum(len(h.demos) for h in said)} answers corrected")
        # the gate inside sleep uses a lighter general probe than the final report
        out = run_sleep(home, nightly_options(exclude, steps=steps, force=True, strategy=strategy,
                                              learning_rate=learning_rate, gate_general=gate_general,
                                              gate_texts=gate_texts, gate_factual=factual_limit),
                        log=log, on_train=on_train)
        sleeps.append({"night": night, "status": out.status, "message": out.message,
                       "adapter": out.adapter_id, "gate": out.gate})
        if habits and out.status == "rejected":  # preference arms chat with the served adapter
            from .habit_eval import serve_anyway

            serve_anyway(home, out.adapter_id)
            sleeps[-1]["served_anyway"] = True
        log(f"night {night}: sleep → {out.message}")
        taught = [f for f in facts if f.night <= night]
        probes = [Probe(f.id, q, f.answer, f.aliases) for f in taught for q in f.questions]
        night_of = {f.id: f.night for f in facts}
        with Ledger(home) as ledger:
            # the adapter arms use tonight's trained adapter (promoted or not): the experiment
            # measures what training did; the gate's decision is reported beside it. A night that
            # trained nothing keeps the previous night's adapter.
            # A promoted adapter is asked in the form chat serves (assistant.served).
            if out.adapter_id and out.status in ("promoted", "rejected"):
                row = AdapterLedger(ledger).get(out.adapter_id)
                base = find_model(home)
                gguf, form = row.gguf, served_form(row, base.path)
                form_info = form.model_info(base) if form else None
            base_rt = open_runtime(home, None, "llama.cpp", n_ctx=2048)
            ad_rt = (open_runtime(home, form_info, "llama.cpp", n_ctx=2048, adapter=form.adapter)
                     if form else None)
            services = Services(home, ledger)

            def block(q, rt):
                return services.recall(q, rt)[1]

            res = {}
            log(f"night {night}: scoring 4 arms on {len(probes)} probes")
            res["base"] = ask_probes(base_rt, probes, sp, cache=cache)
            res["memory"] = ask_probes(base_rt, probes, sp, memory_block=lambda q: block(q, base_rt))
            if ad_rt is not None:
                res["adapter"] = ask_probes(ad_rt, probes, sp)
                res["adapter+memory"] = ask_probes(ad_rt, probes, sp,
                                                   memory_block=lambda q: block(q, ad_rt))
        for arm, r in res.items():
            for fid, acc in r.by_fact().items():
                outcomes[arm].append(FactOutcome(fid, night_of[fid], night, acc))
        per_night.append({"night": night, **{a: r.acc for a, r in res.items()}})
        prefs = None
        if habits:
            from .habit_eval import score_preferences

            prefs = score_preferences(home, [h for h in habits if h.night <= night], night, log)
            per_night[-1]["preference_acc"] = {a: v["preference_acc"] for a, v in prefs.items()}
        last = {"res": res, "base_rt": base_rt, "ad_rt": ad_rt, "gguf": gguf, "prefs": prefs}
        if night < nights:
            base_rt.close()
            if ad_rt is not None:
                ad_rt.close()
    session.close()

    res, base_rt, ad_rt = last["res"], last["base_rt"], last["ad_rt"]
    log("general ability, perplexity and KL drift")
    fg = forgetting(base_rt, ad_rt or base_rt, items, texts, cache=cache)
    gb, ga = fg.general_base, fg.general_adapted
    ppl_b, ppl_a, kl = fg.drift.ppl_base, fg.drift.ppl_adapted, fg.drift.kl
    log("general questions (the gate's bundled factual set), base and adapter")
    fq = bundled_general_facts()[:factual_limit]
    fqb = answers_known(base_rt, fq, sp, cache=cache)
    fqa = answers_known(ad_rt, fq, sp) if ad_rt is not None else fqb
    mem_bytes = _dir_bytes(home / "chroma") + (home / "ledger.db").stat().st_size
    ad_bytes = Path(last["gguf"]).stat().st_size if last["gguf"] else 0
    arms = {}
    for arm in ARMS:
        r = res.get(arm)
        if r is None:
            continue
        general = ga if arm.startswith("adapter") else gb
        arms[arm] = {
            "personal_acc": r.acc, "personal_ci": bootstrap_ci([float(c) for c in r.correct]).to_list(),
            "general_acc": general.acc, "general_acc_norm": general.acc_norm,
            "general_ci": bootstrap_ci([float(c) for c in general.correct]).to_list(),
            "general_factual_acc": sum(fqa if arm.startswith("adapter") else fqb) / len(fq),
            "prompt_tokens": sum(r.prompt_tokens) / len(r.prompt_tokens),
            "ttft_s": sorted(r.ttft_s)[len(r.ttft_s) // 2],
            "tokens_per_s": sorted(r.tokens_per_s)[len(r.tokens_per_s) // 2],
            "disk_bytes": (mem_bytes if "memory" in arm else 0) + (ad_bytes if arm.startswith("adapter") else 0),
        }
    if last.get("prefs"):
        for arm, v in last["prefs"].items():
            if arm in arms:
                arms[arm]["preference_acc"] = v["preference_acc"]
                arms[arm]["per_preference"] = v["per_preference"]
    R = {a: matrix_to_lists(accuracy_matrix(o, nights)) for a, o in outcomes.items() if o}
    bwt = {a: backward_transfer(accuracy_matrix(o, nights)) for a, o in outcomes.items() if o}
    delta_ci = paired_bootstrap_ci([float(c) for c in ga.correct], [float(c) for c in gb.correct]).to_list()
    results = {
        "arms": arms, "general_acc_delta": ga.acc - gb.acc, "general_acc_delta_ci": delta_ci,
        "general_factual_delta": (sum(fqa) - sum(fqb)) / len(fq), "n_factual": len(fq),
        "factual_lost": [q.question for q, b, a in zip(fq, fqb, fqa) if b and not a],
        "kl_drift": kl, "ppl_ratio": ppl_a / ppl_b if ppl_b else None,
        "ppl_base": ppl_b, "ppl_adapter": ppl_a,
        "bwt": bwt.get("adapter"), "bwt_by_arm": bwt, "R": R, "per_night": per_night,
        "n_facts": len([f for f in facts if f.night <= nights]), "n_general": len(items),
        "nights": nights, "strategy": strategy, "sleeps": sleeps, "seconds": time.time() - t0,
        "data_dir": str(home),
        "disk_bytes": ad_bytes, "memory_disk_bytes": mem_bytes,
    }
    if habits:
        from .habit_eval import superseded

        results["n_preferences"] = len([h for h in habits if h.night <= nights])
        results["superseded_preferences"] = superseded([h for h in habits if h.night <= nights])
    base_rt.close()
    if ad_rt is not None:
        ad_rt.close()
    from .report import write_report

    out_dir = Path(out_dir or home / "reports" / f"eval-{time.strftime('%Y%m%d-%H%M%S')}")
    results["report_dir"] = str(write_report(results, out_dir))
    return results
