"""Rendering of side-by-side evaluation results: terminal table, markdown report, PNG plots.

Owns: turning the evaluation's plain results dict into text and pictures, and writing the report
directory atomically (report.md, results.json, accuracy.png, forgetting.png). Also renders and
writes the real-use scenario's report (report.md, results.json; assistant.scenario). Computes nothing
itself: every number shown comes from the dict it is given, so nothing is ever typed in.
Does not run models or know how the numbers were measured (evaluate.py does).

The dict (as produced by evaluate.py; keys other than "arms" may be missing or None):
  arms: {"base"|"memory"|"adapter"|"adapter+memory": {personal_acc, personal_ci, general_acc,
         general_ci, prompt_tokens, ttft_s, tokens_per_s}}   CIs are [low, high] or {low, high}
  general_acc_delta, kl_drift, ppl_ratio, bwt, R (nights x nights, None for not measured, or a
  dict arm -> such a matrix), n_facts, seconds, disk_bytes (adapter), memory_disk_bytes, and optionally gate {passed, reasons}.
"""
from __future__ import annotations

from common.files import atomic_dir

import json
import math
import os
from pathlib import Path

from .errors import ReverieError

ARMS = ("base", "memory", "adapter", "adapter+memory")
COLUMNS = ("arm", "personal", "95% CI", "general", "95% CI", "prompt tok", "TTFT s", "tok/s")


# --- small formatting helpers -----------------------------------------------------------------

