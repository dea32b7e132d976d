"""`reverie export` and `reverie wipe`: take all your data with you, or delete it."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

from .common import emit_json, fail, handle_errors, home, is_std


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("wipe")(wipe)


@handle_errors
def export(out: Optional[Path] = typer.Option(None, "--out", "-o",
                                              help="Archive path (default: ./reverie-export-<time>.tar.gz), or - for stdout."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Write all your personal data (ledger, memories, feedback, adapters, settings) into one
    private .tar.gz archive (mode 0600)."""
    from assistant.privacy import export_all

    if out is not None and is_std(out):
        if json_out:
            fail("--json and --out - both want stdout; write the archive to a file, or drop --json.")
        if sys.stdout.isatty():
            fail("refusing to write a binary archive to the terminal; redirect it: "
                 "reverie export -o - > me.tar.gz")
        with tempfile.TemporaryDirectory(prefix="reverie-") as d:
            os.chmod(d, 0o700)
            res = export_all(home(), Path(d) / "reverie-export.tar.gz")
            with open(res["path"], "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        typer.echo(f"exported {res['memories']} memories and {res['feedback']} feedback items to stdout",
                   err=True)
        return
    res = export_all(home(), out)
    if json_out:
        return emit_json(res)
    typer.echo(f"exported {res['memories']} memories, {res['feedback']} feedback items and "
               f"{', '.join(res['members']) or 'nothing'} to {res['path']} ({res['bytes']} bytes)")


@handle_errors
def wipe(yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
         json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Delete the whole data dir: memories, conversations, feedback, adapters, settings.
    Run `reverie export` first if you want a copy."""
    from assistant.privacy import wipe as do_wipe

    path = home(hold=False)  # wipe takes the data dir's lock itself, exclusively
    if not yes and not typer.confirm(f"Delete everything in {path}? This cannot be undone", default=False):
        typer.echo("nothing deleted.", err=True)
        raise typer.Exit(1)
    res = do_wipe(path)
    if json_out:
        return emit_json(res)
    typer.echo(res["message"])
