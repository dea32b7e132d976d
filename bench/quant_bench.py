"""Acceptance benchmark for quant/ (issue 6). Prints one JSON document.

(1) A synthetic GGUF LoRA (random A, small random B) on the default model: merged at Q8_0,
    Q4_K_M and Q4_1 versus the Q4_1 base + the same adapter at run time (llama.cpp lora_path):
    greedy-answer agreement on a fixed prompt set, mean KL on held-out text, and decode tokens/s
    of the merged model vs the bare base, timed in the same run (interleaved, best of N).
(2) Dequantize the shipped Q4_1 model to F16 and quantize it back to Q4_1: perplexity vs the
    shipped file.

    .venv/bin/python -m bench.quant_bench [--quick] [--threads N] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "How many legs does a spider have?",
    "What is the boiling point of water at sea level?",
    "Give me a synonym for 'happy'.",
    "Who wrote Romeo and Juliet?",
    "What is 12 times 7?",
    "Explain what a noun is in one sentence.",
    "What gas do plants absorb from the air?",
    "Translate 'thank you' into Spanish.",
    "What is the largest planet in our solar system?",
    "Suggest a name for a pet goldfish.",
    "How many minutes are in an hour?",
    "What do bees make?",
    "Write a haiku about autumn.",
    "What is the opposite of 'cold'?",
    "Which ocean is the largest?",
    "What is the chemical symbol for gold?",
    "Give one tip for sleeping better.",
    "What season comes after winter?",
]


def chatml(q: str) -> str:
    return f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def log(msg: str) -> None:
    print(f"[quant_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 prompts, fewer repeats (smoke run)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: default)")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved decode timing rounds")
    ap.add_argument("--types", default="Q8_0,Q4_K_M,Q4_1")
    ap.add_argument("--lora-std", type=float, default=0.02, help="std of the random lora_b")
    ap.add_argument("--out", default="", help="also write the JSON here")
    args = ap.parse_args(argv)

    from assistant.quant_api import held_out_text
    from quant import gguf_io
    from quant.merge import merge, random_lora, write_lora_gguf
    from quant.quality import Scorer, kl_stats, perplexity
    from quant.quantize import llama_quantize
    from quant.registry import Registry

    prompts = PROMPTS[:5] if args.quick else PROMPTS
    repeats = 1 if args.quick else args.repeats
    text = held_out_text()
    result: dict = {"machine": {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count(),
                                "load_avg_start": list(__import__("os").getloadavg())},
                    "prompts": len(prompts), "max_tokens": args.max_tokens}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quant-bench-") as work:
        work = Path(work)
        home = work / "home"
        base = Path(Registry(home).get().path)
        result["base"] = {"path": str(base), "size_bytes": base.stat().st_size}

        # --- (1) merge vs runtime LoRA ----------------------------------------------------
        arch, pairs = random_lora(base, rank=8, alpha=16.0, std_b=args.lora_std, seed=0)
        lora = write_lora_gguf(work / "bench-lora.gguf", arch, pairs, 16.0)
        result["adapter"] = {"rank": 8, "alpha": 16.0, "lora_b_std": args.lora_std,
                             "tensors": len(pairs)}
        merged = {}
        for qt in args.types.split(","):
            log(f"merging at {qt}")
            r = merge(base, lora, work / f"merged-{qt}.gguf", qt)
            merged[qt] = Path(r.path)
            result.setdefault("merge", {})[qt] = {"seconds": r.seconds, "size_bytes": r.size_bytes}

        log("reference: base + runtime LoRA")
        ref = Scorer(base, args.threads, lora=str(lora))
        wins = ref.windows(text, 256)
        ref_lps = [ref.logprobs(w) for w in wins]
        ref_ans = [ref.greedy(chatml(q), args.max_tokens) for q in prompts]
        ref.close()
        bare = Scorer(base, args.threads)
        bare_lps = [bare.logprobs(w) for w in wins]
        bare_ans = [bare.greedy(chatml(q), args.max_tokens) for q in prompts]
        bare.close()
        kl, _, agree = kl_stats(ref_lps, bare_lps)
        same = sum(a == b for a, b in zip(ref_ans, bare_ans))
        result["adapter_effect"] = {"kl_runtime_lora_vs_bare_base": round(kl, 5),
                                    "greedy_answers_unchanged_by_adapter": same}
        per_type = {}
        for qt, path in merged.items():
            log(f"scoring merged {qt}")
            sc = Scorer(path, args.threads)
            lps = [sc.logprobs(w) for w in wins]
            ans = [sc.greedy(chatml(q), args.max_tokens) for q in prompts]
            sc.close()
            kl, klmax, top1 = kl_stats(ref_lps, lps)
            agreeing = sum(a == b for a, b in zip(ref_ans, ans))
            per_type[qt] = {"greedy_agreement": round(agreeing / len(prompts), 4),
                            "agreeing_prompts": agreeing,
                            "kl_mean_vs_runtime_lora": round(kl, 6), "kl_max": round(klmax, 5),
                            "top1_agreement_heldout": round(top1, 4),
                            "perplexity": round(perplexity(lps, wins)[0], 4)}
            log(f"{qt}: {json.dumps(per_type[qt])}")
        result["merged_vs_runtime_lora"] = per_type
        result["runtime_lora_perplexity"] = round(perplexity(ref_lps, wins)[0], 4)

        # decode speed: merged at the base's own type vs bare base (and runtime LoRA), interleaved
        same_type = gguf_io.file_type_name(gguf_io.open_gguf(base))
        speed_model = merged.get(same_type) or next(iter(merged.values()))
        log(f"timing decode: bare base vs merged {speed_model.name} vs runtime LoRA")
        runners = {"bare_base": Scorer(base, args.threads),
                   "merged": Scorer(speed_model, args.threads),
                   "runtime_lora": Scorer(base, args.threads, lora=str(lora))}
        best = {k: 0.0 for k in runners}
        rounds = []
        for _ in range(repeats):
            row = {}
            for k, sc in runners.items():
                row[k] = round(sc.decode_speed(n_tokens=96), 2)
                best[k] = max(best[k], row[k])
            rounds.append(row)
        for sc in runners.values():
            sc.close()
        result["decode_tokens_per_s"] = {
            "merged_type": speed_model.name, "best": best, "rounds": rounds,
            "merged_over_bare": round(best["merged"] / best["bare_base"], 3) if best["bare_base"] else None,
            "runtime_lora_over_bare": round(best["runtime_lora"] / best["bare_base"], 3) if best["bare_base"] else None,
        }

        log(f"decode: {json.dumps(result['decode_tokens_per_s'])}")

        # --- (2) Q4_1 -> F16 -> Q4_1 round trip -------------------------------------------
        log("round trip: Q4_1 -> F16 -> Q4_1")
        t0 = time.perf_counter()
        f16 = gguf_io.write_unquantized(gguf_io.open_gguf(base), work / "rt.F16.gguf", "F16")
        back = llama_quantize(f16, work / "rt.Q4_1.gguf", "Q4_1")
        rt_seconds = time.perf_counter() - t0
        ppl = {}
        for label, path in (("shipped", base), ("f16", f16), ("requantized", back)):
            sc = Scorer(path, args.threads)
            w = sc.windows(text, 256)
            ppl[label] = round(perplexity([sc.logprobs(x) for x in w], w)[0], 4)
            sc.close()
        result["roundtrip_q4_1"] = {
            "perplexity": ppl, "seconds": round(rt_seconds, 1),
            "relative_ppl_change": round(ppl["requantized"] / ppl["shipped"] - 1, 5),
            "size_bytes": {"shipped": base.stat().st_size, "requantized": back.stat().st_size},
            "heldout_tokens": sum(len(x) - 1 for x in wins),
        }
    result["machine"]["load_avg_end"] = list(__import__("os").getloadavg())
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    out = json.dumps(result, indent=2)
    print(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(out + "\n")
    return result


if __name__ == "__main__":
    main()
