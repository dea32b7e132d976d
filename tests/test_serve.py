"""`reverie serve` on the real stack: a live server subprocess on the default model, driven by the
official `openai` client. Recall of a stored fact, streaming, two streams at once, a client that
leaves mid-stream, a promotion picked up between two requests, feedback, 401/400/404/503, the
loopback rule, SIGTERM and SIGKILL mid-stream. The server runs under a socket guard that records
(and blocks) any non-loopback connection; the last test checks it recorded none."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_network")]

KEY = "test-key-0123"
MODEL = "smollm2-135m"
FACT = "My sister is called Ingrid."

# Runs the CLI with the socket module wrapped: a non-loopback connect or name lookup is written
# to $REVERIE_TEST_NET_LOG and fails (the conftest no_network guard, for a subprocess).
GUARDED_CLI = r'''
import ipaddress, os, socket, sys
LOG = os.environ["REVERIE_TEST_NET_LOG"]
def _blocked(what, addr):
    host = addr[0] if isinstance(addr, tuple) else addr
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = "" if host is None else str(host).strip("[]")
    if host in ("", "localhost", "ip6-localhost"):
        return False
    try:
        if ipaddress.ip_address(host.split("%")[0]).is_loopback:
            return False
    except ValueError:
        pass
    with open(LOG, "a") as f:
        f.write(f"{what} {addr!r}\n")
    return True
def _wrap(cls_or_mod, name, pick):
    real = getattr(cls_or_mod, name)
    def guarded(*a, **kw):
        sock, addr = pick(a)
        if not (sock is not None and sock.family == socket.AF_UNIX) and _blocked(name, addr):
            raise OSError(f"network access blocked in tests: {name} {addr!r}")
        return real(*a, **kw)
    setattr(cls_or_mod, name, guarded)
_wrap(socket.socket, "connect", lambda a: (a[0], a[1]))
_wrap(socket.socket, "connect_ex", lambda a: (a[0], a[1]))
_wrap(socket, "create_connection", lambda a: (None, a[0]))
_wrap(socket, "getaddrinfo", lambda a: (None, (a[0],)))
sys.argv = ["reverie"] + sys.argv[1:]
from cli.main import main
main()
'''


def _env(home: Path, netlog: Path) -> dict:
    return dict(os.environ, REVERIE_HOME=str(home), REVERIE_TEST_NET_LOG=str(netlog))


class Server:
    def __init__(self, home: Path, *args: str):
        self.home = home
        self.netlog = home.parent / f"net-{id(self)}.log"
        self.errlog = home.parent / f"serve-{id(self)}.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GUARDED_CLI, "serve", "--port", "0", *args],
            env=_env(home, self.netlog), stdout=subprocess.DEVNULL, stderr=open(self.errlog, "w"))
        deadline = time.time() + 180
        while time.time() < deadline:
            m = re.search(r"at (http://\S+/v1)", self.errlog.read_text())
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server did not start:\n{self.errlog.read_text()[-2000:]}")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def health(self) -> dict:
        import httpx

        return httpx.get(self.url.removesuffix("/v1") + "/health", timeout=10).json()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the module: a candidate adapter, and a registered model whose file has
    gone (for the 503). The last test stops it with SIGTERM."""
    from test_adapter_bad_input import _adapter, _model_sha

    from quant.registry import Registry

    home = tmp_path_factory.mktemp("serve") / "home"
    _adapter(home, "v001-serve", _model_sha(home))
    reg = Registry(home)
    gone = home.parent / "gone.gguf"
    try:
        os.link(reg.get(MODEL).path, gone)
    except OSError:
        shutil.copy(reg.get(MODEL).path, gone)
    reg.add("gone", gone)
    gone.unlink()
    server = Server(home, "--api-key", KEY)
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def client(served):
    from openai import OpenAI

    return OpenAI(base_url=served.url, api_key=KEY, max_retries=0, timeout=120)


def _turns(home: Path) -> list[tuple]:
    c = sqlite3.connect(str(home / "ledger.db"))
    try:
        return c.execute("select id, role, content, meta, conversation_id from turns "
                         "order by created, rowid").fetchall()
    finally:
        c.close()


def _ask(client, text: str, max_tokens: int = 16, **extra):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
        extra_body=extra or None)
    return raw.parse(), raw.headers, raw.http_response.json()


