"""`reverie export` and `reverie wipe`: take all your data with you, or delete it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import emit_json, handle_errors, home


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("wipe")(wipe)


@handle_errors
def export(out: Optional[Path] = typer.Option(None, "--out", "-o",
                                              help="Archive path (default: ./reverie-export-<time>.tar.gz)."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Write all your personal data (ledger, memories, feedback, adapters, settings) into one
    private .tar.gz archive (mode 0600)."""
    from assistant.privacy import export_all

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

    path = home()
    if not yes and not typer.confirm(f"Delete everything in {path}? This cannot be undone", default=False):
        typer.echo("nothing deleted.", err=True)
        raise typer.Exit(1)
    res = do_wipe(path)
    if json_out:
        return emit_json(res)
    typer.echo(res["message"])
