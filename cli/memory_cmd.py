"""`reverie memory …`: see and edit what the assistant remembers about you.

Each command parses, makes one call into assistant.memory_api, and formats the result.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

from .common import (check_output_file, emit_json, fail, handle_errors, home, is_std, num, safe,
                     short, table, when)

memory_app = typer.Typer(
    help="What reverie remembers: facts you told it and past conversation turns.\n\n"
         "Memories live in the SQLite ledger in the data dir; the search index is derived from it "
         "(`reverie memory reindex` rebuilds it). Ids look like m_1a2b3c4d5e6f.",
    no_args_is_help=True)

JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON output.")
FullOpt = typer.Option(False, "--full", help="Show long texts whole (they are shortened to one line).")
STATUSES = ("active", "superseded", "all")
_when = when


def _line(m: dict, full: bool = False) -> str:
    return f"{m['id']}  {m['kind']:<8}  {_when(m['created'])}  {short(m['text'], 90, full)}"


@memory_app.command("ls")
@handle_errors
def ls(kind: Optional[str] = typer.Option(None, "--kind", help="fact or episodic."),
       status: str = typer.Option("active", "--status",
                                  help="active, superseded, or 'all'."),
       limit: int = typer.Option(50, "--limit", min=1, help="Newest N memories."),
       full: bool = FullOpt,
       json_out: bool = JsonOpt):
    """List memories, newest first."""
    from assistant.memory_api import list_memories

    if status not in STATUSES:
        fail(f"unknown status {status!r}; use one of: {', '.join(STATUSES)} "
             "(forgotten memories are gone: only their tombstone remains).")
    rows = list_memories(kind, None if status == "all" else status, limit, home=home())
    if json_out:
        return emit_json(rows)
    for m in rows:
        typer.echo(_line(m, full))
    if not rows:
        typer.echo("(no memories)", err=True)


@memory_app.command("search")
@handle_errors
def search(query: str = typer.Argument(..., help="Words to look for."),
           k: int = typer.Option(10, "--k", "-k", min=1, help="How many results."),
           kind: Optional[str] = typer.Option(None, "--kind", help="fact or episodic."),
           full: bool = FullOpt,
           json_out: bool = JsonOpt):
    """Hybrid search (vectors + BM25), the same ranking chat recall uses."""
    from assistant.memory_api import search as do_search

    rows = do_search(query, k, kind, home=home())
    if json_out:
        return emit_json(rows)
    for r in rows:
        typer.echo(f"{r['score']:.4f}  {r['id']}  {r['kind']:<8}  {short(r['text'], 90, full)}")
    if not rows:
        typer.echo("(nothing found)", err=True)


@memory_app.command("show")
@handle_errors
def show(memory_id: str = typer.Argument(..., help="A memory id (m_…)."), json_out: bool = JsonOpt):
    """One memory with its provenance and history."""
    from assistant.memory_api import show as do_show

    m = do_show(memory_id, home=home())
    if json_out:
        return emit_json(m)
    typer.echo(f"{m['id']}  ({m['kind']}, {m['status']})")
    typer.echo(f"text:    {safe(m['text'], keep_newlines=True)}")
    if m["subject"]:
        typer.echo(f"subject: {safe(m['subject'])}")
    typer.echo(f"created: {_when(m['created'])}   updated: {_when(m['updated'])}")
    src = m["source"] if isinstance(m["source"], dict) else {"source": m["source"]}
    typer.echo("source:  " + ", ".join(f"{k} {_when(v) if k in ('time', 'created') else short(v, 60)}"
                                       for k, v in src.items()))
    if len(m["history"]) > 1:
        typer.echo("history:")
        for h in m["history"]:
            typer.echo(f"  {_when(h['changed'])}  {h['reason']:<10}  {short(h['text'], 90)}")


@memory_app.command("add")
@handle_errors
def add(text: str = typer.Argument(..., help="The fact, e.g. \"my sister is called Ingrid\"."),
        json_out: bool = JsonOpt):
    """Remember a fact. A near-duplicate updates the existing fact; a new value for the same
    subject ("I moved to Oslo") supersedes the old one, which stays in history."""
    from assistant.memory_api import add as do_add

    res = do_add(text, home=home())
    if json_out:
        return emit_json(res)
    typer.echo(f"{res['action']} {res['memory']['id']}: {short(res['memory']['text'], 200)}")


@memory_app.command("edit")
@handle_errors
def edit(memory_id: str = typer.Argument(..., help="A memory id (m_…)."),
         text: str = typer.Argument(..., help="The new text."), json_out: bool = JsonOpt):
    """Change a memory's text (the old text stays in its history)."""
    from assistant.memory_api import edit as do_edit

    m = do_edit(memory_id, text, home=home())
    if json_out:
        return emit_json(m)
    typer.echo(f"edited {m['id']}: {short(m['text'], 200)}")


