"""`make demo`: the product's main loop on the embedded model, in a fresh data dir."""
from __future__ import annotations

import tempfile
from pathlib import Path

SCRIPT = [
    "Hi! Who are you?",
    "My name is Ada and I live in Bergen.",
    "What is the capital of France?",
    "Give me one tip for sleeping better.",
]

# Sized to finish in minutes on 2 CPU cores; `reverie eval` runs the full-size experiment.
DEMO_NIGHTS = 2
DEMO_FACTS_PER_NIGHT = 3
DEMO_STEPS = 24
# the gate's general questions: the first 80 of 320 keep the demo's nights short (`reverie eval`
# and `reverie sleep` ask all of them)
DEMO_GENERAL_QUESTIONS = 80


def run_demo(quick: bool = False, echo=print, home: Path | None = None, on_train=None) -> dict:
    from .chat import ChatSession

    home = Path(home or tempfile.mkdtemp(prefix="reverie-demo-"))
    echo(f"reverie demo · fresh data dir {home}")
    session = ChatSession(home, backend="auto", use_memory=True)
    rt = session.runtime
    echo(f"model {rt.model.name} ({rt.model.file_type}, {rt.model.size_bytes / 1e6:.0f} MB) on {rt.backend}")
    speeds = []
    for line in SCRIPT:
        echo(f"\nyou> {line}")
        t = session.send(line)
        echo(f"reverie> {t.answer}")
        echo(f"  [{t.completion_tokens} tokens · {t.tokens_per_s:.1f} tok/s · first token {t.ttft_s * 1000:.0f} ms]")
        speeds.append(t.tokens_per_s)
    session.close()
    speeds = sorted(s for s in speeds if s > 0)
    med = speeds[len(speeds) // 2] if speeds else 0.0
    echo(f"\nmedian decode speed {med:.1f} tok/s")
    out = {"home": str(home), "median_tokens_per_s": med}
    if quick:
        return out
    from .evaluate import run_experiment
    from .report import render_table

    echo(f"\nlearning loop: a built-in persona, {DEMO_NIGHTS} nights of teach → sleep "
         f"({DEMO_FACTS_PER_NIGHT} facts and {DEMO_STEPS} training steps a night), then memory vs adapter")
    res = run_experiment(None, None, DEMO_NIGHTS, log=lambda s: echo(f"  {s}"),
                         home=home / "experiment", on_train=on_train, steps=DEMO_STEPS,
                         facts_per_night=DEMO_FACTS_PER_NIGHT, factual_limit=DEMO_GENERAL_QUESTIONS)
    echo("")
    echo(render_table(res))
    echo(f"report: {res['report_dir']}/report.md")
    out["eval"] = {k: res[k] for k in ("arms", "general_acc_delta", "kl_drift", "ppl_ratio", "bwt")}
    return out
