"""`reverie bench …`: benchmarks that run reverie and its reference side by side."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import emit_json, handle_errors

bench_app = typer.Typer(help="Benchmarks: reverie against its reference, same run, medians and ratios.",
                        no_args_is_help=True)


@bench_app.command("chat")
@handle_errors
def chat(reps: int = typer.Option(5, "--reps", min=1, help="Repetitions of the prompt set."),
         max_tokens: int = typer.Option(128, "--max-tokens", min=8, help="Tokens per answer."),
         model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or .gguf path."),
         threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (0: auto)."),
         json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Chat tokens/s and time to first token: reverie vs raw llama-cpp-python, serving what chat
    serves (after a night: the promoted adapter, merged or as a runtime LoRA), and that form's
    decode speed against the bare base in the same run (served_vs_base). Records nothing."""
    from bench.chat_bench import run

    # progress goes to stderr: with --json, stdout is the JSON document and nothing else
    with typer.progressbar(length=reps * 3, label="bench chat", file=sys.stderr) as bar:
        res = run(reps, max_tokens, model, threads, progress=lambda r, p: bar.update(1))
    if json_out:
        emit_json(res)
        return
    o, r = res["reverie"], res["raw_llama_cpp"]
    typer.echo(f"model {res['model']} · {res['threads']} threads · {res['reps']}×{res['prompts']} answers of ≤{res['max_tokens']} tokens")
    typer.echo(f"{'':14}{'tok/s':>10}{'TTFT ms':>10}")
    typer.echo(f"{'reverie':14}{o['tokens_per_s_median']:>10.1f}{o['ttft_s_median'] * 1000:>10.0f}")
    typer.echo(f"{'raw llama.cpp':14}{r['tokens_per_s_median']:>10.1f}{r['ttft_s_median'] * 1000:>10.0f}")
    if res["served"]:
        b = res["raw_llama_cpp_bare_base"]
        typer.echo(f"{'bare base':14}{b['tokens_per_s_median']:>10.1f}{b['ttft_s_median'] * 1000:>10.0f}")
    typer.echo(f"ratio tokens/s {res['ratio_tokens_per_s']:.3f} · ratio TTFT {res['ratio_ttft']:.3f}")
    sv = res["served"]
    if sv:
        form = "merged into the base" if sv["form"] == "merged" else "a runtime LoRA"
        typer.echo(f"serving adapter {sv['adapter_id']} as {form}: decode {res['served_vs_base']:.3f}× "
                   f"the bare base (chat {res['chat_vs_base']:.3f}×)")
    else:
        typer.echo("serving the bare base (no adapter promoted)")


@bench_app.command("memory-scale")
@handle_errors
def memory_scale(n: list[int] = typer.Option([10_000], "--n", min=1,
                                           help="Memories in the store (repeat for several sizes)."),
                 queries: int = typer.Option(200, "--queries", min=1, help="Distinct queries timed."),
                 k: int = typer.Option(10, "--k", "-k", min=1, help="Memories recalled per query."),
                 seed: int = typer.Option(0, "--seed", help="Synthetic corpus seed."),
                 cache_dir: Optional[Path] = typer.Option(
                     None, "--cache-dir", help="Where built stores are kept (default ~/.cache/reverie)."),
                 rebuild: bool = typer.Option(False, "--rebuild", help="Build the store again."),
                 json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Hybrid recall latency (p50/p95, per stage) over N synthetic memories, beside a bare chromadb
    collection with the same embeddings and k in the same run (interleaved); built once, cached."""
    from bench.memory_scale import run

    results = []
    for size in n:
        with typer.progressbar(length=size, label=f"embedding {size}", file=sys.stderr) as bar:
            def progress(done: int, total: int, bar=bar) -> None:
                bar.update(done - bar.pos)

            results.append(run(size, queries, k, seed, cache_dir, rebuild, progress))
    if json_out:
        emit_json(results[0] if len(results) == 1 else results)
        return
    for r in results:
        stages = " · ".join(f"{s} {v['p50']:.1f}/{v['p95']:.1f}" for s, v in r["stages_ms"].items())
        raw = r["raw_chromadb"]["ms"]
        typer.echo(f"{r['n']} memories, {r['n_queries']} queries, k={r['k']}: recall p50 {r['p50_ms']:.1f} ms, "
                   f"p95 {r['p95_ms']:.1f} ms · raw chromadb p50 {raw['p50']:.1f} ms, p95 {raw['p95']:.1f} ms "
                   f"· ratio p50 {r['ratio_p50']:.1f}×, p95 {r['ratio_p95']:.1f}× "
                   f"(load average {r['load_average'][0]:.2f})")
        typer.echo(f"  per stage p50/p95 ms: {stages}")


@bench_app.command("startup")
@handle_errors
def startup(reps: int = typer.Option(3, "--reps", min=1, help="Timed rounds (after one warm-up)."),
            max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Tokens per answer."),
            model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or .gguf path."),
            throughput: bool = typer.Option(False, "--throughput",
                                            help="Also embedding texts/s vs sentence-transformers."),
            json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Cold start: `reverie ask` vs raw llama-cpp-python (same load + answer), memory search/add."""
    from bench.startup_bench import run

    res = run(reps, max_tokens, model, throughput, progress=lambda m: typer.echo(m, err=True))
    if json_out:
        emit_json(res)
        return
    typer.echo(f"ask {res['ask_wall_s']:.2f} s · raw llama.cpp {res['raw_llama_cpp_wall_s']:.2f} s · "
               f"ask_vs_raw {res['ask_vs_raw']:.2f}")
    typer.echo(f"memory search {res['memory_search_wall_s']:.2f} s · memory add {res['memory_add_wall_s']:.2f} s "
               f"(load average {res['load_average_before'][0]:.2f})")


try:  # the memory benchmark's command body lives with the memory commands
    from .memory_cmd import bench_memory as _bench_memory

    bench_app.command("memory")(_bench_memory)
except ImportError:  # pragma: no cover
    pass