@memory_app.command("forget")
@handle_errors
def forget(memory_id: Optional[str] = typer.Argument(None, help="A memory id (m_…)."),
           matching: Optional[str] = typer.Option(
               None, "--matching", "-m",
               help="Forget everything that states this text (case-insensitive): memories, "
                    "conversation turns, feedback, and adapter versions trained on it. Shows what "
                    "would go; add --yes to do it."),
           yes: bool = typer.Option(False, "--yes", "-y", help="With --matching: really forget."),
           json_out: bool = JsonOpt):
    """Forget a memory everywhere: the ledger (a tombstone — a hash, never the text — stays so
    nothing brings it back), the index, the conversation turns it was said in, feedback that
    states it, every adapter version's training files, and any adapter trained on it (withdrawn
    at once; the newest clean version is served, or none, and the next sleep retrains)."""
    from assistant.memory_api import forget as do_forget
    from assistant.memory_api import forget_matching

    if (memory_id is None) == (matching is None):
        fail("give a memory id, or --matching TEXT (not both); e.g. "
             "`reverie memory forget --matching peanuts`.")
    if matching is not None:
        res = forget_matching(matching, yes=yes, home=home())
        if json_out:
            return emit_json(res)
        typer.echo(res["summary"])
        if not res["applied"] and (res["memories"] or res["turns"] or res["feedback"]
                                   or res["adapters_withdrawn"]):
            for m in res["memories"]:
                typer.echo(f"  memory {m['id']}  {m['kind']:<8}  {_short(m['text'])}")
            for t in res["turns"]:
                typer.echo(f"  turn   {t['id']}  {t['role']:<9} {_short(t['content'])}")
            for f in res["feedback"]:
                typer.echo(f"  feedback {f['id']}  {f['kind']:<4}  {_short(f['prompt'])}")
            typer.echo("run again with --yes to forget all of it.")
        return
    res = do_forget(memory_id, home=home())
    if json_out:
        return emit_json(res)
    typer.echo(f"forgot {res['memory']['id']}. {res['summary']}")


def _short(text: str, width: int = 70) -> str:
    return short(text, width)


@memory_app.command("history")
@handle_errors
def history(memory_id: str = typer.Argument(..., help="A memory id (m_…)."), json_out: bool = JsonOpt):
    """Every version of a memory, oldest first."""
    from assistant.memory_api import history as do_history

    rows = do_history(memory_id, home=home())
    if json_out:
        return emit_json(rows)
    for h in rows:
        typer.echo(f"{_when(h['changed'])}  {h['reason']:<10}  {h['status']:<10}  {short(h['text'], 90)}")


@memory_app.command("export")
@handle_errors
def export(path: Path = typer.Argument(..., help="Output .jsonl file (written 0600), or - for stdout."),
           json_out: bool = JsonOpt):
    """Write all memories (with history) as JSONL; `import` reads it back losslessly.
    `reverie memory export - | gzip > memories.jsonl.gz` writes to stdout."""
    from assistant.memory_api import export as do_export

    if is_std(path):
        if json_out:
            fail("--json and - both want stdout; write the export to a file, or drop --json.")
        with _private_tmp() as tmp:
            n = do_export(tmp / "memories.jsonl", home=home())
            sys.stdout.write((tmp / "memories.jsonl").read_text(encoding="utf-8"))
            sys.stdout.flush()
        typer.echo(f"exported {n} memories to stdout", err=True)
        return
    path = check_output_file(path, "file")
    n = do_export(path, home=home())
    if json_out:
        return emit_json({"path": str(path), "exported": n})
    typer.echo(f"exported {n} memories to {path}")


@contextlib.contextmanager
def _private_tmp():
    """A 0700 temp dir for personal data passing through on its way to stdout or from stdin."""
    with tempfile.TemporaryDirectory(prefix="reverie-") as d:
        os.chmod(d, 0o700)
        yield Path(d)


def _stdin_to(tmp: Path, name: str) -> Path:
    """stdin saved into `tmp` (the import reads a file: it validates every line before writing)."""
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    out = tmp / name
    out.write_bytes(data)
    out.chmod(0o600)
    return out


@memory_app.command("import")
@handle_errors
def import_(path: Path = typer.Argument(..., help="A .jsonl file from `reverie memory export`, or - for stdin."),
            json_out: bool = JsonOpt):
    """Import an export file. All or nothing: any bad line (named in the error) imports nothing."""
    from assistant.memory_api import import_ as do_import

    with _private_tmp() as tmp:
        src = _stdin_to(tmp, "stdin.jsonl") if is_std(path) else path
        with typer.progressbar(length=_count_lines(src), label="indexing", file=sys.stderr) as bar:
            n = do_import(src, progress=bar.update, home=home())
    where = "stdin" if is_std(path) else str(path)
    if json_out:
        return emit_json({"path": where, "imported": n})
    typer.echo(f"imported {n} new memories from {where}")


