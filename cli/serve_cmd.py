"""`reverie serve` (OpenAI-compatible HTTP API) and `reverie mcp` (the memory over MCP stdio)."""
from __future__ import annotations

from typing import Optional

import typer

from .common import handle_errors, home


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("mcp")(mcp)


@handle_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on. Anything but loopback needs --api-key."),
    port: int = typer.Option(8411, "--port", "-p", min=0, max=65535, help="Port (0: any free one)."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="REVERIE_API_KEY", show_envvar=True,
        help="Require `Authorization: Bearer KEY` on every request."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Model served by default (`reverie models list`)."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto, llama.cpp or mlx."),
):
    """Serve the assistant over an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    Answers go through the same path as `reverie chat`: memory recall, the promoted adapter and
    the ledger. A request can opt out with {"reverie": {"memory": false, "record": false}}.
    Ctrl-C or SIGTERM stops it."""
    from assistant.api import check_bind, serve as run

    check_bind(host, api_key)  # before loading anything

    def ready(url: str, worker) -> None:
        state = "" if worker.status == "ready" else f" — {worker.load_error}"
        typer.secho(f"reverie · serving {worker.default_model} at {url}"
                    f"{' (key required)' if api_key else ''}{state} · Ctrl-C to stop",
                    err=True, dim=True)

    run(home(), host=host, port=port, api_key=api_key, model=model, backend=backend, on_ready=ready)
    typer.secho("reverie · stopped", err=True, dim=True)


@handle_errors
def mcp():
    """Serve the memory to an MCP client over stdio (search, add, list, forget).

    Tools: memory_search, memory_add, memory_list, memory_forget. Configure the client to run
    `reverie mcp`; set REVERIE_HOME in its environment to pick a data dir."""
    from assistant.mcp_server import run_stdio

    run_stdio(home())
