"""`reverie logs`: past conversations, newest first, or one of them in full."""
from __future__ import annotations

from typing import Optional

import typer

from .common import emit_json, handle_errors, home, safe, short, table, when


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)


@handle_errors
def logs(conversation: Optional[str] = typer.Argument(
             None, help="A conversation id (conv_…) or `last` to show it whole; omit to list them."),
         n: int = typer.Option(20, "-n", "--count", help="How many conversations to list."),
         full: bool = typer.Option(False, "--full", help="Do not shorten long lines."),
         json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List past conversations (chat and ask), or show one. `reverie chat -c` continues the last;
    `--no-log` keeps a conversation out of here."""
    from assistant.logs_api import get_conversation, list_conversations

    if conversation is not None:
        conv = get_conversation(home(), conversation)
        if json_out:
            return emit_json(conv)
        typer.echo(f"{conv['id']}  {when(conv['created'])}  {conv['model'] or '-'}")
        for t in conv["turns"]:
            text = safe(t["content"], keep_newlines=True) if full else short(t["content"], 400)
            who = "you" if t["role"] == "user" else "reverie" if t["role"] == "assistant" else t["role"]
            typer.echo(f"\n{who}> {text}")
        return
    rows = list_conversations(home(), n)
    if json_out:
        return emit_json(rows)
    if not rows:
        typer.echo("no conversations yet; start one with `reverie chat`.", err=True)
        return
    typer.echo(table([[r["id"], when(r["last"]), r["turns"], short(r["first"], 60, full)]
                      for r in rows], ["id", "last turn", "turns", "first message"], right={2}))
    typer.echo("\n`reverie logs ID` shows one; `reverie chat -c` continues the newest.", err=True)
