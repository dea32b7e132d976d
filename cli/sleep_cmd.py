"""`reverie sleep`, `reverie feedback …`, `reverie adapters …`, `reverie schedule …`."""
from __future__ import annotations

import json
from typing import Optional

import typer

from .common import emit_json, fail, handle_errors, home, num, safe, short, table, train_progress, when

JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


def register(app: typer.Typer) -> None:
    app.command("sleep")(sleep)


@handle_errors
def sleep(
    strategy: str = typer.Option("retrain", "--strategy",
                                 help="retrain: from base on everything; incremental: continue the promoted adapter with new data + replay."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be trained, train nothing."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model (default model if omitted)."),
    steps: int = typer.Option(0, "--steps", min=0, help="Training steps (0: derived from the data)."),
    rank: int = typer.Option(0, "--rank", min=0, help="LoRA rank (0: default 8)."),
    force: bool = typer.Option(False, "--force", help="Train even if nothing is new."),
    max_general_drop: float = typer.Option(1.0, "--max-general-drop", help="Gate: allowed drop in general accuracy, points."),
    max_ppl_ratio: float = typer.Option(1.05, "--max-ppl-ratio", help="Gate: allowed perplexity ratio adapter/base."),
    general_confidence: float = typer.Option(
        0.9, "--general-confidence",
        help="Gate: reject on general accuracy only when the drop is over budget at this one-sided "
             "confidence (bootstrap over the probe items); 0 = the measured drop decides."),
    max_factual_lost: float = typer.Option(
        3.0, "--max-factual-lost", min=0.0, max=100.0,
        help="Gate: of the general questions the base model answers, the adapter may lose this many "
             "percentage points more than the base itself loses when its system prompt is reworded."),
    trainer: str = typer.Option(
        "peft", "--trainer",
        help="peft: torch on the dequantized GGUF (CPU, CUDA, Apple MPS); mlx: QLoRA with MLX on "
             "the quantized GGUF itself (Apple's path; runs on Linux CPU, slowly)."),
    checkpoint_every: int = typer.Option(
        0, "--checkpoint-every", min=0,
        help="Steps between resumable training checkpoints (0: $REVERIE_CHECKPOINT_EVERY, else 25)."),
    merge: str = typer.Option("", "--merge",
                              help="When the gate passes the adapter, also bake it into the base "
                                   "at this type (Q8_0, Q4_K_M, F16, same, ...) and gate that file; "
                                   "chat serves it if it passes, else the runtime LoRA. none: "
                                   "always the runtime LoRA (default: the merge_on_promote "
                                   "setting, Q8_0)."),
    json_out: bool = JsonOpt,
):
    """The nightly job: learn today's facts and feedback into a LoRA adapter, measure what was
    learned and forgotten, and promote it only if it passes the gate."""
    from assistant.quant_api import check_merge_type
    from assistant.sleep import SleepOptions, run_sleep

    opts = SleepOptions(strategy=strategy, dry_run=dry_run, model=model, steps=steps, rank=rank,
                        force=force, gate={"max_general_drop_points": max_general_drop,
                                           "max_ppl_ratio": max_ppl_ratio,
                                           "general_confidence": general_confidence,
                                           "max_factual_lost_pct": max_factual_lost},
                        merge=check_merge_type(merge), checkpoint_every=checkpoint_every,
                        trainer=trainer)
    log = (lambda s: typer.echo(s, err=True))

    out = run_sleep(home(), opts, log=log, on_train=train_progress)
    if json_out:
        emit_json(out.to_dict())
    else:
        typer.echo(out.message)
        if out.report_path:
            typer.echo(f"report: {out.report_path}/report.md")
    if out.status == "aborted":
        raise typer.Exit(1)


# --- feedback ----------------------------------------------------------------------------------
feedback_app = typer.Typer(help="Feedback you gave in chat (/good, /bad, /fix): the nightly training data.",
                           no_args_is_help=True)


@feedback_app.command("ls")
@handle_errors
def feedback_ls(kind: Optional[str] = typer.Option(None, "--kind", help="good, bad or fix."),
                limit: int = typer.Option(50, "--limit", min=1), json_out: bool = JsonOpt):
    """List feedback, newest first."""
    from assistant.adapters_api import feedback_list

    rows = feedback_list(home(), kind, limit)
    if json_out:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        typer.echo("no feedback yet; use /good, /bad or /fix in `reverie chat`.")
    for r in rows:
        extra = f" → {short(r.correction, 40)}" if r.correction else ""
        typer.echo(f"{r.id}  {r.kind:<4}  {when(r.created)}  {short(r.prompt, 50)}{extra}")


