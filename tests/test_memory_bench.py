"""bench.memory_bench scoring and recall's fusion helpers, on tiny inputs."""
import json

from bench.memory_bench import percentile, run_locomo
from memory.recall import fuse, neighbour_support
from memory_fakes import LOCOMO_SAMPLE, fake_embedder  # noqa: F401 - fixture


def test_fuse_and_neighbour_support():
    scores = fuse({"vector": ["a", "b"], "bm25": ["b", "c"]}, k=10)
    assert max(scores, key=scores.get) == "b"
    assert scores["a"] == 1 / 11 and scores["c"] == 1 / 12
    boosted = neighbour_support(scores, {"b": ["c", "zz"]}, share=0.5)
    assert boosted["c"] == scores["c"] + 0.5 * scores["b"] and "zz" not in boosted
    assert boosted["a"] == scores["a"]


def test_percentile():
    assert percentile([1, 2, 3, 4, 5], 0.5) == 3
    assert percentile([10.0], 0.95) == 10.0 and percentile([], 0.5) == 0.0


def test_run_locomo_reports_every_method(tmp_path, fake_embedder):  # noqa: F811
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([LOCOMO_SAMPLE]))
    res = run_locomo(path, k=2)
    assert res["n_questions"] == 1 and res["k"] == 2  # the category-5 item is left out
    assert set(res["recall_at_k"]) == {"hybrid", "vector", "bm25"}
    assert res["recall_at_k"]["bm25"] == 1.0  # "Ada's dog" -> D1:1 is in the top 2 of 3 turns
    assert res["by_category"]["4"]["hybrid"] == res["recall_at_k"]["hybrid"]
    assert set(res["latency_ms"]) >= {"p50", "p95"}


def test_memory_scale_builds_once_and_reports_percentiles(tmp_path, fake_embedder, monkeypatch):  # noqa: F811
    import bench.memory_scale as scale

    monkeypatch.setattr(scale, "VERSION", 0)
    a = scale.corpus(300)
    assert scale.corpus(120) == a[:120]  # prefix-stable: one embedding cache serves every size
    assert {kind for kind, _, _ in a} == {"episodic", "fact"}
    assert len(set(scale.queries(50))) == 50
    res = scale.run(200, n_queries=20, k=5, root=tmp_path)
    assert res["active_memories"] == 200 and res["n_queries"] == 20
    assert 0 < res["p50_ms"] <= res["p95_ms"] and res["build"]["cached"] is False
    assert {"embed", "vector", "bm25", "rows", "neighbours", "fuse"} <= set(res["stages_ms"])
    again = scale.run(200, n_queries=5, root=tmp_path)
    assert again["build"]["cached"] is True
    assert (tmp_path / "emb-v0-s0.npy").exists()


def test_cli_bench_memory_runs_the_benchmark_and_refuses_bad_input(tmp_path, fake_embedder):  # noqa: F811
    from typer.testing import CliRunner

    from cli.main import app

    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([LOCOMO_SAMPLE]))
    r = CliRunner().invoke(app, ["bench", "memory", str(path), "--k", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["recall_at_k"]["bm25"] == 1.0
    r = CliRunner().invoke(app, ["bench", "memory", str(path), "--format", "csv"])
    assert r.exit_code == 1 and "unknown format 'csv'" in r.output and "Traceback" not in r.output
    (tmp_path / "bad.json").write_text("{}")
    r = CliRunner().invoke(app, ["bench", "memory", str(tmp_path / "bad.json")])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output
