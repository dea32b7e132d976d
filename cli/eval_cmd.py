"""`reverie eval`: memory vs adapter, side by side."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import emit_json, handle_errors, train_progress


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)


@handle_errors
def eval_(
    facts: Optional[Path] = typer.Option(None, "--facts", help="Persona facts JSONL (id, night, statement, questions, answer, aliases). Default: the bundled demo persona."),
    general: List[Path] = typer.Option([], "--general", help="Multiple-choice JSONL (hellaswag/piqa/mmlu format); repeatable. Default: the bundled probe."),
    nights: Optional[int] = typer.Option(None, "--nights", min=1, help="Nights to simulate (default: all in the file)."),
    general_limit: int = typer.Option(100, "--general-limit", min=1, help="Items used from each general file."),
    steps: int = typer.Option(0, "--steps", min=0, help="Training steps per night (0: default)."),
    learning_rate: float = typer.Option(0.0, "--learning-rate", min=0.0,
                                        help="Peak learning rate of the nightly training (0: default)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report directory."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
):
    """Run the whole experiment in an isolated data dir: each night tell that night's facts,
    sleep, and score base / memory / adapter / adapter+memory on the same probes."""
    from assistant.evaluate import run_experiment
    from assistant.report import render_table

    for p in [facts, *general]:
        if p is not None and not p.exists():
            typer.secho(f"error: {p} does not exist", err=True, fg=typer.colors.RED)
            raise typer.Exit(1)
    res = run_experiment(facts, list(general), nights, out, log=lambda s: typer.echo(s, err=True),
                         general_limit=general_limit, steps=steps, on_train=train_progress,
                         learning_rate=learning_rate)
    if json_out:
        emit_json(res)
    else:
        typer.echo(render_table(res))
        typer.echo(f"report: {res['report_dir']}")
