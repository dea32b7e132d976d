"""Do llama.cpp and MLX run the same GGUF the same way? Greedy answers, teacher-forced argmax, speed.

Owns: a fixed set of short chat prompts, greedy decoding on both runtimes with identical settings
(temperature 0, top_k 1, repeat_penalty 1.0), and the agreement numbers:
- exact_match: share of prompts whose whole answers are identical;
- first_n_match: share whose first N generated tokens are identical; mean_common_prefix in tokens;
- teacher_forced: share of positions where both runtimes' argmax agree when scoring the same ids
  (the prompt plus llama.cpp's answer), over all positions and over the answer positions only;
- decode tokens/s of each runtime (tokens after the first over the time after the first).

Run: `python -m bench.agreement --model smollm2-135m --out agreement.json`
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import emit

import numpy as np

PROMPTS = [
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "How many legs does a spider have?",
    "Give me one tip for sleeping better.",
    "What is 7 times 8?",
    "Translate 'good morning' into Spanish.",
    "Write one sentence about the ocean.",
    "What do bees make?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Suggest a name for a pet cat.",
    "Why is the sky blue? Answer briefly.",
    "List two fruits that are yellow.",
    "What is the opposite of 'cold'?",
    "How many days are in a week?",
    "What is the largest planet in our solar system?",
    "Say hello in French.",
    "What should I pack for a day at the beach?",
    "Describe a cup of coffee in five words.",
    "What is a good breakfast before a run?",
]


def _greedy(rt, prompt_ids: list[int], max_tokens: int):
    """(pieces, decode seconds after the first token) for one greedy run on a runtime."""
    from quant.runtime import GenerationConfig

    cfg = GenerationConfig(max_tokens=max_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0)
    pieces, t_first = [], None
    t0 = time.perf_counter()
    # per-token pieces: the runtimes' primitive, so token-level agreement is measurable
    for piece in rt._generate_tokens(prompt_ids, cfg, max_tokens):
        if t_first is None:
            t_first = time.perf_counter()
        if piece is None:
            break
        pieces.append(piece)
    end = time.perf_counter()
    return pieces, (end - (t_first or t0))


def _common_prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def run(model_name: str = "smollm2-135m", n_prompts: int = 20, max_tokens: int = 32,
        first_n: int = 8, home: str | Path | None = None, n_ctx: int = 1024,
        progress=None) -> dict:
    from quant.registry import Registry
    from quant.runtime import load_runtime

    if home is None:
        from assistant.config import data_dir

        home = data_dir()
    model = Registry(Path(home)).get(model_name)
    prompts = PROMPTS[:n_prompts]
    runtimes = {}
    load_s = {}
    for backend in ("llama.cpp", "mlx"):
        t = time.perf_counter()
        runtimes[backend] = load_runtime(model, backend=backend, n_ctx=n_ctx)
        load_s[backend] = round(time.perf_counter() - t, 2)
    ref, mlx = runtimes["llama.cpp"], runtimes["mlx"]

    rows, tf_all, tf_ans, tok_mismatch = [], [], [], 0
    speed = {b: [0, 0.0] for b in runtimes}  # decode tokens after the first, seconds
    for k, p in enumerate(prompts):
        if progress:
            progress(f"[{k + 1}/{len(prompts)}] {p}")
        text = ref.format_chat([{"role": "user", "content": p}])
        ids = ref.tokenize(text, add_bos=True)
        if mlx.tokenize(text, add_bos=True) != ids:
            tok_mismatch += 1
        out = {}
        for b, rt in runtimes.items():
            pieces, decode_s = _greedy(rt, ids, max_tokens)
            out[b] = pieces
            if len(pieces) > 1:
                speed[b][0] += len(pieces) - 1
                speed[b][1] += decode_s
        a, m = out["llama.cpp"], out["mlx"]
        # teacher forcing on the prompt + llama.cpp's answer (ids from llama.cpp's tokenizer)
        answer_ids = ref.tokenize(text + "".join(a), add_bos=True)
        seq = answer_ids[:n_ctx]
        la, lm = ref.logits(seq), mlx.logits(seq)
        agree = la.argmax(-1) == lm.argmax(-1)
        tf_all.extend(agree.tolist())
        tf_ans.extend(agree[len(ids) - 1:].tolist())
        rows.append({"prompt": p, "llama.cpp": "".join(a).strip(), "mlx": "".join(m).strip(),
                     "exact": "".join(a).strip() == "".join(m).strip(),
                     "first_n": a[:first_n] == m[:first_n], "common_prefix": _common_prefix(a, m),
                     "tokens": [len(a), len(m)],
                     "max_abs_logit_diff": float(np.abs(la - lm).max())})
    for rt in runtimes.values():
        rt.close()
    n = len(rows)
    return {
        "model": model_name, "file_type": model.file_type, "arch": model.arch, "n_prompts": n,
        "max_tokens": max_tokens, "first_n": first_n,
        "exact_match": sum(r["exact"] for r in rows) / n,
        "first_n_match": sum(r["first_n"] for r in rows) / n,
        "mean_common_prefix": float(np.mean([r["common_prefix"] for r in rows])),
        "teacher_forced_agreement": float(np.mean(tf_all)),
        "teacher_forced_agreement_answer": float(np.mean(tf_ans)) if tf_ans else None,
        "teacher_forced_positions": len(tf_all),
        "tokenization_mismatches": tok_mismatch,
        "decode_tokens_per_s": {b: round(t / s, 2) if s else 0.0 for b, (t, s) in speed.items()},
        "load_s": load_s,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--first-n", type=int, default=8)
    ap.add_argument("--home", default=None, help="data dir (default: REVERIE_HOME or the platform dir)")
    ap.add_argument("--out", default=None, help="write the JSON here as well as to stdout")
    a = ap.parse_args(argv)
    result = run(a.model, a.n_prompts, a.max_tokens, a.first_n, a.home,
                 progress=lambda m: print(m, file=sys.stderr, flush=True))
    emit(result, a.out)


if __name__ == "__main__":
    main()
