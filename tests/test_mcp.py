"""`reverie mcp` on the real stack, driven by the official `mcp` SDK's own stdio client: the four
memory tools listed, a fact added, searched, listed and forgotten (by matching text, previewed
first, and by id), bad arguments answered as tool errors with the fix. The server runs under the
same socket guard as the HTTP server's tests."""
from __future__ import annotations

import os
import sys

import pytest

from test_serve import GUARDED_CLI

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_network")]

TOOLS = {"memory_search", "memory_add", "memory_list", "memory_forget"}


def test_an_mcp_client_lists_the_tools_and_adds_searches_and_forgets(reverie_home, tmp_path):
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    netlog = tmp_path / "net.log"
    keep = ("PATH", "HOME", "OMP_WAIT_POLICY", "ANONYMIZED_TELEMETRY", "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(REVERIE_HOME=str(reverie_home), REVERIE_TEST_NET_LOG=str(netlog))
    params = StdioServerParameters(command=sys.executable, args=["-c", GUARDED_CLI, "mcp"], env=env)
    seen = {}

    async def call(s, name, **args):
        r = await s.call_tool(name, args)
        return r.is_error, r.structured_content, r.content[0].text if r.content else ""

    async def session():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                seen["tools"] = {t.name: t for t in (await s.list_tools()).tools}
                seen["add"] = await call(s, "memory_add", text="My sister is called Ingrid.")
                seen["add2"] = await call(s, "memory_add", text="I live in York.")
                seen["search"] = await call(s, "memory_search", query="sister", k=3)
                seen["list"] = await call(s, "memory_list")
                seen["empty"] = await call(s, "memory_search", query="   ")
                seen["k0"] = await call(s, "memory_search", query="sister", k=0)
                seen["neither"] = await call(s, "memory_forget")
                seen["preview"] = await call(s, "memory_forget", matching="Ingrid")
                seen["forget"] = await call(s, "memory_forget", matching="Ingrid", confirm=True)
                seen["york_id"] = seen["add2"][1]["memory"]["id"]
                seen["by_id"] = await call(s, "memory_forget", memory_id=seen["york_id"])
                seen["unknown"] = await call(s, "memory_forget", memory_id="m_bcdfghjkmnpq")
                seen["after"] = await call(s, "memory_search", query="sister Ingrid York")

    anyio.run(session)

    assert TOOLS <= set(seen["tools"])
    assert "query" in seen["tools"]["memory_search"].input_schema["properties"]
    err, added, _ = seen["add"]
    assert not err and added["action"] == "added" and "Ingrid" in added["memory"]["text"]
    err, found, _ = seen["search"]
    assert not err and "Ingrid" in found["results"][0]["text"]
    err, listed, _ = seen["list"]
    assert not err and {m["text"] for m in listed["memories"]} >= {"My sister is called Ingrid.",
                                                                   "I live in York."}
    for bad in ("empty", "k0", "neither", "unknown"):  # tool errors, each saying what to do
        err, _, text = seen[bad]
        assert err and text and "Traceback" not in text, (bad, text)
    assert "matching" in seen["neither"][2]
    err, preview, _ = seen["preview"]
    assert not err and preview["applied"] is False and preview["memories"]
    err, done, _ = seen["forget"]
    assert not err and done["applied"] is True
    err, by_id, _ = seen["by_id"]
    assert not err and by_id["memory"]["id"] == seen["york_id"]
    err, after, _ = seen["after"]
    assert not err and not any("Ingrid" in r["text"] or "York" in r["text"] for r in after["results"])
    assert not netlog.exists() or netlog.read_text() == ""