def _num(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _fmt(v, spec: str = ".3f") -> str:
    f = _num(v)
    return "—" if f is None else format(f, spec)


def _ci(v) -> tuple[float, float] | None:
    if isinstance(v, dict):
        v = (v.get("low"), v.get("high"))
    if isinstance(v, (list, tuple)) and len(v) == 2:
        lo, hi = _num(v[0]), _num(v[1])
        if lo is not None and hi is not None:
            return lo, hi
    return None


def _fmt_ci(v) -> str:
    c = _ci(v)
    return "—" if c is None else f"[{c[0]:.2f}, {c[1]:.2f}]"


def _bytes(n) -> str:
    f = _num(n)
    if f is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(f) < 1024 or unit == "GB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return "—"


def _arms(results: dict) -> list[tuple[str, dict]]:
    arms = results.get("arms") if isinstance(results, dict) else None
    if not isinstance(arms, dict) or not arms:
        raise ReverieError("evaluation results have no 'arms'; run the evaluation again to "
                           "produce a complete results file.")
    ordered = [a for a in ARMS if a in arms] + [a for a in arms if a not in ARMS]
    return [(a, arms[a] or {}) for a in ordered]


def _has_preferences(results: dict) -> bool:
    return any("preference_acc" in (arm or {}) for _, arm in _arms(results))


def _columns(results: dict) -> tuple[str, ...]:
    if not _has_preferences(results):
        return COLUMNS
    return COLUMNS[:3] + ("preference",) + COLUMNS[3:]


def _rows(results: dict) -> list[list[str]]:
    prefs = _has_preferences(results)
    return [[name, _fmt(arm.get("personal_acc")), _fmt_ci(arm.get("personal_ci"))]
            + ([_fmt(arm.get("preference_acc"))] if prefs else [])
            + [_fmt(arm.get("general_acc")), _fmt_ci(arm.get("general_ci")),
               _fmt(arm.get("prompt_tokens"), ".0f"), _fmt(arm.get("ttft_s"), ".2f"),
               _fmt(arm.get("tokens_per_s"), ".1f")]
            for name, arm in _arms(results)]


def _preference_rows(results: dict) -> list[str]:
    """Markdown: per preference, probes followed in each arm and an example answer per arm; the
    preferences a newer one replaced, named."""
    arms = [(a, v) for a, v in _arms(results) if isinstance(v.get("per_preference"), dict)]
    if not arms:
        return []
    ids = list(arms[0][1]["per_preference"])
    out = ["", "## Preferences (final night)", "",
           "| preference | " + " | ".join(a for a, _ in arms) + " |",
           "|---|" + "---:|" * len(arms)]
    for pid in ids:
        cells = []
        for _, v in arms:
            r = v["per_preference"].get(pid, {})
            cells.append("replaced" if r.get("superseded_by") else f"{r.get('followed', 0)}/{r.get('probes', 0)}")
        out.append(f"| {_cell(pid)} | " + " | ".join(cells) + " |")
    gone = results.get("superseded_preferences") or {}
    if gone:
        out += ["", "Contradictory preferences: the newer one wins (as in chat), so the older one's "
                "probes are not scored:"]
        out += [f"- {_cell(old)} was replaced by {_cell(new)}" for old, new in gone.items()]
    out += ["", "### Example answers (first probe of each preference)", ""]
    for pid in ids:
        if arms[0][1]["per_preference"].get(pid, {}).get("superseded_by"):
            continue
        out += [f"**{_cell(pid)}**", ""]
        out += [f"- {a}: {_cell((v['per_preference'].get(pid) or {}).get('example', ''))[:300]}"
                for a, v in arms]
        out.append("")
    return out


def _summary(results: dict) -> list[tuple[str, str]]:
    delta = _num(results.get("general_acc_delta"))
    delta_s = "—" if delta is None else f"{delta * 100:+.1f} points"
    if _ci(results.get("general_acc_delta_ci")):
        lo, hi = _ci(results["general_acc_delta_ci"])
        delta_s += f" [{lo * 100:+.1f}, {hi * 100:+.1f}]"
    bwt = _num(results.get("bwt"))
    fdelta = _num(results.get("general_factual_delta"))
    factual = [] if fdelta is None else [(
        f"general questions change, adapter vs base (n={_fmt(results.get('n_factual'), '.0f')})",
        f"{fdelta * 100:+.1f} points")]
    return [
        ("general accuracy change, adapter vs base", delta_s), *factual,
        ("KL drift (base ‖ adapter), nats/token", _fmt(results.get("kl_drift"), ".4f")),
        ("perplexity ratio (adapter / base)", _fmt(results.get("ppl_ratio"), ".3f")),
        ("backward transfer (BWT)", "—" if bwt is None else f"{bwt * 100:+.1f} points"),
        ("facts", _fmt(results.get("n_facts"), ".0f")),
        ("adapter disk", _bytes(results.get("disk_bytes"))),
        ("memory disk (ledger + vector index)", _bytes(results.get("memory_disk_bytes"))),
        ("wall time", "—" if _num(results.get("seconds")) is None
         else f"{float(results['seconds']):.1f} s"),
    ]


def _matrices(results: dict) -> dict[str, list]:
    R = results.get("R")
    if isinstance(R, dict):
        return {k: v for k, v in R.items() if isinstance(v, list) and v}
    if isinstance(R, list) and R:
        return {"adapter": R}
    return {}


# --- text ------------------------------------------------------------------------------------

def render_table(results: dict) -> str:
    """A plain-text table aligned for a terminal, followed by the one-number metrics."""
    cols = _columns(results)
    rows = [list(cols)] + _rows(results)
    widths = [max(len(r[k]) for r in rows) for k in range(len(cols))]
    lines = []
    for i, r in enumerate(rows):
        # first column left-aligned, numbers right-aligned so decimals line up
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    summary = _summary(results)
    label_w = max(len(k) for k, _ in summary)
    lines.append("")
    lines += [f"{k.ljust(label_w)}  {v}" for k, v in summary]
    gate = results.get("gate")
    if isinstance(gate, dict) and "passed" in gate:
        lines.append(f"{'gate'.ljust(label_w)}  {'PASSED' if gate['passed'] else 'REJECTED'}")
        lines += [f"{''.ljust(label_w)}  - {r}" for r in gate.get("reasons") or []]
    return "\n".join(lines)


def render_markdown(results: dict, images: dict[str, str] | None = None) -> str:
    """The report as markdown; images maps a title to a path relative to the report."""
    out = ["# reverie side-by-side evaluation", ""]
    n, secs = _num(results.get("n_facts")), _num(results.get("seconds"))
    if n is not None or secs is not None:
        out += [f"{_fmt(n, '.0f')} personal facts, {_fmt(secs, '.1f')} s of wall time.", ""]
    cols = _columns(results)
    out += ["## Arms", "", "| " + " | ".join(cols) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in _rows(results)]
    out += _preference_rows(results)
    out += ["", "Accuracies are fractions of probes answered correctly; intervals are 95% "
            "percentile bootstrap intervals over probe items.", "", "## Drift and forgetting", "",
            "| metric | value |", "|---|---:|"]
    out += [f"| {k} | {v} |" for k, v in _summary(results)]
    for arm, R in _matrices(results).items():
        out += ["", f"### Accuracy matrix R ({arm}): row = after night i, column = facts of night j",
                "", "| after \\ taught | " + " | ".join(f"night {j + 1}" for j in range(len(R[0])))
                + " |", "|---|" + "---:|" * len(R[0])]
        out += [f"| night {i + 1} | " + " | ".join(_fmt(x) for x in row) + " |"
                for i, row in enumerate(R)]
    gate = results.get("gate")
    if isinstance(gate, dict) and "passed" in gate:
        out += ["", "## Promotion gate", "",
                "The adapter was **promoted**." if gate["passed"] else
                "The adapter was **rejected** because:"]
        out += [f"- {r}" for r in gate.get("reasons") or []]
    for title, rel in (images or {}).items():
        out += ["", f"## {title}", "", f"![{title}]({rel})"]
    return "\n".join(out) + "\n"


# --- plots -----------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(results: dict, path: Path) -> Path:
    """Grouped bars: personal and general accuracy per arm, with CI error bars."""
    plt = _pyplot()
    arms = _arms(results)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    width = 0.38
    for k, (key, label) in enumerate((("personal", "personal"), ("general", "general"))):
        xs, ys, err = [], [], [[], []]
        for i, (_, arm) in enumerate(arms):
            y = _num(arm.get(f"{key}_acc"))
            if y is None:
                continue
            ci = _ci(arm.get(f"{key}_ci")) or (y, y)
            xs.append(i + (k - 0.5) * width)
            ys.append(y)
            err[0].append(max(0.0, y - ci[0]))
            err[1].append(max(0.0, ci[1] - y))
        ax.bar(xs, ys, width, yerr=err, capsize=4, label=label)
    ax.set_xticks(range(len(arms)), [a for a, _ in arms])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy per arm (95% bootstrap CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_forgetting(results: dict, path: Path) -> Path | None:
    """Lines: accuracy on each night's facts after every night (one panel per R matrix)."""
    mats = _matrices(results)
    if not mats:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(mats), figsize=(5 * len(mats), 3.6), dpi=100, squeeze=False)
    for ax, (arm, R) in zip(axes[0], mats.items()):
        T = len(R)
        for j in range(len(R[0])):
            # a night's facts only exist from that night on
            pts = [(i + 1, _num(R[i][j])) for i in range(j, T) if _num(R[i][j]) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label=f"facts of night {j + 1}")
        ax.set_xticks(range(1, T + 1))
        ax.set_xlabel("after night")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_title(f"Retention over nights ({arm})")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# --- the report directory ----------------------------------------------------------------------

def write_report(results: dict, out_dir: Path | str) -> Path:
    """Write report.md, results.json and the plots into out_dir, replacing it as a whole.

    Everything is written to a hidden sibling first and renamed into place, so a reader never sees
    a half-written report and a failed run leaves the previous report untouched.
    """
    out_dir = Path(out_dir)
    _arms(results)  # fail before writing anything
    with atomic_dir(out_dir) as tmp:
        images = {"Accuracy per arm": plot_accuracy(results, tmp / "accuracy.png").name}
        if plot_forgetting(results, tmp / "forgetting.png"):
            images["Forgetting over nights"] = "forgetting.png"
        (tmp / "report.md").write_text(render_markdown(results, images), encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=_json_default)
                                          + "\n", encoding="utf-8")
        os.chmod(tmp, 0o700)
    return out_dir


