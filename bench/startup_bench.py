"""Cold start: whole `reverie` processes against the engine under them, in one run.

- `ask` (memory on, one fact stored) against raw llama-cpp-python in a fresh process doing the
  same load + answer: the same model file, n_ctx, threads, the very prompt text reverie sends
  (system prompt, recalled memory, question; built once before timing), the same max tokens,
  greedy, the chat's repeat_penalty. Ratio `ask_vs_raw` of the medians.
- `memory search` and `memory add` wall seconds.
- With throughput=True: the embedder (memory/minilm.py, NumPy) against sentence-transformers on
  the same texts, texts/s in this process, plus each one's cold first query in a fresh process.

Runs are interleaved (the order flips every repetition) after one untimed warm-up (page cache,
and the bytecode cache below), so a busy machine slows both sides alike; medians of `reps`.

Both sides run with a bytecode cache, as an installed package has its .pyc files: a temporary
PYTHONPYCACHEPREFIX that the warm-up round fills (removed afterwards). With
PYTHONDONTWRITEBYTECODE=1 in the environment (as in the sandbox these numbers were taken in),
every ask compiled the reverie modules edited since their .pyc was written from source again
(18 modules, 121 KB, ~24 ms CPU on the day this was added; raw: none), and more as more files
change; `bytecode_cache=False` (--no-bytecode-cache) measures that way.

The load average is reported with the numbers: on a loaded 2-core machine the absolute times
are high and the ratios are the point.

Run: .venv/bin/reverie bench startup --json   (or python -m bench.startup_bench)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from common.threads import WAIT_POLICY

QUESTION = "Where do I live?"
FACT = "I live in Oslo."

# The raw side: llama-cpp-python alone, loading the same file and answering the same prompt.
RAW = r"""
import json, sys
a = json.loads(sys.argv[1])
from llama_cpp import Llama
llm = Llama(model_path=a["model"], n_ctx=a["n_ctx"], n_threads=a["threads"],
            n_threads_batch=a["threads"], verbose=False)
n, text = 0, []
for c in llm.create_completion(a["prompt"], max_tokens=a["max_tokens"], temperature=0.0, top_k=1,
                               top_p=1.0, min_p=0.0, repeat_penalty=a["repeat_penalty"], stream=True):
    n += 1
    text.append(c["choices"][0]["text"])
print(json.dumps({"completion_tokens": n, "answer": "".join(text).strip()}))
"""

# A cold first query: import, load, embed one text (the ST side is what reverie did before).
FIRST_OURS = ("import time; t=time.perf_counter(); from memory import embedder; "
              "embedder.embed_query('where do I live?'); print(time.perf_counter()-t)")
FIRST_ST = ("import time; t=time.perf_counter(); from sentence_transformers import SentenceTransformer; "
            "from memory.embedder import model_dir; "
            "m=SentenceTransformer(str(model_dir()), device='cpu'); "
            "m.encode(['where do I live?'], normalize_embeddings=True); print(time.perf_counter()-t)")


def _reverie() -> list[str]:
    """The installed `reverie` entry point beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("reverie")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from cli.main import main; main()"]


def _timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, stdout). CPU time (user + sys) is what the process itself
    needed, so it moves much less with machine load than wall time does."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}… exited {p.returncode}: {p.stderr.strip()[-800:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.stdout


def _prepare(home: Path, max_tokens: int, model: str | None) -> dict:
    """The prompt, model file and decoding settings `reverie ask` will use, built once here."""
    from assistant.chat import ChatSession

    session = ChatSession(home, model=model, backend="llama.cpp", max_tokens=max_tokens, record=False)
    try:
        _, block = session.services.recall(QUESTION, session.runtime) if session.use_memory else ([], "")
        messages, _, _ = session.build_messages(QUESTION, block)
        cfg = session.settings.generation_config()
        rt = session.runtime
        return {"model": str(rt.model.path), "model_name": rt.model.name, "n_ctx": rt.n_ctx,
                "threads": rt.threads, "prompt": rt.format_chat(messages), "max_tokens": cfg.max_tokens,
                "repeat_penalty": cfg.repeat_penalty, "memory_in_prompt": bool(block),
                "prompt_tokens": len(rt.tokenize(rt.format_chat(messages), add_bos=False))}
    finally:
        session.close()