def test_models_list_the_default_first(client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == MODEL and "gone" not in ids


def _facts(home: Path) -> list[str]:
    c = sqlite3.connect(str(home / "ledger.db"))
    try:
        return [r[0] for r in c.execute("select text from memories where kind = 'fact' and "
                                        "status = 'active'")]
    finally:
        c.close()


def test_a_fact_told_in_one_request_is_recalled_in_another(client, served):
    _ask(client, FACT, max_tokens=8)  # stored like a chat turn: the fact becomes a memory
    assert any("Ingrid" in f for f in _facts(served.home))
    before = len(_turns(served.home))
    resp, headers, body = _ask(client, "What is my sister called?")  # a new conversation
    assert "Ingrid" in resp.choices[0].message.content
    u = resp.usage
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 16
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert resp.choices[0].finish_reason in ("stop", "length")
    ext = body["reverie"]
    assert ext["recalled"] and ext["recorded"] and headers["x-reverie-adapter"] == "none"
    turns = _turns(served.home)
    assert len(turns) == before + 2  # the question and the answer, like a chat turn
    assert turns[-1][0] == ext["turn_id"] and turns[-1][2] == resp.choices[0].message.content
    assert json.loads(turns[-1][3])["completion_tokens"] == u.completion_tokens


def test_a_request_can_opt_out_of_memory_and_recording(client, served):
    before = _turns(served.home)
    resp, _, body = _ask(client, "What is my sister called?",
                         reverie={"memory": False, "record": False})
    assert body["reverie"]["recalled"] == [] and body["reverie"]["recorded"] is False
    assert _turns(served.home) == before
    with pytest.raises(Exception) as e:
        _ask(client, "hi", reverie={"memory": "no"})
    assert e.value.status_code == 400 and e.value.body["param"] == "reverie.memory"


def _stream(client, text: str, max_tokens: int = 24) -> dict:
    out = {"text": "", "chunks": 0, "finish": None, "usage": None, "roles": []}
    for ch in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
            stream=True, stream_options={"include_usage": True}):
        out["chunks"] += 1
        if ch.usage is not None:
            out["usage"] = ch.usage
        for c in ch.choices:
            out["roles"] += [c.delta.role] if c.delta.role else []
            out["text"] += c.delta.content or ""
            out["finish"] = c.finish_reason or out["finish"]
    return out


def test_a_streamed_completion(client):
    s = _stream(client, "What is the capital of France?")
    assert s["roles"] == ["assistant"] and s["text"].strip() and s["chunks"] >= 3
    assert s["finish"] in ("stop", "length")
    assert s["usage"].completion_tokens > 0 and s["usage"].prompt_tokens > 0


def test_two_streams_at_once_both_complete(client):
    results, errors = {}, []

    def run(who):
        try:
            results[who] = _stream(client, f"Tell me about {who}.", max_tokens=20)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(w,)) for w in ("cats", "the sea")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for who, s in results.items():
        assert s["text"].strip() and s["finish"] and s["usage"].completion_tokens > 0, who