@feedback_app.command("show")
@handle_errors
def feedback_show(fid: str = typer.Argument(..., help="Feedback id."), json_out: bool = JsonOpt):
    """Show one feedback item."""
    from assistant.adapters_api import feedback_get

    r = feedback_get(home(), fid)
    if json_out:
        emit_json(r.to_dict())
        return
    for k, v in r.to_dict().items():
        if k == "reason" and not v:
            continue
        shown = when(v) if k == "created" else safe(v, keep_newlines=True)
        typer.echo(f"{k.replace('_', ' '):>15}: {shown}")


@feedback_app.command("rm")
@handle_errors
def feedback_rm(fid: str = typer.Argument(..., help="Feedback id.")):
    """Delete a feedback item (the next sleep will not learn from it)."""
    from assistant.adapters_api import feedback_remove

    r = feedback_remove(home(), fid)
    typer.echo(f"removed {r.id}")


# --- adapters ----------------------------------------------------------------------------------
adapters_app = typer.Typer(help="Adapter versions made by `reverie sleep`: lineage, metrics, promotion.",
                           no_args_is_help=True)


@adapters_app.command("ls")
@handle_errors
def adapters_ls(json_out: bool = JsonOpt):
    """List adapter versions (* marks the promoted one) and the form each is served in: merged
    into the base (when that file passed the gate too) or as a runtime LoRA."""
    from assistant.adapters_api import adapters_list

    rows = adapters_list(home())
    if json_out:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        typer.echo("no adapters yet; run `reverie sleep`.")
    for r in rows:
        m = json.loads(r.metrics or "{}")
        mark = "*" if r.status == "promoted" else " "
        typer.echo(f"{mark} {r.id:<14} {r.status:<9} {r.strategy:<11} parent {r.parent or '-':<14} "
                   f"personal {m.get('personal_base', 0):.2f}→{m.get('personal_adapted', 0):.2f} "
                   f"general {m.get('general_base', 0):.3f}→{m.get('general_adapted', 0):.3f} "
                   f"{_form(r)}")


def _form(row) -> str:
    """How a version is (or would be, once promoted) served; a rejected one is not."""
    if row.status == "rejected":
        return "not served"
    return "served merged" if row.served else "served as runtime LoRA"


@adapters_app.command("show")
@handle_errors
def adapters_show(aid: str = typer.Argument(..., help="Adapter version."), json_out: bool = JsonOpt):
    """Show an adapter version: files, lineage, metrics, gate decision."""
    from assistant.adapters_api import adapter_get

    d = adapter_get(home(), aid).to_dict()
    if json_out:
        emit_json(d)
        return
    typer.echo(format_adapter(d))


@adapters_app.command("promote")
@handle_errors
def adapters_promote(aid: str = typer.Argument(..., help="Adapter version.")):
    """Promote a version by hand (it is validated first); chat picks it up on its next turn."""
    from assistant.adapters_api import adapter_promote

    r = adapter_promote(home(), aid)
    typer.echo(f"{r.id} promoted")


@adapters_app.command("rollback")
@handle_errors
def adapters_rollback(model: Optional[str] = typer.Option(None, "--model", "-m")):
    """Go back to the previous adapter (or to no adapter)."""
    from assistant.adapters_api import adapter_rollback

    r = adapter_rollback(home(), model)
    typer.echo(f"{r.id} promoted" if r else "no adapter promoted: chat uses the base model")


@adapters_app.command("diff")
@handle_errors
def adapters_diff(a: str = typer.Argument(...), b: str = typer.Argument(...), json_out: bool = JsonOpt):
    """Compare two versions: facts and metrics."""
    from assistant.adapters_api import adapter_diff

    d = adapter_diff(home(), a, b)
    if json_out:
        emit_json(d)
        return
    typer.echo(f"facts only in {d['a']}: {len(d['facts_only_in_a'])}; only in {d['b']}: {len(d['facts_only_in_b'])}")
    rows = []
    for k, (x, y) in d["metrics"].items():
        label, digits, _ = METRICS.get(k, (k, 3, None))
        delta = f"{y - x:+.{digits}f}" if isinstance(x, (int, float)) and isinstance(y, (int, float)) else ""
        rows.append([label, num(x, digits), num(y, digits), delta])
    typer.echo(table(rows, ["metric", d["a"], d["b"], "change"], right={1, 2, 3}))


@adapters_app.command("rm")
@handle_errors
def adapters_rm(aid: str = typer.Argument(...)):
    """Delete an adapter version (not the promoted one) and its files."""
    from assistant.adapters_api import adapter_remove

    r = adapter_remove(home(), aid)
    typer.echo(f"removed {r.id}")