def run(reps: int = 3, max_tokens: int = 64, model: str | None = None, throughput: bool = False,
        progress: Callable[[str], None] | None = None, bytecode_cache: bool = True) -> dict:
    if reps < 1:
        raise ValueError("reps must be at least 1.")
    say = progress or (lambda msg: None)
    from common.threads import passive_openmp

    passive_openmp()  # the raw side inherits reverie's OpenMP policy, as every reverie process sets it
    home = Path(tempfile.mkdtemp(prefix="reverie-startup-"))
    env = dict(os.environ, REVERIE_HOME=str(home))
    if bytecode_cache:  # outside the data dir and the checkout; both sides share it
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(home.with_name(home.name + "-pyc"))
    rev = _reverie()
    load_before = os.getloadavg()
    try:
        say("storing one fact")
        _timed(rev + ["memory", "add", FACT], env)
        old_home = os.environ.get("REVERIE_HOME")
        os.environ["REVERIE_HOME"] = str(home)  # the bench's own process prepares in the same dir
        try:
            raw_args = _prepare(home, max_tokens, model)
        finally:
            if old_home is None:
                os.environ.pop("REVERIE_HOME", None)
            else:
                os.environ["REVERIE_HOME"] = old_home
        ask_cmd = rev + ["ask", QUESTION, "--json", "--max-tokens", str(max_tokens)]
        if model:
            ask_cmd += ["--model", model]
        raw_cmd = [sys.executable, "-c", RAW, json.dumps({k: raw_args[k] for k in (
            "model", "n_ctx", "threads", "prompt", "max_tokens", "repeat_penalty")})]
        times: dict[str, list[float]] = {"ask": [], "raw": [], "search": [], "add": []}
        cpu: dict[str, list[float]] = {k: [] for k in times}
        seen: dict[str, list] = {"ask_tokens": [], "raw_tokens": [], "ask_prompt_tokens": []}
        sides = ["ask", "raw", "search", "add"]
        for r in range(reps + 1):  # the first round warms the page cache and is not counted
            for side in (sides if r % 2 == 0 else sides[::-1]):
                say(f"round {r}/{reps} {side}")
                if side == "ask":
                    wall, used, out = _timed(ask_cmd, env)
                    d = json.loads(out)
                    seen["ask_tokens"].append(d["completion_tokens"])
                    seen["ask_prompt_tokens"].append(d["prompt_tokens"])
                    answer_ask = d["answer"]
                elif side == "raw":
                    wall, used, out = _timed(raw_cmd, env)
                    d = json.loads(out.strip().splitlines()[-1])
                    seen["raw_tokens"].append(d["completion_tokens"])
                    answer_raw = d["answer"]
                elif side == "search":
                    wall, used, _ = _timed(rev + ["memory", "search", "where do I live"], env)
                else:
                    wall, used, _ = _timed(rev + ["memory", "add", f"My locker number is {100 + r}."], env)
                if r > 0:
                    times[side].append(wall)
                    cpu[side].append(used)
        med = {k: statistics.median(v) for k, v in times.items()}
        out = {
            "what": "cold whole-process wall seconds, medians; ask (memory on, one fact stored) vs raw "
                    "llama-cpp-python loading the same model and answering the same prompt",
            "reps": reps, "model": raw_args["model_name"], "threads": raw_args["threads"],
            "n_ctx": raw_args["n_ctx"], "max_tokens": max_tokens,
            "repeat_penalty": raw_args["repeat_penalty"], "question": QUESTION,
            "memory_in_prompt": raw_args["memory_in_prompt"], "prompt_tokens": raw_args["prompt_tokens"],
            "ask_wall_s": round(med["ask"], 3), "raw_llama_cpp_wall_s": round(med["raw"], 3),
            "ask_vs_raw": round(med["ask"] / med["raw"], 3),
            # ask and raw run back to back in each round: the ratio within a round moves less with
            # other sessions' load than the ratio of medians taken minutes apart
            "ask_vs_raw_rounds": [round(a / b, 3) for a, b in zip(times["ask"], times["raw"])],
            "ask_vs_raw_rounds_median": round(statistics.median(
                a / b for a, b in zip(times["ask"], times["raw"])), 3),
            "memory_search_wall_s": round(med["search"], 3), "memory_add_wall_s": round(med["add"], 3),
            "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "cpu_s_median": {k: round(statistics.median(v), 3) for k, v in cpu.items()},
            # CPU seconds move far less with other processes' load than wall seconds; the ask
            # side's concurrency (model load beside chromadb's import) shows in wall only
            "ask_vs_raw_cpu": round(statistics.median(cpu["ask"]) / statistics.median(cpu["raw"]), 3),
            # both sides run llama.cpp under the OpenMP wait policy reverie sets (common/threads.py)
            "omp_wait_policy": env.get(WAIT_POLICY),
            "bytecode_cache": bytecode_cache,
            "completion_tokens": {"ask": seen["ask_tokens"][1:], "raw": seen["raw_tokens"][1:]},
            "answers": {"ask": answer_ask, "raw": answer_raw},
            "cpu_count": os.cpu_count(),
        }
        if throughput:
            out["embedding"] = embedding_throughput(reps, say)
        out["load_average_before"] = [round(x, 2) for x in load_before]
        out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(home.with_name(home.name + "-pyc"), ignore_errors=True)