@memory_app.command("stats")
@handle_errors
def stats(json_out: bool = JsonOpt):
    """Counts by kind and status, tombstones, and index sizes."""
    from assistant.memory_api import stats as do_stats

    s = do_stats(home=home())
    if json_out:
        return emit_json(s)
    by = s.get("by_kind_status", {})
    kinds = sorted({k.split("/")[0] for k in by})
    statuses = [x for x in ("active", "superseded") if any(k.endswith("/" + x) for k in by)]
    statuses += sorted({k.split("/")[1] for k in by} - set(statuses))
    rows = [[kind] + [num(by.get(f"{kind}/{st}", 0)) for st in statuses]
            + [num(sum(by.get(f"{kind}/{st}", 0) for st in statuses))] for kind in kinds]
    rows.append(["total"] + [num(sum(by.get(f"{k}/{st}", 0) for k in kinds)) for st in statuses]
                + [num(s.get("memories", 0))])
    typer.echo(table(rows, ["memories"] + statuses + ["all"], right=set(range(1, len(statuses) + 2))))
    typer.echo("")
    other = [("forgotten (tombstones)", s.get("tombstones")), ("history rows", s.get("history_rows")),
             ("full-text index rows", s.get("fts_rows")), ("vector index rows", s.get("vector_rows"))]
    typer.echo(table([[k, num(v)] for k, v in other if v is not None], right={1}))
    typer.echo("")
    typer.echo(table([["ledger", safe(s.get("ledger", "-"))], ["index", safe(s.get("index", "-"))]]))


@memory_app.command("reindex")
@handle_errors
def reindex(json_out: bool = JsonOpt):
    """Rebuild the vector and full-text index from the ledger (after a crash or an upgrade)."""
    from assistant.memory_api import count_active, reindex as do_reindex

    with typer.progressbar(length=count_active(home=home()), label="reindexing", file=sys.stderr) as bar:
        n = do_reindex(progress=bar.update, home=home())
    if json_out:
        return emit_json({"indexed": n})
    typer.echo(f"indexed {n} active memories")


@memory_app.command("import-conversation")
@handle_errors
def import_conversation(path: Path = typer.Argument(..., help="Conversation file, or - for stdin."),
                        fmt: str = typer.Option("locomo", "--format", help="File format: locomo."),
                        json_out: bool = JsonOpt):
    """Import past conversations as episodic memories (LoCoMo: each turn keeps its dia_id)."""
    from assistant.memory_api import import_conversation as do_import

    with _private_tmp() as tmp:
        src = _stdin_to(tmp, "stdin.json") if is_std(path) else path
        with typer.progressbar(length=_count_locomo_turns(src), label="importing", file=sys.stderr) as bar:
            res = do_import(src, fmt, progress=bar.update, home=home())
    if json_out:
        return emit_json(res)
    typer.echo(f"imported {res['imported']} turns from {res['conversations']} conversation(s)")


def bench_memory(file: Path = typer.Argument(..., help="LoCoMo JSON file."),
                 fmt: str = typer.Option("locomo", "--format", help="File format: locomo."),
                 k: int = typer.Option(10, "--k", "-k", min=1, help="Memories retrieved per question."),
                 json_out: bool = JsonOpt):
    """Evidence recall@k on LoCoMo QA (categories 1-4): hybrid vs vector vs BM25, and latency."""
    from assistant.memory_api import check_format
    from bench.memory_bench import run_locomo  # a benchmark: only the CLI calls into bench/

    check_format(fmt)
    res = run_locomo(file, k, log=lambda m: typer.echo(m, err=True))
    if json_out:
        return emit_json(res)
    typer.echo(f"{res['n_questions']} questions, {res['n_conversations']} conversation(s), k={k}")
    typer.echo(f"{'':10}{'hybrid':>8}{'vector':>8}{'bm25':>8}")
    rows = [("overall", res["recall_at_k"])] + [(f"cat {c}", v) for c, v in res["by_category"].items()]
    for name, v in rows:
        typer.echo(f"{name:<10}" + "".join(f"{(v[m] if v[m] is not None else float('nan')):>8.3f}"
                                           for m in ("hybrid", "vector", "bm25")))
    typer.echo(f"latency (hybrid) p50 {res['latency_ms']['p50']:.1f} ms · p95 {res['latency_ms']['p95']:.1f} ms")


bench_memory = handle_errors(bench_memory)


def _count_lines(path: Path) -> int:
    try:
        return sum(1 for line in Path(path).open(encoding="utf-8", errors="replace") if line.strip())
    except OSError:
        return 0  # the import call reports the real error


def _count_locomo_turns(path: Path) -> int:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return sum(len(v) for s in data for key, v in s["conversation"].items()
                   if key.startswith("session_") and isinstance(v, list))
    except Exception:  # noqa: BLE001 - only sizes the bar; the import reports the real error
        return 0
