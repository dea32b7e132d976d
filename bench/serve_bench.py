"""Serving overhead: the same answers streamed through `reverie serve` (HTTP + SSE, measured at the
client) and from `ChatSession.send` in this process (what `reverie chat` runs), on the same
prompts, model, threads and settings, in one run, alternating which side goes first.

Both sides recall memory (an empty store: the same work) and record nothing. Decode tokens/s is
measured the same way on both sides, where the text arrives: (completion tokens − 1) over the time
from the first piece of text to the last. TTFT is from the call (request sent / send called) to
the first piece of text, so the server's overhead includes HTTP, JSON and the queue hand-off.
Reported: ratio of medians, the median of paired ratios (same prompt, adjacent in time: steadier
on a loaded machine), and the server's transport ratio (its client-side speed over its own decode
loop's, which isolates what HTTP + SSE cost from which process decodes faster).

Run: .venv/bin/python -m bench.serve_bench [--reps 5] [--max-tokens 128]
Writes JSON to stdout and bench/results/serve_bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.chat_bench import PROMPTS

RESULT = Path(__file__).parent / "results" / "serve_bench.json"


def _start_server(home: Path) -> tuple[subprocess.Popen, str, Path]:
    err = home.parent / "serve.err"
    exe = Path(sys.executable).parent / "reverie"
    proc = subprocess.Popen([str(exe), "serve", "--port", "0"], stdout=subprocess.DEVNULL,
                            stderr=open(err, "w"), env=dict(os.environ, REVERIE_HOME=str(home)))
    deadline = time.time() + 300
    while time.time() < deadline:
        m = re.search(r"at (http://\S+/v1)", err.read_text())
        if m:
            return proc, m.group(1), err
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"reverie serve did not start:\n{err.read_text()[-2000:]}")


def _via_server(client, url: str, prompt: str, max_tokens: int) -> dict:
    body = {"stream": True, "max_tokens": max_tokens, "stream_options": {"include_usage": True},
            "reverie": {"record": False}, "messages": [{"role": "user", "content": prompt}]}
    t0 = time.perf_counter()
    first = last = None
    text, tokens, runtime_tps = "", 0, 0.0
    with client.stream("POST", url + "/chat/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ch = json.loads(line[6:])
            if ch.get("usage"):
                tokens = ch["usage"]["completion_tokens"]
            if ch.get("reverie"):
                runtime_tps = ch["reverie"]["tokens_per_s"]
            for c in ch.get("choices", []):
                piece = c["delta"].get("content")
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    text += piece
    return _row(t0, first, last, tokens, text, runtime_tps=runtime_tps)


def _via_chat(session, prompt: str) -> dict:
    times, pieces = [], []

    def on_text(piece: str) -> None:
        times.append(time.perf_counter())
        pieces.append(piece)

    t0 = time.perf_counter()
    turn = session.send(prompt, on_text=on_text)
    return _row(t0, times[0] if times else None, times[-1] if times else None,
                turn.completion_tokens, "".join(pieces), runtime_tps=turn.tokens_per_s)


def _row(t0, first, last, tokens, text, runtime_tps=None) -> dict:
    span = (last - first) if first and last else 0.0
    row = {"ttft_s": (first or time.perf_counter()) - t0, "tokens": tokens,
           "decode_tokens_per_s": (tokens - 1) / span if tokens > 1 and span > 0 else 0.0,
           "answer": text.strip()}
    if runtime_tps is not None:
        row["runtime_tokens_per_s"] = runtime_tps
    return row


def run(reps: int = 5, max_tokens: int = 128, progress=None) -> dict:
    import httpx

    from assistant.chat import ChatSession

    home = Path(tempfile.mkdtemp(prefix="reverie-serve-bench-")) / "home"
    proc, url, _ = _start_server(home)
    session = ChatSession(home, record=False, max_tokens=max_tokens)
    server, chat = [], []
    try:
        with httpx.Client() as client:
            _via_server(client, url, "Hello", 8)  # warm-up both (page cache, thread pools)
            _via_chat(session, "Hello")
            for r in range(reps):
                for i, p in enumerate(PROMPTS):
                    sides = ("server", "chat") if (r + i) % 2 == 0 else ("chat", "server")
                    for side in sides:
                        session.new()
                        if side == "server":
                            server.append(_via_server(client, url, p, max_tokens))
                        else:
                            chat.append(_via_chat(session, p))
                    if progress:
                        progress(r, p)
        threads = session.runtime.threads
        model = session.runtime.model.name
    finally:
        session.close()
        proc.terminate()
        proc.wait(timeout=60)

    def med(rows, key):
        return statistics.median(x[key] for x in rows)

    def side(rows):
        return {"decode_tokens_per_s_median": med(rows, "decode_tokens_per_s"),
                "ttft_s_median": med(rows, "ttft_s"), "tokens_median": med(rows, "tokens")}

    out = {"model": model, "backend": session.runtime.backend, "threads": threads, "reps": reps,
           "prompts": len(PROMPTS), "max_tokens": max_tokens,
           "server": side(server), "chat_session": side(chat)}
    # the decode loop's own count (Runtime.stream), each side's process: the transport's share is
    # the gap between this and decode_tokens_per_s
    out["server"]["runtime_tokens_per_s_median"] = med(server, "runtime_tokens_per_s")
    out["chat_session"]["runtime_tokens_per_s_median"] = med(chat, "runtime_tokens_per_s")
    out["ratio_decode_tokens_per_s"] = (out["server"]["decode_tokens_per_s_median"]
                                        / out["chat_session"]["decode_tokens_per_s_median"])
    # Each server answer next to the chat answer to the same prompt, run right before or after
    # it: on a busy machine the load drifts between minutes, and pairs see the same load.
    paired = [a["decode_tokens_per_s"] / b["decode_tokens_per_s"] for a, b in zip(server, chat)
              if b["decode_tokens_per_s"] > 0]
    out["paired_ratio_decode_tokens_per_s_median"] = statistics.median(paired)
    # What the transport alone costs: the server's text as its client sees it against its own
    # decode loop's count, answer by answer (1.0: HTTP/SSE slows nothing down).
    out["server_transport_ratio_median"] = statistics.median(
        a["decode_tokens_per_s"] / a["runtime_tokens_per_s"] for a in server if a["runtime_tokens_per_s"])
    out["ttft_overhead_s"] = out["server"]["ttft_s_median"] - out["chat_session"]["ttft_s_median"]
    # greedy on both sides: the streamed text should be the same, prompt by prompt
    out["same_answers"] = sum(a["answer"] == b["answer"] for a, b in zip(server, chat))
    out["answers"] = len(server)
    out["load_average_1m"] = os.getloadavg()[0]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    a = ap.parse_args(argv)
    res = run(a.reps, a.max_tokens)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(res, indent=2) + "\n")
    json.dump(res, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
