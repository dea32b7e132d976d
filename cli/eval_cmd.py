"""`reverie eval`: memory vs adapter, side by side."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import emit_json, fail, handle_errors, train_progress


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
    preferences: Optional[Path] = typer.Option(None, "--preferences", help="Habit experiment: a preferences JSONL (id, night, statement, demos, probes); each night states them and /fixes the demos, sleeps, then scores preference_acc in the four arms."),
    scenario: Optional[Path] = typer.Option(None, "--scenario", help="Run a real-use scenario (JSONL of day-by-day chat lines, sleeps and forgets, then probes) instead of the persona experiment."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report directory."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
):
    """Run the whole experiment in an isolated data dir: each night tell that night's facts,
    sleep, and score base / memory / adapter / adapter+memory on the same probes.
    With --preferences and --facts: the same nights also teach habits (state them, /fix their
    demos) and every arm is scored on preference_acc beside personal_acc.
    With --scenario: play a scenario's days, nights and forgets, then score the same four arms
    on its probes, with leaks of forgotten texts in answers and on disk."""
    for p in [facts, *general, scenario, preferences]:
        if p is not None and not p.exists():
            fail(f"{p} does not exist")
    if preferences is not None and facts is None:
        if general or scenario is not None:
            fail("--preferences alone runs the habit experiment; add --facts FILE to run it "
                 "together with the facts experiment (then --general applies), and leave out --scenario.")
        from assistant.habit_eval import run_habits

        res = run_habits(preferences, nights=nights, log=lambda s: typer.echo(s, err=True),
                         steps=steps, on_train=train_progress, learning_rate=learning_rate)
        if json_out:
            return emit_json(res)
        for arm, v in res["arms"].items():
            typer.echo(f"{arm:<15} preference_acc {v['preference_acc']:.3f}")
        typer.echo(f"data dir: {res['data_dir']}")
        return
    if scenario is not None:
        if facts is not None or general or nights is not None:
            fail("--scenario runs its own events and probes; leave out --facts, --general and --nights.")
        from assistant.report import render_scenario_table
        from assistant.scenario import run_scenario

        res = run_scenario(scenario, log=lambda s: typer.echo(s, err=True), steps=steps,
                           on_train=train_progress, out_dir=out, learning_rate=learning_rate)
        if json_out:
            emit_json(res)
        else:
            typer.echo(render_scenario_table(res))
            typer.echo(f"report: {res['report_path']}")
        return
    from assistant.evaluate import run_experiment
    from assistant.report import render_table

    res = run_experiment(facts, list(general), nights, out, log=lambda s: typer.echo(s, err=True),
                         general_limit=general_limit, steps=steps, on_train=train_progress,
                         learning_rate=learning_rate, preferences_path=preferences)
    if json_out:
        emit_json(res)
    else:
        typer.echo(render_table(res))
        typer.echo(f"report: {res['report_dir']}")
