"""`reverie bench …`: benchmarks that run reverie and its reference side by side."""
from __future__ import annotations

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
    """Chat tokens/s and time to first token: reverie vs raw llama-cpp-python."""
    from bench.chat_bench import run

    with typer.progressbar(length=reps * 3, label="bench chat", file=None) as bar:
        res = run(reps, max_tokens, model, threads, progress=lambda r, p: bar.update(1))
    if json_out:
        emit_json(res)
        return
    o, r = res["reverie"], res["raw_llama_cpp"]
    typer.echo(f"model {res['model']} · {res['threads']} threads · {res['reps']}×{res['prompts']} answers of ≤{res['max_tokens']} tokens")
    typer.echo(f"{'':14}{'tok/s':>10}{'TTFT ms':>10}")
    typer.echo(f"{'reverie':14}{o['tokens_per_s_median']:>10.1f}{o['ttft_s_median'] * 1000:>10.0f}")
    typer.echo(f"{'raw llama.cpp':14}{r['tokens_per_s_median']:>10.1f}{r['ttft_s_median'] * 1000:>10.0f}")
    typer.echo(f"ratio tokens/s {res['ratio_tokens_per_s']:.3f} · ratio TTFT {res['ratio_ttft']:.3f}")


try:  # the memory benchmark's command body lives with the memory commands
    from .memory_cmd import bench_memory as _bench_memory

    bench_app.command("memory")(_bench_memory)
except ImportError:  # pragma: no cover
    pass