def _json_default(o):
    # numpy scalars/arrays and dataclasses can slip into the dict; write them as plain JSON
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# --- the real-use scenario (assistant.scenario) -----------------------------------------------
# Its dict: arms {arm: {scenario_acc, passed, probes, leaks, adapter}}, data_leaks, memories
# {by_kind}, sleeps [{day, status, gate, message}], forgets, probes [{question, expect, forbid,
# answers {arm: {answer, passed}}}], conversation, adapter {note}, seconds. Already redacted.

def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _scenario_rows(results: dict) -> list[list[str]]:
    return [[name, _fmt(arm.get("scenario_acc")), f"{arm.get('passed', '—')}/{arm.get('probes', '—')}",
             str(arm.get("leaks", "—"))] for name, arm in _arms(results)]


def render_scenario_table(results: dict) -> str:
    """Arms x scenario accuracy / leaks, then the data dir's leaks, for a terminal."""
    rows = [["arm", "scenario_acc", "passed", "leaks"]] + _scenario_rows(results)
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    leaks = results.get("data_leaks") or []
    lines += ["", f"data_leaks  {', '.join(leaks) if leaks else 'none'}"]
    note = (results.get("adapter") or {}).get("note")
    if note:
        lines.append(f"note        {note}")
    return "\n".join(lines)


