"""The `reverie` command. Each command parses, makes one call into assistant/, and formats."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from .common import emit_json, fail, handle_errors, home
from .models_cmd import models_app
from .bench_cmd import bench_app

app = typer.Typer(
    help="reverie — a private assistant that remembers what you tell it and learns it overnight.\n\n"
         "Start with `reverie chat`. Data lives in the platform data dir ($REVERIE_HOME overrides).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")

for _mod, _attr, _name in (("cli.memory_cmd", "memory_app", "memory"),
                           ("cli.quant_cmd", "quant_app", "quant"),
                           ("cli.sleep_cmd", "feedback_app", "feedback"),
                           ("cli.sleep_cmd", "adapters_app", "adapters"),
                           ("cli.sleep_cmd", "schedule_app", "schedule")):
    try:
        _m = __import__(_mod, fromlist=[_attr])
        app.add_typer(getattr(_m, _attr), name=_name)
    except (ImportError, AttributeError):
        pass
try:
    from .sleep_cmd import register as _register_sleep

    _register_sleep(app)
except ImportError:
    pass
try:
    from .privacy_cmd import register as _register_privacy

    _register_privacy(app)
except ImportError:
    pass
try:
    from .eval_cmd import register as _register_eval

    _register_eval(app)
except ImportError:
    pass

ModelOpt = typer.Option(None, "--model", "-m", help="Model name from `reverie models list`, or a .gguf path.")
BackendOpt = typer.Option("auto", "--backend", "-b",
                          help="auto (MLX on Apple Silicon, llama.cpp elsewhere), llama.cpp or mlx.")


@app.command()
@handle_errors
def chat(
    model: Optional[str] = ModelOpt,
    backend: str = BackendOpt,
    no_memory: bool = typer.Option(False, "--no-memory", help="Do not recall memories into the prompt."),
    no_adapter: bool = typer.Option(False, "--no-adapter", help="Do not use the promoted LoRA adapter."),
    system: Optional[str] = typer.Option(None, "--system", help="Replace the system prompt."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Longest answer, in tokens."),
    stats: bool = typer.Option(False, "--stats", help="Print tokens/s and time to first token after each answer."),
):
    """Chat in the terminal (streaming). Type /help for commands; works with piped stdin too."""
    from assistant.chat import ChatSession

    interactive = sys.stdin.isatty()
    session = ChatSession(home(), model=model, backend=backend,
                          use_memory=False if no_memory else None, use_adapter=not no_adapter,
                          system_prompt=system, max_tokens=max_tokens)
    rt = session.runtime
    typer.secho(f"reverie · {rt.model.name} on {rt.backend}"
                f"{' + adapter' if rt.adapter_path else ''} · memory {'on' if session.use_memory else 'off'}"
                " · /help for commands", dim=True, err=True)
    try:
        while True:
            try:
                line = input("you> ") if interactive else sys.stdin.readline()
            except EOFError:
                break
            if not interactive and line == "":
                break
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                res = session.command(line)
                if res.output:
                    typer.echo(res.output)
                if res.quit:
                    break
                continue
            if interactive:
                typer.secho("reverie> ", nl=False, fg=typer.colors.CYAN)
            turn = session.send(line, on_text=lambda s: (sys.stdout.write(s), sys.stdout.flush()))
            sys.stdout.write("\n")
            for note in turn.notes:
                typer.secho(f"({note})", dim=True, err=True)
            if stats:
                typer.secho(f"[{turn.completion_tokens} tokens, {turn.tokens_per_s:.1f} tok/s, "
                            f"first token {turn.ttft_s * 1000:.0f} ms]", dim=True, err=True)
    finally:
        session.close()


@app.command()
@handle_errors
def ask(
    question: str = typer.Argument(..., help="The question."),
    model: Optional[str] = ModelOpt,
    backend: str = BackendOpt,
    no_memory: bool = typer.Option(False, "--no-memory", help="Do not recall memories into the prompt."),
    no_adapter: bool = typer.Option(False, "--no-adapter", help="Do not use the promoted LoRA adapter."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Longest answer, in tokens."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON object with the answer and timings."),
):
    """Ask one question and print the answer."""
    from assistant.chat import ChatSession

    if not question.strip():
        fail("empty question; pass the question as an argument, e.g. reverie ask \"What is 2+2?\"")
    session = ChatSession(home(), model=model, backend=backend,
                          use_memory=False if no_memory else None, use_adapter=not no_adapter,
                          max_tokens=max_tokens)
    try:
        if json_out:
            turn = session.send(question)
            d = turn.to_dict()
            d.update(backend=session.runtime.backend, model=session.runtime.model.name,
                     adapter=session.runtime.adapter_path)
            emit_json(d)
        else:
            session.send(question, on_text=lambda s: (sys.stdout.write(s), sys.stdout.flush()))
            sys.stdout.write("\n")
    finally:
        session.close()


@app.command()
@handle_errors
def doctor(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Check the installation: versions, runtimes, accelerator, model files, data dir."""
    from assistant.doctor import diagnose

    report = diagnose()
    if json_out:
        emit_json(report)
    else:
        from assistant.doctor import format_report

        typer.echo(format_report(report))
    if not report["ok"]:
        raise typer.Exit(1)


@app.command()
@handle_errors
def demo(
    quick: bool = typer.Option(False, "--quick", help="Only the scripted chat, skip learning."),
):
    """Run the demo on the embedded model in a fresh data dir (what `make demo` runs)."""
    from assistant.demo import run_demo

    from .common import train_progress

    run_demo(quick=quick, echo=typer.echo, on_train=train_progress)


def main() -> None:  # pragma: no cover
    try:
        app()
    except SystemExit as e:
        # click exits 2 on a usage error (bad option value, unknown flag); every bad input
        # to reverie exits 1, with click's message and the usage line already printed
        if e.code == 2:
            raise SystemExit(1) from None
        raise
