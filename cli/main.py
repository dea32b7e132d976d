"""The `reverie` command. Each command parses, makes one call into assistant/, and formats."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from . import bench_cmd, eval_cmd, logs_cmd, memory_cmd, models_cmd, privacy_cmd, quant_cmd, sleep_cmd
from . import serve_cmd
from .common import emit_json, fail, handle_errors, home, piped_stdin

# Every command module is imported above, at the top: one that fails to import is an error in
# `reverie --help` and in the tests, never a command that silently goes missing.
app = typer.Typer(
    help="reverie — a private assistant that remembers what you tell it and learns it overnight.\n\n"
         "Start with `reverie chat`. Data lives in the platform data dir ($REVERIE_HOME overrides).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        import importlib.metadata as md

        try:
            v = md.version("reverie")
        except md.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            v = "unknown (not installed)"
        typer.echo(f"reverie {v}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_version,
                                       help="Print the version and exit.")):
    pass


ModelOpt = typer.Option(None, "--model", "-m", help="Model name from `reverie models list`, or a .gguf path.")
BackendOpt = typer.Option("auto", "--backend", "-b",
                          help="auto (MLX on Apple Silicon, llama.cpp elsewhere), llama.cpp or mlx.")


NoLogOpt = typer.Option(False, "--no-log",
                        help="Leave no trace: nothing is stored (no turns, no memories) and no "
                             "memories are recalled.")
ContinueOpt = typer.Option(False, "--continue", "-c",
                           help="Continue the last conversation (`reverie logs` lists them).")


def _out(s: str) -> None:
    sys.stdout.write(s)
    sys.stdout.flush()


def _check_length(text: str, what: str) -> None:
    from assistant.chat import MAX_USER_CHARS

    if len(text) > MAX_USER_CHARS:
        fail(f"the {what} is {len(text):,} characters; the limit is {MAX_USER_CHARS:,}. Shorten it, "
             "or ask about one part at a time (the model reads only a few thousand words at once).")


def _after_turn(turn, stats: bool) -> None:
    if turn.truncated_input:
        typer.secho("(your message did not fit in the model's context window: only its beginning "
                    "was read; send a shorter one)", dim=True, err=True)
    for note in turn.notes:
        typer.secho(f"({note})", dim=True, err=True)
    if stats:
        typer.secho(f"[{turn.completion_tokens} tokens, {turn.tokens_per_s:.1f} tok/s, "
                    f"first token {turn.ttft_s * 1000:.0f} ms]", dim=True, err=True)


def _continue(session) -> None:
    from assistant.logs_api import continue_last

    conv = continue_last(session)
    if conv is None:
        typer.secho("(no earlier conversation: starting a new one)", dim=True, err=True)
    else:
        typer.secho(f"(continuing {conv['id']}: {len(conv['turns'])} turns)", dim=True, err=True)


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
    no_log: bool = NoLogOpt,
    cont: bool = ContinueOpt,
):
    """Chat in the terminal (streaming). Type /help for commands; works with piped stdin too.

    Arrow keys edit the line and recall earlier inputs; Ctrl-C stops an answer (the chat goes on);
    Ctrl-D or /quit leaves."""
    from assistant.chat import ChatSession
    from assistant.logs_api import recent_inputs

    from .common import data_dir_gone, wiped_message
    from .line_input import LineReader

    path = home()
    session = ChatSession(path, model=model, backend=backend,
                          use_memory=False if (no_memory or no_log) else None,
                          use_adapter=not no_adapter, system_prompt=system, max_tokens=max_tokens,
                          record=not no_log)
    try:
        reader = LineReader("you> ", history=[] if no_log else recent_inputs(path))
        interactive = reader.interactive
        if interactive:
            import signal

            # Ctrl-C stops an answer even when this chat was started from a process that
            # ignores SIGINT (a background job of a script passes SIG_IGN on to its children)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _keep_ctrl_c_a_signal()
        rt = session.runtime
        typer.secho(f"reverie · {rt.model.name} on {rt.backend}"
                    f"{' + adapter ' + session.served.adapter_id if session.served else ''} · memory {'on' if session.use_memory else 'off'}"
                    f"{' · not logged' if no_log else ''} · /help for commands"
                    + (" · Ctrl-C stops an answer, Ctrl-D leaves" if interactive else ""),
                    dim=True, err=True)
        if cont:
            _continue(session)
        while True:
            try:
                line = reader.read()
            except EOFError:
                if interactive:
                    _out("\n")  # the shell prompt starts on a line of its own
                break
            except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line, like a shell
                typer.secho("(Ctrl-D or /quit to leave)", dim=True, err=True)
                continue
            gone = data_dir_gone()
            if gone:
                fail(wiped_message(gone))
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if no_log and line.split()[0].lower() in _WRITING_COMMANDS:
                    typer.echo(f"{line.split()[0]} is off in a --no-log chat: nothing is stored. "
                               "Use `reverie memory add` to remember something on purpose.")
                    continue
                res = session.command(line)
                if res.output:
                    typer.echo(res.output)
                if res.quit:
                    break
                continue
            if len(line) > _max_chars():
                typer.secho(f"error: that message is {len(line):,} characters; the limit is "
                            f"{_max_chars():,}. Send a shorter one.", fg=typer.colors.RED, err=True)
                if interactive:
                    continue
                raise typer.Exit(1)
            if interactive:
                typer.secho("reverie> ", nl=False, fg=typer.colors.CYAN)
            try:
                if interactive:
                    _keep_ctrl_c_a_signal()  # the line editor has just given the terminal back
                turn = session.send(line, on_text=_out)
            except KeyboardInterrupt:
                if not interactive:
                    raise
                # the half answer is neither stored nor kept in the conversation
                _out("\n")
                typer.secho("(stopped; nothing of that answer was kept)", dim=True, err=True)
                continue
            sys.stdout.write("\n")
            _after_turn(turn, stats)
    finally:
        session.close()


def _keep_ctrl_c_a_signal() -> None:
    """The terminal turns Ctrl-C into SIGINT only with ISIG on; make sure a terminal left
    without it (a line editor that did not restore it) still lets Ctrl-C stop an answer."""
    if sys.platform == "win32":
        return
    import termios

    try:
        fd = sys.stdin.fileno()
        attrs = termios.tcgetattr(fd)
        if not attrs[3] & termios.ISIG:
            attrs[3] |= termios.ISIG
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except (termios.error, OSError, ValueError):  # not a terminal: nothing to do
        pass


# slash commands that store something: a --no-log chat leaves no trace
_WRITING_COMMANDS = {"/remember", "/good", "/bad", "/fix"}


def _max_chars() -> int:
    from assistant.chat import MAX_USER_CHARS

    return MAX_USER_CHARS


@app.command()
@handle_errors
def ask(
    question: Optional[str] = typer.Argument(
        None, help="The question. Omit it (or give -) to read it from stdin; with a question, "
                   "piped text is added after it as context: `cat notes.txt | reverie ask \"summarize\"`."),
    model: Optional[str] = ModelOpt,
    backend: str = BackendOpt,
    no_memory: bool = typer.Option(False, "--no-memory", help="Do not recall memories into the prompt."),
    no_adapter: bool = typer.Option(False, "--no-adapter", help="Do not use the promoted LoRA adapter."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Longest answer, in tokens."),
    no_log: bool = NoLogOpt,
    cont: bool = ContinueOpt,
    json_out: bool = typer.Option(False, "--json", help="Print a JSON object with the answer and timings."),
):
    """Ask one question and print the answer."""
    from assistant.chat import ChatSession

    if question is None or question == "-":
        text = piped_stdin()
        if text is None:
            fail("no question; pass it as an argument, e.g. reverie ask \"What is 2+2?\", or pipe it "
                 "in: echo \"What is 2+2?\" | reverie ask")
        question = text
    else:
        extra = piped_stdin()
        if extra and extra.strip():
            question = f"{question}\n\n{extra.strip()}"
    if not question.strip():
        fail("empty question; pass it as an argument, e.g. reverie ask \"What is 2+2?\", or pipe it in: "
             "echo \"What is 2+2?\" | reverie ask")
    _check_length(question.strip(), "question")
    session = ChatSession(home(), model=model, backend=backend,
                          use_memory=False if (no_memory or no_log) else None,
                          use_adapter=not no_adapter, max_tokens=max_tokens, record=not no_log)
    try:
        if cont:
            _continue(session)
        if json_out:
            turn = session.send(question)
            d = turn.to_dict()
            served = session.served  # the adapter version this answer came through, if any
            d.update(backend=session.runtime.backend, model=session.runtime.model.name,
                     adapter=served.adapter_id if served else None,
                     adapter_form=served.to_dict()["form"] if served else None)
            emit_json(d)
        else:
            turn = session.send(question, on_text=_out)
            sys.stdout.write("\n")
            _after_turn(turn, False)
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


logs_cmd.register(app)
app.add_typer(memory_cmd.memory_app, name="memory")
app.add_typer(sleep_cmd.feedback_app, name="feedback")
sleep_cmd.register(app)
app.add_typer(sleep_cmd.adapters_app, name="adapters")
app.add_typer(sleep_cmd.schedule_app, name="schedule")
app.add_typer(models_cmd.models_app, name="models")
app.add_typer(quant_cmd.quant_app, name="quant")
eval_cmd.register(app)
app.add_typer(bench_cmd.bench_app, name="bench")
privacy_cmd.register(app)
serve_cmd.register(app)


def main() -> None:  # pragma: no cover
    try:
        app()
    except SystemExit as e:
        # click exits 2 on a usage error (bad option value, unknown flag); every bad input
        # to reverie exits 1, with click's message and the usage line already printed
        _end(1 if e.code == 2 else e.code)
    _end(0)


def _end(code) -> None:  # pragma: no cover
    """End the process as a normal exit does, less the interpreter's teardown: once chromadb is
    loaded, freeing every module and object costs ~0.2 s of CPU and ~0.35 s of wall (measured on
    2 cores), every time a command ends. Nothing is lost by skipping it: what a command writes is
    committed before it returns (the ledger per transaction, chromadb's log per write; both
    survive a kill at any point, bench/crash_bench.py), other threads are joined and atexit
    handlers run as at a normal exit, and Python never promised __del__ at exit anyway."""
    import atexit
    import os
    import threading

    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, exit status 1
        sys.stderr.write(f"{code}\n")
        code = 1
    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # stdout closed early (`| head`): Python's own exit says 120
        code = code or 120
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)