def embedding_throughput(reps: int = 3, say: Callable[[str], None] = lambda m: None,
                         n_texts: int = 512, batch_size: int = 64) -> dict:
    """Texts/s of reverie's embedder and of sentence-transformers on the same synthetic chat
    turns (bench/memory_scale.py's corpus), interleaved in this process; and each one's cold
    first query (import + load + one vector) in fresh processes. Imports sentence-transformers."""
    import numpy as np

    from bench.memory_scale import corpus
    from memory import embedder

    texts = [t for _, t, _ in corpus(n_texts, seed=7)]
    first: dict[str, list[float]] = {"reverie": [], "sentence_transformers": []}
    for r in range(reps + 1):
        for name, code in ((("reverie", FIRST_OURS), ("sentence_transformers", FIRST_ST))[:: 1 if r % 2 == 0 else -1]):
            say(f"first query {name} {r}/{reps}")
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                               cwd=str(Path(__file__).resolve().parents[1]))
            if p.returncode != 0:
                raise RuntimeError(f"{name} first query failed: {p.stderr.strip()[-800:]}")
            if r > 0:
                first[name].append(float(p.stdout.strip().splitlines()[-1]))

    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(embedder.model_dir()), device="cpu")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rates: dict[str, list[float]] = {"reverie": [], "sentence_transformers": []}
    for r in range(reps + 1):
        for name in (("reverie", "sentence_transformers")[:: 1 if r % 2 == 0 else -1]):
            say(f"throughput {name} {r}/{reps}")
            embedder.clear_cache()
            t0 = time.perf_counter()
            if name == "reverie":
                ours = np.asarray(embedder._encode(texts, batch_size))
            else:
                ref = st.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
            if r > 0:
                rates[name].append(len(texts) / (time.perf_counter() - t0))
    cos = (ours * ref).sum(axis=1)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "texts": len(texts), "batch_size": batch_size, "torch_threads": torch.get_num_threads(),
        "reverie_workers": min(embedder.WORKERS, os.cpu_count() or 1),
        "texts_per_s": {k: round(v, 1) for k, v in med.items()},
        "reverie_vs_sentence_transformers": round(med["reverie"] / med["sentence_transformers"], 3),
        "first_query_cold_s": {k: round(statistics.median(v), 3) for k, v in first.items()},
        "cosine_min": round(float(cos.min()), 6), "max_abs_diff": float(np.abs(ours - ref).max()),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default=None)
    ap.add_argument("--throughput", action="store_true", help="also embedding texts/s vs sentence-transformers")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="children compile from source when PYTHONDONTWRITEBYTECODE is set")
    a = ap.parse_args(argv)
    res = run(a.reps, a.max_tokens, a.model, a.throughput, progress=lambda m: print(m, file=sys.stderr),
              bytecode_cache=not a.no_bytecode_cache)
    json.dump(res, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