# label, decimals, and the per-item list whose count is shown instead of the list itself
METRICS = {"personal_base": ("personal recall, base", 2, None),
           "personal_adapted": ("personal recall", 2, None),
           "general_base": ("general accuracy, base", 3, "general_base_correct"),
           "general_adapted": ("general accuracy", 3, "general_adapted_correct"),
           "ppl_base": ("perplexity, base", 2, None), "ppl_adapted": ("perplexity", 2, None),
           "ppl_ratio": ("perplexity ratio", 3, None), "kl_drift": ("KL drift", 4, None),
           "bwt": ("backward transfer (BWT)", 2, None)}


def format_adapter(d: dict) -> str:
    """An adapter version for people: lineage, what it learned, before → after, the gate."""
    m = d.get("metrics") or {}
    gate = d.get("gate") or {}
    facts, fb = d.get("fact_ids") or [], d.get("feedback_ids") or []
    lines = [f"{d['id']}  {d.get('status', '')}  ({d.get('strategy') or '-'}, {d.get('trainer') or '-'})"
             f"  model {d.get('model') or '-'}",
             f"created    {when(d.get('created'))}"
             + (f"   promoted {when(d['promoted'])}" if d.get("promoted") else ""),
             f"parent     {d.get('parent') or '-'}",
             f"learned    {len(facts)} facts, {len(fb)} feedback items"
             f"   (dataset {str(d.get('dataset_hash') or '-')[:12]})",
             f"files      {safe(d.get('path') or '-')}"]
    if d.get("gguf"):
        lines.append(f"           {safe(d['gguf'])}")

    def counted(key):
        xs = m.get(key)
        return f"  ({sum(map(bool, xs))}/{len(xs)} right)" if isinstance(xs, list) and xs else ""

    rows = []
    for base_key, key, label, digits in (("personal_base", "personal_adapted", "personal recall", 2),
                                         ("general_base", "general_adapted", "general accuracy", 3),
                                         ("ppl_base", "ppl_adapted", "perplexity", 2)):
        if base_key in m or key in m:
            rows.append([label, num(m.get(base_key), digits), "→", num(m.get(key), digits),
                         (counted(METRICS[base_key][2]) + counted(METRICS[key][2])).strip()
                         if METRICS[base_key][2] else
                         (f"(n={m['n_probes']})" if key == "personal_adapted" and "n_probes" in m else "")])
    for key in ("ppl_ratio", "kl_drift", "bwt"):
        if key in m:
            label, digits, _ = METRICS[key]
            value = m[key]
            shown = "— (no earlier adapter to compare)" if key == "bwt" and value is None else num(value, digits)
            rows.append([label, "", "", shown, ""])
    if rows:
        lines += ["", "metrics    base → adapter", table(rows)]
    train = m.get("train") or {}
    if isinstance(train, dict) and train:
        bits = [f"{k.replace('_', ' ')} {num(v, 3)}" for k, v in train.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if bits:
            lines += ["", "training   " + short(", ".join(bits), 200)]
    if gate:
        lines += ["", f"gate       {'passed' if gate.get('passed') else 'rejected'}"]
        for c in gate.get("checks", []):
            lines.append(f"  {'pass' if c.get('passed') else 'FAIL'}  {safe(c.get('message', ''))}")
    examples = m.get("examples") or []
    if examples:
        lines += ["", f"examples   ({len(examples)}; --json for everything)"]
        for e in examples[:3]:
            lines.append(f"  Q {short(e.get('q'), 70)}")
            lines.append(f"    expected {short(e.get('expected'), 40)} · base {short(e.get('base'), 40)}"
                         f" · adapter {short(e.get('adapter'), 40)}")
    return "\n".join(lines)


# --- schedule ----------------------------------------------------------------------------------
schedule_app = typer.Typer(help="Run `reverie sleep` every night (cron on Linux, launchd on macOS).",
                           no_args_is_help=True)


@schedule_app.command("install")
@handle_errors
def schedule_install(at: str = typer.Option("03:00", "--at", help="Local time HH:MM."),
                     dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be installed.")):
    """Install the nightly timer."""
    from assistant.schedule import install

    typer.echo(install(home(), at, dry_run=dry_run))


@schedule_app.command("status")
@handle_errors
def schedule_status(json_out: bool = JsonOpt):
    """Show whether the nightly timer is installed and the last runs."""
    from assistant.schedule import status

    d = status(home())
    if json_out:
        emit_json(d)
        return
    typer.echo(f"installed: {d['installed']} ({d['method']}) {d.get('at') or ''}")
    for r in d["runs"][:5]:
        typer.echo(f"  {r['id']} {r['status']} {r['strategy']} {r['adapter_id']}")


@schedule_app.command("remove")
@handle_errors
def schedule_remove():
    """Remove the nightly timer."""
    from assistant.schedule import remove

    typer.echo(remove(home()))