def render_scenario_markdown(results: dict) -> str:
    out = ["# reverie real-use scenario", "",
           f"`{results.get('scenario', '')}`: {results.get('days', '—')} day(s), events "
           f"{results.get('events', {})}, {_fmt(results.get('seconds'), '.1f')} s of wall time.", "",
           "## Arms", "", "| arm | scenario_acc | passed | leaks |", "|---|---:|---:|---:|"]
    out += ["| " + " | ".join(r) + " |" for r in _scenario_rows(results)]
    note = (results.get("adapter") or {}).get("note")
    out += ["", f"Adapter served: `{(results.get('adapter') or {}).get('served')}`. {note or ''}".rstrip(),
            "", "## Data leaks", ""]
    leaks = results.get("data_leaks") or []
    out += [f"- `{f}`" for f in leaks] or ["No file in the data dir contains a forgotten text."]
    out += ["", "## Memories by kind (active)", "", "| kind | memories |", "|---|---:|"]
    out += [f"| {k} | {n} |" for k, n in sorted(((results.get("memories") or {}).get("by_kind") or {}).items())]
    out += ["", "## Nights", "", "| day | status | gate | message |", "|---:|---|---|---|"]
    for s in results.get("sleeps") or []:
        g = s.get("gate") or {}
        gate = "—" if not g else ("passed" if g.get("passed") else "rejected: " + "; ".join(g.get("reasons") or []))
        out.append(f"| {s.get('day')} | {s.get('status')} | {_cell(gate)} | {_cell(s.get('message', ''))} |")
    if results.get("forgets"):
        out += ["", "## Forgets", ""]
        out += [f"- day {f.get('day')}: `{_cell(json.dumps(f.get('result'), default=str))}`"
                for f in results["forgets"]]
    out += ["", "## Probes"]
    for i, p in enumerate(results.get("probes") or [], 1):
        out += ["", f"### {i}. {_cell(p.get('question'))}", "",
                f"expect {p.get('expect')}, forbid {p.get('forbid')}", "",
                "| arm | pass | answer |", "|---|---|---|"]
        out += [f"| {arm} | {'PASS' if a.get('passed') else 'fail'} | {_cell(a.get('answer', ''))} |"
                for arm, a in (p.get("answers") or {}).items()]
    out += ["", "## Conversation"]
    for d in results.get("conversation") or []:
        out += ["", f"### Day {d.get('day')}", ""]
        out += [f"- **user:** {_cell(t.get('say'))}<br>**reverie:** {_cell(t.get('reply'))}"
                for t in d.get("turns") or []]
    return "\n".join(out) + "\n"


def write_scenario_report(results: dict, out_dir: Path | str) -> Path:
    """report.md and results.json, replacing out_dir as a whole (atomic_dir)."""
    out_dir = Path(out_dir)
    _arms(results)
    with atomic_dir(out_dir) as tmp:
        (tmp / "report.md").write_text(render_scenario_markdown(results), encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=_json_default)
                                          + "\n", encoding="utf-8")
    return out_dir


__all__ = ["ARMS", "plot_accuracy", "plot_forgetting", "render_markdown", "render_scenario_markdown",
           "render_scenario_table", "render_table", "write_report", "write_scenario_report"]
