"""Chat throughput: an answer through reverie's chat path vs raw llama-cpp-python decoding the
same prompt on the same model file and threads, in one run. Reports medians and the ratio.

Run: .venv/bin/python -m bench.chat_bench [--reps 5] [--max-tokens 128] > result.json

--adapter PATH (a GGUF LoRA): reverie chats through that adapter and raw llama-cpp-python loads
it with lora_path; a third side, raw llama-cpp-python without it, shows what runtime LoRA costs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "Explain in a few sentences how a bicycle stays upright while moving.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Describe the water cycle to a ten-year-old.",
]


def _raw_run(llm, prompt: str, max_tokens: int) -> dict:
    """Raw llama-cpp-python streaming completion with greedy settings."""
    t0 = time.perf_counter()
    first = None
    n = 0
    for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1,
                                       top_p=1.0, min_p=0.0, repeat_penalty=1.0, stream=True):
        if first is None:
            first = time.perf_counter() - t0
        n += 1
    total = time.perf_counter() - t0
    return {"ttft_s": first or total, "total_s": total, "tokens": n,
            "tokens_per_s": (n - 1) / (total - first) if n > 1 and first else 0.0}


def run(reps: int = 5, max_tokens: int = 128, model: str | None = None, threads: int = 0,
        progress=None, adapter: str | None = None) -> dict:
    from llama_cpp import Llama

    from assistant.chat import ChatSession
    from quant.runtime import default_threads

    threads = threads or default_threads()
    load_before = os.getloadavg()  # the machine is shared: a result says how busy it was
    home = Path(tempfile.mkdtemp(prefix="reverie-bench-"))
    os.environ.setdefault("REVERIE_HOME", str(home))
    session = ChatSession(home, model=model, backend="llama.cpp", use_memory=False,
                          use_adapter=False, max_tokens=max_tokens, threads=threads)
    kw = dict(model_path=session.runtime.model.path, n_ctx=session.runtime.n_ctx,
              n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
    raw = Llama(**kw, **({"lora_path": adapter} if adapter else {}))
    plain = None
    if adapter:
        # chat re-reads the promoted adapter before every turn: answer with this file instead
        # (promotion is not what is measured)
        session.use_adapter = True
        session.services.promoted_adapter_for = lambda runtime: adapter
        plain = Llama(**kw)
    ours, ref, ref_plain = [], [], []
    # warm-up both (page cache, thread pools)
    session.send("Hello")
    assert session.runtime.adapter_path == adapter, "the chat side is not using the adapter"
    session.new()
    _raw_run(raw, session.runtime.format_chat([{"role": "user", "content": "Hello"}]), 8)
    for r in range(reps):
        for p in PROMPTS:
            session.new()
            prompt = session.runtime.format_chat(session.build_messages(p)[0])
            # alternate the order so neither side always runs on a warmer machine
            order = (0, 1, 2) if r % 2 == 0 else (2, 1, 0)
            for side in order:
                if side == 0:
                    t = session.send(p)
                    ours.append({"ttft_s": t.ttft_s, "tokens_per_s": t.tokens_per_s,
                                 "tokens": t.completion_tokens})
                elif side == 1:
                    ref.append(_raw_run(raw, prompt, max_tokens))
                elif plain is not None:
                    ref_plain.append(_raw_run(plain, prompt, max_tokens))
            if progress:
                progress(r, p)
    session.close()
    raw.close()
    if plain is not None:
        plain.close()

    def med(rows, key):
        return statistics.median(x[key] for x in rows)

    out = {
        "model": session.runtime.model.name, "backend": "llama.cpp", "threads": threads,
        "reps": reps, "prompts": len(PROMPTS), "max_tokens": max_tokens,
        "reverie": {"tokens_per_s_median": med(ours, "tokens_per_s"), "ttft_s_median": med(ours, "ttft_s"),
                    "tokens_median": med(ours, "tokens")},
        "raw_llama_cpp": {"tokens_per_s_median": med(ref, "tokens_per_s"), "ttft_s_median": med(ref, "ttft_s"),
                          "tokens_median": med(ref, "tokens")},
    }
    out["load_average_before"] = [round(x, 2) for x in load_before]
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["cpus"] = os.cpu_count()
    out["ratio_tokens_per_s"] = out["reverie"]["tokens_per_s_median"] / out["raw_llama_cpp"]["tokens_per_s_median"]
    out["ratio_ttft"] = out["reverie"]["ttft_s_median"] / out["raw_llama_cpp"]["ttft_s_median"]
    if adapter:
        out["adapter"] = adapter
        out["raw_llama_cpp_without_adapter"] = {"tokens_per_s_median": med(ref_plain, "tokens_per_s"),
                                                "ttft_s_median": med(ref_plain, "ttft_s")}
        out["runtime_lora_cost_tokens_per_s"] = (out["raw_llama_cpp"]["tokens_per_s_median"]
                                                 / out["raw_llama_cpp_without_adapter"]["tokens_per_s_median"])
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--adapter", default=None, help="a GGUF LoRA: both sides decode through it")
    a = ap.parse_args(argv)
    json.dump(run(a.reps, a.max_tokens, a.model, a.threads, adapter=a.adapter), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
