"""Acceptance benchmark for quant/ (issue 6). Prints one JSON document.

(1) Merge vs runtime LoRA on the default model with a real adapter (a GGUF LoRA file or an
    adapter version from `reverie adapters ls`; a random one only if none is given). Three
    comparisons, each as greedy whole-answer agreement on a fixed prompt set, teacher-forced
    next-token top-1 agreement on the reference's answers, and mean KL / top-1 on held-out text:
    - exact: the base dequantized to F32 + runtime LoRA vs the merged F32 model. Same weights,
      same f32 matmuls, only the summation order differs: anything short of ~100% is a merge bug.
    - same_type[T]: the base requantized to T + runtime LoRA vs merged-then-T. This is the fair
      comparison "at T": both serve T weights with llama.cpp's T activation quantization, so the
      difference is only where the adapter sits (rounded into W, or added in f32 next to it).
    - vs_shipped[T]: the shipped Q4_1 base + runtime LoRA (what chat serves today) vs merged-then-T:
      the answers a user would see change by switching to the merged file.
    - noise_floor_f32_vs_type[T]: the F32 base vs the F32 base quantized to T, no adapter: what
      rounding to T alone changes, the floor under same_type[T] (two roundings of near-equal weights).
(2) Decode tokens/s of the bare base vs the merged model at the base's own type (and the others),
    timed in the same run, interleaved and rotated over rounds; medians and ratios.
(3) Dequantize the shipped Q4_1 model to F16 and quantize it back to Q4_1: perplexity vs the
    shipped file.

    .venv/bin/python -m bench.quant_bench --adapter PATH|VERSION [--home DIR] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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
    # personal questions: where a personal adapter changes the answers most
    "What is my dog's name?",
    "Where do I live?",
    "What is my favourite programming language?",
    "What is my favourite colour?",
    "What is my sister called?",
    "Tell me something you know about me.",
]


def log(msg: str) -> None:
    print(f"[quant_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Eval:
    """One model (+ optional runtime LoRA): greedy answers, held-out log-probs, teacher forcing."""

    def __init__(self, path, lora, prompts, text, threads, max_tokens, system_prompt,
                 heldout_windows=0):
        from quant.quality import Scorer

        self.sc = Scorer(path, threads, lora=lora)
        msgs = lambda q: [{"role": "system", "content": system_prompt}, {"role": "user", "content": q}]
        self.prompt_ids = [self.sc.rt.tokenize(self.sc.rt.format_chat(msgs(q)), add_bos=True)
                           for q in prompts]
        self.wins = self.sc.windows(text, 256)[:heldout_windows or None]
        self.max_tokens = max_tokens

    def answers(self) -> list[list[int]]:
        llm = self.sc.rt.llama
        out = []
        for ids in self.prompt_ids:
            ans: list[int] = []
            gen = llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                               reset=True)
            for tok in gen:
                if self.sc.rt._is_eog(tok):
                    break
                ans.append(int(tok))
                if len(ans) >= self.max_tokens:
                    break
            gen.close()
            out.append(ans)
        return out

    def heldout(self) -> list[np.ndarray]:
        return [self.sc.logprobs(w).astype(np.float32) for w in self.wins]

    def forced_argmax(self, answers: list[list[int]]) -> list[np.ndarray]:
        """Argmax at each answer position (and the one before it) given prompt + that answer."""
        out = []
        for ids, ans in zip(self.prompt_ids, answers):
            logits = self.sc.rt.logits(ids + ans)
            out.append(logits[len(ids) - 1: len(ids) + len(ans) - 1].argmax(-1))
        return out

    def close(self):
        self.sc.close()


def kl_top1(ref: list[np.ndarray], cand: list[np.ndarray]) -> tuple[float, float, float]:
    from quant.quality import kl_stats

    return kl_stats([r.astype(np.float64) for r in ref], [c.astype(np.float64) for c in cand])


def _prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


_RUNS: dict = {}  # (path, lora) -> (answers, held-out log-probs): each model is run once


def _run(path, lora, common):
    key = (str(path), str(lora or ""))
    if key not in _RUNS:
        ev = Eval(path, lora, **common)
        _RUNS[key] = (ev.answers(), ev.heldout())
        ev.close()
    return _RUNS[key]


def _forced(path, lora, answers, common, decode=()):
    """Teacher-forced argmax on `answers`, and the text of each id list in `decode`."""
    ev = Eval(path, lora, **common)
    try:
        return ev.forced_argmax(answers), [ev.sc.rt.detokenize(x) for x in decode]
    finally:
        ev.close()


def compare(label, ref_path, ref_lora, cand_path, common) -> tuple[dict, list]:
    """Reference (with runtime LoRA) vs a merged candidate; answers, teacher forcing, KL."""
    log(f"{label}: reference {Path(ref_path).name}{' + runtime LoRA' if ref_lora else ''} "
        f"vs {Path(cand_path).name}")
    ref_ans, ref_lps = _run(ref_path, ref_lora, common)
    ans, lps = _run(cand_path, None, common)
    differ = [i for i, (a, b) in enumerate(zip(ref_ans, ans)) if a != b]
    ref_forced, _ = _forced(ref_path, ref_lora, ref_ans, common)
    forced, texts = _forced(cand_path, None, ref_ans, common,
                            [x for i in differ for x in (ref_ans[i], ans[i])])
    kl, klmax, top1 = kl_top1(ref_lps, lps)
    same = [a == b for a, b in zip(ref_ans, ans)]
    tf = np.concatenate([a == b for a, b in zip(ref_forced, forced)])
    r = {"reference": Path(ref_path).name + (" + runtime LoRA" if ref_lora else ""),
         "candidate": Path(cand_path).name,
         "greedy_answer_agreement": round(float(np.mean(same)), 4),
         "agreeing_prompts": int(sum(same)), "prompts": len(same),
         "teacher_forced_top1": round(float(tf.mean()), 5), "teacher_forced_positions": int(tf.size),
         "kl_mean_heldout": round(kl, 6), "kl_max_heldout": round(klmax, 5),
         "top1_heldout": round(top1, 5)}
    diffs = [{"prompt": i, "common_prefix_tokens": _prefix(ref_ans[i], ans[i]),
              "ref": texts[2 * k], "merged": texts[2 * k + 1]} for k, i in enumerate(differ)]
    if diffs:
        r["disagreements"] = diffs
    log(f"{label}: {json.dumps({k: v for k, v in r.items() if k != 'disagreements'})}")
    return r, ref_ans


def time_decode(models: dict[str, tuple[str, str | None]], threads: int, rounds: int,
                n_tokens: int) -> dict:
    """Interleaved decode timing: every round times every model once, in a rotated order."""
    from quant.quality import Scorer

    scorers = {k: Scorer(p, threads, lora=lora) for k, (p, lora) in models.items()}
    runs: dict[str, list[float]] = {k: [] for k in scorers}
    names = list(scorers)
    try:
        for sc in scorers.values():  # warm-up: page the weights in
            sc.decode_speed(n_tokens=16)
        for i in range(rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for k in order:
                runs[k].append(round(scorers[k].decode_speed(n_tokens=n_tokens), 2))
            log(f"decode round {i + 1}/{rounds}: {json.dumps({k: runs[k][-1] for k in names})}")
    finally:
        for sc in scorers.values():
            sc.close()
    med = {k: round(statistics.median(v), 2) for k, v in runs.items()}
    base = med.get("bare_base") or 0.0
    return {"median": med, "runs": runs, "tokens_per_run": n_tokens, "rounds": rounds,
            "over_bare_base": {k: round(v / base, 3) if base else None for k, v in med.items()}}


def _adapter(args, work: Path, base: Path) -> tuple[Path, dict]:
    from quant.gguf_lora import read_gguf_lora

    if args.adapter:
        from assistant.quant_api import path_adapter_resolver

        home = Path(args.home) if args.home else None
        if home is None:
            from assistant.config import data_dir

            home = data_dir()
        path = path_adapter_resolver(args.adapter, home)
        kind = "trained"
    else:
        from quant.gguf_lora import write_lora_gguf
        from quant.merge import random_lora

        log("no --adapter: using a RANDOM adapter (its large deltas make answers fragile)")
        arch, pairs = random_lora(base, rank=8, alpha=16.0, std_b=args.lora_std, seed=0)
        path = write_lora_gguf(work / "random-lora.gguf", arch, pairs, 16.0)
        kind = f"random (lora_b std {args.lora_std})"
    ad = read_gguf_lora(path)
    ranks = sorted({ad.rank_of(n, a) for n, (a, _) in ad.tensors.items()})
    info = {"path": str(path), "kind": kind, "alpha": ad.stored_alpha, "ranks": ranks,
            "tensors": len(ad.tensors), "scale": ad.scale(next(iter(ad.tensors))),
            "targets": sorted({n.split(".")[2] for n in ad.tensors if n.startswith("blk.")})}
    return Path(path), info


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="", help="GGUF LoRA file or adapter version (default: random)")
    ap.add_argument("--home", default="", help="data dir for adapter versions (default: REVERIE_HOME)")
    ap.add_argument("--quick", action="store_true", help="6 prompts, Q8_0 only, 2 rounds (smoke run)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: default)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved decode timing rounds")
    ap.add_argument("--decode-tokens", type=int, default=96)
    ap.add_argument("--types", default="Q8_0,Q4_K_M,Q4_1")
    ap.add_argument("--lora-std", type=float, default=0.02, help="std of a random lora_b")
    ap.add_argument("--heldout-windows", type=int, default=0,
                    help="score only the first N 256-token windows of the held-out text (0: all)")
    ap.add_argument("--skip-roundtrip", action="store_true")
    ap.add_argument("--no-noise-floor", action="store_true",
                    help="skip F32 base vs base quantized to each type (no adapter)")
    ap.add_argument("--out", default="", help="also write the JSON here")
    args = ap.parse_args(argv)

    from assistant.config import Settings
    from assistant.quant_api import held_out_text
    from quant import gguf_io
    from quant.merge import merge
    from quant.quality import Scorer, perplexity
    from quant.quantize import llama_quantize
    from quant.registry import Registry

    prompts = PROMPTS[:3] + PROMPTS[-3:] if args.quick else PROMPTS
    types = ["Q8_0"] if args.quick else args.types.split(",")
    rounds = 2 if args.quick else args.rounds
    text = held_out_text()
    result: dict = {"machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                                "load_avg_start": list(os.getloadavg())},
                    "prompts": len(prompts), "max_tokens": args.max_tokens}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quant-bench-") as work:
        work = Path(work)
        base = Path(Registry(work / "home").get().path)
        base_type = gguf_io.file_type_name(gguf_io.open_gguf(base))
        result["base"] = {"path": str(base), "type": base_type, "size_bytes": base.stat().st_size}
        lora, result["adapter"] = _adapter(args, work, base)
        common = dict(prompts=prompts, text=text, threads=args.threads, max_tokens=args.max_tokens,
                      system_prompt=Settings().system_prompt, heldout_windows=args.heldout_windows)

        # --- models: F32 base, base at each type, merged at F32 and each type ---------------
        log("dequantizing the base to F32")
        f32 = gguf_io.write_unquantized(gguf_io.open_gguf(base), work / "base.F32.gguf", "F32")
        base_at, merged_at, merge_info = {}, {}, {}
        for qt in ["F32"] + types:
            log(f"merging at {qt}")
            r = merge(base, lora, work / f"merged.{qt}.gguf", qt, work_type="F32")
            merged_at[qt] = Path(r.path)
            merge_info[qt] = {"seconds": r.seconds, "size_bytes": r.size_bytes}
            if qt != "F32":
                base_at[qt] = (base if qt == base_type else
                               llama_quantize(f32, work / f"base.{qt}.gguf", qt))
        result["merge"] = merge_info

        # --- (1) agreement -----------------------------------------------------------------
        cmp = {}
        cmp["exact_f32"], _ = compare("exact F32", f32, str(lora), merged_at["F32"], common)
        cmp["same_type"], cmp["vs_shipped"] = {}, {}
        for qt in types:
            cmp["same_type"][qt], _ = compare(f"same type {qt}", base_at[qt], str(lora),
                                              merged_at[qt], common)
        for qt in types:
            cmp["vs_shipped"][qt] = (cmp["same_type"][qt] if base_at[qt] == base else
                                     compare(f"vs shipped {qt}", base, str(lora), merged_at[qt], common)[0])
        if not args.no_noise_floor:
            # what rounding alone does: the same F32 weights quantized to T, no adapter anywhere.
            # Two roundings of nearly equal weights (base vs base + delta) differ about this much.
            cmp["noise_floor_f32_vs_type"] = {
                qt: compare(f"noise floor {qt}", f32, None, base_at[qt], common)[0] for qt in types}
        result["agreement"] = cmp
        log("adapter effect: shipped base with vs without the runtime LoRA")
        bare_ans, bare_lps = _run(base, None, common)
        ref_ans, ref_lps = _run(base, str(lora), common)
        kl, _, top1 = kl_top1(ref_lps, bare_lps)
        result["adapter_effect"] = {
            "kl_runtime_lora_vs_bare_base_heldout": round(kl, 5), "top1_heldout": round(top1, 4),
            "answers_changed_by_adapter": int(sum(a != b for a, b in zip(ref_ans, bare_ans))),
            "prompts": len(prompts)}

        # --- (2) decode speed --------------------------------------------------------------
        timed = {"bare_base": (str(base), None), f"merged_{base_type}": (str(merged_at.get(base_type, merged_at[types[0]])), None),
                 "runtime_lora": (str(base), str(lora))}
        for qt in types:
            if qt != base_type:
                timed[f"merged_{qt}"] = (str(merged_at[qt]), None)
        log(f"timing decode ({rounds} interleaved rounds): {', '.join(timed)}")
        result["decode_tokens_per_s"] = time_decode(timed, args.threads, rounds, args.decode_tokens)
        result["decode_tokens_per_s"]["merged_same_type_over_bare"] = \
            result["decode_tokens_per_s"]["over_bare_base"].get(f"merged_{base_type}")

        # --- (3) Q4_1 -> F16 -> Q4_1 round trip ----------------------------------------------
        if not args.skip_roundtrip:
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
                "size_bytes": {"shipped": base.stat().st_size, "requantized": back.stat().st_size}}
    result["machine"]["load_avg_end"] = list(os.getloadavg())
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    out = json.dumps(result, indent=2)
    print(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(out + "\n")
    return result


if __name__ == "__main__":
    main()
