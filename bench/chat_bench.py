"""Chat throughput: an answer through reverie's chat path vs raw llama-cpp-python decoding the
same prompt on the same model file and threads, in one run. Reports medians and the ratio.

Run: .venv/bin/python -m bench.chat_bench [--reps 5] [--max-tokens 128] > result.json

Chat serves what the data dir ($REVERIE_HOME) serves: after a night that is the promoted
adapter in its served form (merged into the base, or a runtime LoRA); raw llama-cpp-python loads
the same form, and a third side, raw llama-cpp-python on the bare base, gives served_vs_base.
--adapter PATH (a GGUF LoRA): a scratch data dir serving that file as a runtime LoRA instead.
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
        progress=None, adapter: str | None = None, home: Path | None = None) -> dict:
    """Without adapter: chat as the user's data dir serves it (home, default $REVERIE_HOME) —
    after a night that is the promoted adapter in its served form (assistant.served), timed
    against raw llama-cpp-python on the same form and on the bare base (served_vs_base). Nothing
    is recorded. With adapter (a GGUF LoRA path): a scratch data dir, served as a runtime LoRA."""
    from llama_cpp import Llama

    from assistant.chat import ChatSession
    from assistant.config import data_dir
    from assistant.served import runtime_lora
    from quant.runtime import default_threads

    threads = threads or default_threads()
    load_before = os.getloadavg()  # the machine is shared: a result says how busy it was
    scratch = Path(tempfile.mkdtemp(prefix="reverie-bench-")) if adapter else None
    home = scratch or home or data_dir()
    session = ChatSession(home, model=model, backend="llama.cpp", use_memory=False,
                          use_adapter=adapter is None, max_tokens=max_tokens, threads=threads,
                          record=False)
    base_path = session.base_info.path
    if adapter:
        # chat re-reads the promoted adapter before every turn: serve this file instead
        # (promotion is not what is measured)
        session.use_adapter = True
        session.services.served = lambda info: runtime_lora(info.path, adapter, "bench")
    session.send("Hello")  # warm-up; picks up the adapter
    served = session.served
    kw = dict(n_ctx=session.runtime.n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512,
              verbose=False)
    raw = Llama(model_path=served.model_path if served else base_path,
                **({"lora_path": served.adapter} if served and served.adapter else {}), **kw)
    assert (session.runtime.model.path, session.runtime.adapter_path) == (
        (served.model_path, served.adapter) if served else (base_path, None)), \
        "the chat side is not serving what the raw side loads"
    plain = Llama(model_path=base_path, **kw) if served else None
    ours, ref, ref_plain = [], [], []
    session.new()
    _raw_run(raw, session.runtime.format_chat([{"role": "user", "content": "Hello"}]), 8)
    if plain is not None:
        _raw_run(plain, session.runtime.format_chat([{"role": "user", "content": "Hello"}]), 8)
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
    if scratch is not None:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)

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
    # what chat serves: the promoted adapter's form (None: the bare base, nothing promoted)
    out["served"] = served.to_dict() if served else None
    if served:
        base = med(ref_plain, "tokens_per_s")
        out["raw_llama_cpp_bare_base"] = {"tokens_per_s_median": base,
                                          "ttft_s_median": med(ref_plain, "ttft_s")}
        # decode speed of the served form (raw llama-cpp-python on it) over the bare base, and
        # of reverie's chat on it over the bare base; interleaved in one run
        out["served_vs_base"] = out["raw_llama_cpp"]["tokens_per_s_median"] / base
        out["chat_vs_base"] = out["reverie"]["tokens_per_s_median"] / base
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--adapter", default=None, help="a GGUF LoRA: both sides decode through it")
    ap.add_argument("--home", type=Path, default=None, help="data dir (default $REVERIE_HOME)")
    a = ap.parse_args(argv)
    json.dump(run(a.reps, a.max_tokens, a.model, a.threads, adapter=a.adapter, home=a.home), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