def test_a_client_that_leaves_mid_stream_frees_the_model(served):
    import httpx

    before = served.health()["cancelled"]
    n_turns = len(_turns(served.home))
    body = {"model": MODEL, "stream": True, "max_tokens": 500,
            "messages": [{"role": "user", "content": "Write a very long story about a dragon."}]}
    with httpx.stream("POST", served.url + "/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
    assert any('"content"' in line for line in got)
    deadline = time.time() + 20
    while time.time() < deadline:
        h = served.health()
        if h["cancelled"] > before and not h["busy"]:
            break
        time.sleep(0.1)
    assert h["cancelled"] > before and not h["busy"], h
    assert len(_turns(served.home)) == n_turns  # a half answer is not recorded


def test_a_promotion_between_two_requests_takes_effect(client, served):
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger

    led = AdapterLedger(Ledger(served.home))  # the flips `reverie sleep` and rollback make
    _, h1, b1 = _ask(client, "Hello there.", max_tokens=8)
    led.promote("v001-serve")
    try:
        _, h2, b2 = _ask(client, "Hello there.", max_tokens=8)
    finally:
        led.demote_all(MODEL)
    _, h3, _ = _ask(client, "Hello there.", max_tokens=8)
    assert h1["x-reverie-adapter"] == "none" and b1["reverie"]["adapter"] is None
    assert h2["x-reverie-adapter"] == "v001-serve"
    assert b2["reverie"]["adapter"].endswith("v001-serve/adapter.gguf")
    meta = {t[0]: json.loads(t[3]) for t in _turns(served.home) if t[1] == "assistant"}
    assert b2["reverie"]["adapter_form"] == "runtime_lora"  # no merged file was made for it
    assert meta[b2["reverie"]["turn_id"]]["adapter"] == "v001-serve"  # the ledger agrees
    assert h3["x-reverie-adapter"] == "none"  # and the rollback too


def test_feedback_on_a_completion_is_stored_like_chat_feedback(client, served):
    import httpx

    from memory.feedback import FeedbackLog
    from memory.ledger import Ledger

    resp, _, body = _ask(client, "Who wrote Hamlet?", max_tokens=12)
    url = f"{served.url}/chat/completions/{resp.id}/feedback"
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(url, json={"kind": "fix", "correction": "William Shakespeare."}, headers=auth)
    assert r.status_code == 200, r.text
    led = Ledger(served.home)
    try:
        fb = FeedbackLog(led).list(kind="fix", limit=10)
    finally:
        led.close()
    mine = [f for f in fb if f.id == r.json()["id"]]
    assert mine and mine[0].turn_id == body["reverie"]["turn_id"]
    assert mine[0].prompt == "Who wrote Hamlet?" and mine[0].correction == "William Shakespeare."
    assert mine[0].answer == resp.choices[0].message.content
    bad = httpx.post(url, json={"kind": "meh"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "kind"
    missing = httpx.post(f"{served.url}/chat/completions/chatcmpl-nope/feedback",
                         json={"kind": "good"}, headers=auth)
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_errors_come_in_openai_shape_with_the_right_status(client, served):
    import httpx
    import openai
    from openai import OpenAI

    with pytest.raises(openai.AuthenticationError) as e:
        OpenAI(base_url=served.url, api_key="wrong", max_retries=0).models.list()
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    assert httpx.get(served.url + "/models").status_code == 401  # no key at all
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "hi"}])
    assert e.value.body["param"] == "messages" and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=100_000)
    r = httpx.get(served.url + "/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.InternalServerError) as e:  # registered, but its file is gone
        client.chat.completions.create(model="gone", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503 and "gone" in e.value.message
    s = _stream(client, "Say hi.", max_tokens=4)  # the default model still answers
    assert s["usage"].completion_tokens > 0


def test_a_non_loopback_host_needs_a_key(reverie_home):
    from typer.testing import CliRunner

    from cli.main import app

    r = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert r.exit_code == 1 and "--api-key" in r.output and "Traceback" not in r.output


def test_the_server_made_no_network_connection(served):
    assert not served.netlog.exists() or served.netlog.read_text() == ""


def _raw_stream(url: str, n_lines: int, on_lines, headers: dict | None = None) -> list[str]:
    import httpx

    body = {"model": MODEL, "stream": True, "max_tokens": 500,
            "messages": [{"role": "user", "content": "Write a very long story about a dragon."}]}
    out = []
    with httpx.stream("POST", url + "/chat/completions", json=body, timeout=60,
                      headers=headers) as r:
        for line in r.iter_lines():
            if not line:
                continue
            out.append(line)
            if len(out) == n_lines:
                on_lines()
    return out


def test_killed_mid_stream_the_ledger_stays_whole(tmp_path):
    import httpx
    from openai import OpenAI

    home = tmp_path / "home"
    srv = Server(home)
    OpenAI(base_url=srv.url, api_key="none", max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": FACT}], max_tokens=8)
    with pytest.raises(httpx.HTTPError):  # the connection dies with the server
        _raw_stream(srv.url, 4, lambda: srv.proc.send_signal(signal.SIGKILL))
    srv.proc.wait(timeout=30)
    c = sqlite3.connect(str(home / "ledger.db"))
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        roles = [r[0] for r in c.execute("select role from turns order by created, rowid")]
        assert roles == ["user", "assistant"]  # the killed answer left nothing half-written
    finally:
        c.close()


def test_sigterm_mid_stream_stops_cleanly(served):
    """Last in the module: it stops the module's server."""
    n_turns = len(_turns(served.home))
    lines = _raw_stream(served.url, 4, lambda: served.proc.send_signal(signal.SIGTERM),
                        {"Authorization": f"Bearer {KEY}"})
    assert served.proc.wait(timeout=60) == 0
    assert lines[-1] == "data: [DONE]" and any("shutting_down" in line for line in lines)
    assert "Traceback" not in served.errlog.read_text()
    assert len(_turns(served.home)) == n_turns
    c = sqlite3.connect(str(served.home / "ledger.db"))
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        c.close()
