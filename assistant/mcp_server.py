"""`reverie mcp`: the memory as Model Context Protocol tools, over stdio (official `mcp` SDK).

Owns: the four tools and their argument checks. Each tool is one call into
assistant.memory_api — the calls behind `reverie memory …` — so an MCP client gets the same
validation, the same errors (returned as tool errors with the fix in the message) and the same
forgetting as the CLI. Knows nothing about the model: no chat, no adapter.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

KINDS = ("fact", "episodic")
STATUSES = ("active", "superseded", "all")

INSTRUCTIONS = (
    "reverie's memory of the user: facts they told it and their past conversation turns. "
    "memory_search before answering something personal; memory_add for a new fact the user "
    "states; memory_forget to remove something everywhere (matching text is previewed unless "
    "confirm is true).")


def build_server(home: Path):
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from . import memory_api
    from .errors import ReverieError

    # WARNING: a rejected call is answered to the client; the log need not repeat it
    server = MCPServer("reverie-memory", instructions=INSTRUCTIONS, log_level="WARNING")

    def call(fn, *args, **kwargs):
        try:
            return fn(*args, home=home, **kwargs)
        except ReverieError as e:
            raise ToolError(str(e)) from e

    def check_kind(kind: str | None) -> None:
        if kind is not None and kind not in KINDS:
            raise ToolError(f"kind must be one of {', '.join(KINDS)} (or left out), got {kind!r}.")

    def check_count(name: str, n: int) -> None:
        if n < 1:
            raise ToolError(f"{name} must be at least 1, got {n}.")

    @server.tool()
    def memory_search(query: str, k: int = 10, kind: str | None = None) -> dict[str, Any]:
        """Search the user's memories (vectors + BM25, the ranking chat recall uses); best first."""
        check_count("k", k)
        check_kind(kind)
        return {"results": call(memory_api.search, query, k, kind)}

    @server.tool()
    def memory_add(text: str) -> dict[str, Any]:
        """Store a fact about the user, e.g. "My sister is called Ingrid." A fact that updates an
        older one (a move, a new favourite) replaces it; a repeat is not stored twice."""
        return call(memory_api.add, text)

    @server.tool()
    def memory_list(kind: str | None = None, status: str = "active", limit: int = 50) -> dict[str, Any]:
        """List memories, newest first. status: active, superseded or all."""
        check_kind(kind)
        check_count("limit", limit)
        if status not in STATUSES:
            raise ToolError(f"status must be one of {', '.join(STATUSES)}, got {status!r}.")
        rows = call(memory_api.list_memories, kind, None if status == "all" else status, limit)
        return {"memories": rows}

    @server.tool()
    def memory_forget(memory_id: str | None = None, matching: str | None = None,
                      confirm: bool = False) -> dict[str, Any]:
        """Forget everywhere — the memory, the turns it was said in, feedback that states it, and
        any adapter trained on it. Give memory_id (forgotten at once) or matching text (returns
        what would go; call again with confirm=true to forget it)."""
        if (memory_id is None) == (matching is None):
            raise ToolError("give memory_id, or matching text (not both); e.g. "
                            "{\"matching\": \"peanuts\"}.")
        if memory_id is not None:
            return call(memory_api.forget, memory_id)
        return call(memory_api.forget_matching, matching, yes=confirm)

    return server


def run_stdio(home: Path) -> None:
    """Serve until the client closes stdin."""
    build_server(Path(home)).run("stdio")
