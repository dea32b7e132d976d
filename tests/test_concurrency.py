"""Concurrency on the real stack: two `reverie chat` processes talk at once while adapters are
promoted and rolled back underneath them. Nothing blocks for long, nothing is lost or mixed up,
and each chat answers through whichever complete adapter is promoted at that turn."""
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_adapter_bad_input import _adapter, _model_sha

pytestmark = pytest.mark.slow

TURNS = 6


def _lines(who: str) -> str:
    said = [f"My friend {who}{i} plays the oboe." for i in range(TURNS - 1)]
    return "\n".join(said + [f"/remember My locker {who} has the code {who}42."]) + "\n"


def test_two_chats_at_once_while_adapters_are_promoted(reverie_home):
    from assistant.adapters_api import adapter_promote

    sha = _model_sha(reverie_home)
    ggufs = {vid: str(_adapter(reverie_home, vid, sha, seed=i) / "adapter.gguf")
             for i, vid in enumerate(("v001-a", "v002-b"))}
    adapter_promote(reverie_home, "v001-a")
    exe = str(Path(sys.executable).parent / "reverie")
    env = dict(os.environ, REVERIE_HOME=str(reverie_home))
    t0 = time.time()
    chats = {who: subprocess.Popen([exe, "chat", "--max-tokens", "8"], env=env, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
             for who in ("ann", "bob")}
    for who, p in chats.items():
        p.stdin.write(_lines(who))
        p.stdin.close()
    flips = 0
    while any(p.poll() is None for p in chats.values()) and time.time() - t0 < 240:
        adapter_promote(reverie_home, ("v002-b", "v001-a")[flips % 2])  # a writer in the ledger
        flips += 1
        time.sleep(0.2)
    results = {who: (p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for who, p in chats.items()}
    for who, (rc, out, err) in results.items():
        assert rc == 0 and "Traceback" not in err, f"{who}: exit {rc}\n{err[-800:]}"
    assert flips >= 2, "the promotions ran while the chats were talking (both ways)"

    c = sqlite3.connect(str(reverie_home / "ledger.db"))
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        turns = c.execute("select role, content, meta, conversation_id, created from turns "
                          "order by created").fetchall()
        for conv in {t[3] for t in turns}:  # nothing blocked: turns kept coming in each chat
            times = [t[4] for t in turns if t[3] == conv]
            gap = max(b - a for a, b in zip(times, times[1:]))
            assert gap < 60, f"a chat waited {gap:.0f}s between turns: something blocked"
        assert len({t[3] for t in turns}) == 2  # one conversation each
        users = [t for t in turns if t[0] == "user"]
        answers = [t for t in turns if t[0] == "assistant"]
        assert len(users) == len(answers) == 2 * (TURNS - 1)  # /remember is a command, not a turn
        for who in ("ann", "bob"):  # each conversation holds only its own user's words
            conv = {t[3] for t in users if who in t[1]}
            assert len(conv) == 1 and all(who in t[1] for t in users if t[3] in conv)
        used = {json.loads(t[2])["adapter"] for t in answers}
        assert used <= set(ggufs), used  # always a complete, promoted adapter version
        orphans = c.execute("select count(*) from turns t where t.role = 'user' and not exists "
                            "(select 1 from memories m where json_extract(m.source, '$.turn_id') = t.id)"
                            ).fetchone()[0]
        assert orphans == 0  # every user turn has its episodic memory
        facts = [r[0] for r in c.execute("select text from memories where kind = 'fact' and status = 'active'")]
        for who in ("ann", "bob"):
            assert any(f"{who}42" in f for f in facts), facts  # both /remember facts stored
    finally:
        c.close()
    from memory import MemoryStore

    store = MemoryStore(reverie_home)
    try:  # every memory either chat wrote reached chromadb, with no heal in between
        active = store.db.execute("select count(*) from memories where status = 'active'").fetchone()[0]
        assert store.vectors.count() == active
    finally:
        store.close()
