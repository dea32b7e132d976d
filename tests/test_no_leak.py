"""Memory text is never written outside the data dir (issue 7): real `reverie memory` commands in
subprocesses, with HOME, the cache dirs and TMPDIR pointed at fresh directories, and then every
file under them is searched for the secret text."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # three processes load the real embedder

SECRET = "Zyxwvut my bank PIN is 48151623"


def test_memory_text_stays_inside_the_data_dir(tmp_path):
    home = tmp_path / "data"
    user = {k: tmp_path / k for k in ("home", "cache", "tmp", "config")}
    for d in user.values():
        d.mkdir()
    env = dict(os.environ, REVERIE_HOME=str(home), HOME=str(user["home"]),
               XDG_CACHE_HOME=str(user["cache"]), XDG_CONFIG_HOME=str(user["config"]),
               TMPDIR=str(user["tmp"]))
    exe = str(Path(sys.executable).parent / "reverie")
    out = {}
    for args in (["memory", "add", SECRET], ["memory", "reindex"],
                 ["memory", "search", "bank PIN", "--json"]):
        r = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-1500:]
        out[args[1]] = r.stdout
    hits = json.loads(out["search"])
    assert hits and SECRET in hits[0]["text"]  # it was stored and is found
    needle = b"48151623"
    inside = [p for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert inside  # the check can see the text where it belongs
    outside = [p for d in user.values() for p in d.rglob("*")
               if p.is_file() and needle in p.read_bytes()]
    assert outside == []
