"""`reverie bench … --json` prints one JSON document on stdout and nothing else (progress and
status go to stderr), so `reverie bench chat --json | jq` works. Whole processes on the real
stack, at the smallest sizes the commands accept."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # real model / real embedder and chromadb, whole processes

RUN = "import sys; from cli.main import main; sys.argv = ['reverie', *sys.argv[1:]]; main()"


def reverie_json(args: list[str], home) -> object:
    p = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, REVERIE_HOME=str(home)))
    assert p.returncode == 0, p.stderr[-2000:]
    try:
        return json.loads(p.stdout)  # the whole of stdout, not its last line
    except json.JSONDecodeError as e:
        raise AssertionError(f"stdout is not one JSON document ({e}):\n{p.stdout[:500]}") from e


def test_bench_chat_json_is_only_json(reverie_home):
    res = reverie_json(["bench", "chat", "--json", "--reps", "1", "--max-tokens", "8"], reverie_home)
    assert res["reps"] == 1 and res["max_tokens"] == 8
    assert res["reverie"]["tokens_per_s_median"] > 0
    assert res["raw_llama_cpp"]["tokens_per_s_median"] > 0


def test_bench_memory_scale_json_is_only_json(reverie_home, tmp_path):
    res = reverie_json(["bench", "memory-scale", "--json", "--n", "60", "--queries", "5",
                        "--cache-dir", str(tmp_path / "scale")], reverie_home)
    assert res["n"] == 60 and res["n_queries"] == 5
    assert res["p95_ms"] >= res["p50_ms"] > 0
    # raw chromadb beside it, same run, same k, over the same vectors
    assert res["raw_vector_entries"] == res["vector_entries"] >= res["active_memories"] == 60
    assert res["raw_chromadb"]["ms"]["p50"] > 0 and res["ratio_p50"] > 0
    assert 0 <= res["top_k_overlap_with_raw"] <= 1
