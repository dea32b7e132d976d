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


def test_ablation_rerankers_spread_the_top_over_exchanges():
    from bench.recall_ablation import adjacent_diversity
    from memory.recall import Recalled

    def turn(dia, score):
        return Recalled(dia, dia, "episodic", score, {"dia_id": dia, "conversation_id": "c"})

    items = [turn("D1:1", 1.0), turn("D1:2", 0.9), turn("D1:3", 0.8), turn("D5:7", 0.7)]
    got = [it.id for it in adjacent_diversity(0.5)(None, items)]
    # D1:2 sits next to D1:1 (0.9 x 0.5) and then to D1:3 too (x 0.25): below D5:7 (0.7);
    # D1:3 is two turns from D1:1, outside the width, and keeps its 0.8
    assert got == ["D1:1", "D1:3", "D5:7", "D1:2"]
    assert [it.id for it in adjacent_diversity(0.0)(None, items)] == [it.id for it in items]


def test_memory_scale_repeats_report_each_run_and_their_median():
    from bench.memory_scale import repeated

    def run(p95, cpu):
        return {"n": 10, "p50_ms": p95 / 2, "p95_ms": p95, "p99_ms": p95, "cpu_ms": {"p95": cpu},
                "raw_chromadb": {"ms": {"p95": 1.0}}, "stages_ms": {},
                "load_average_before": [1, 1, 1], "load_average": [1, 1, 1]}

    one = repeated([run(40.0, 20.0)])
    assert one["p95_ms"] == 40.0 and "runs" not in one
    three = repeated([run(40.0, 20.0), run(90.0, 22.0), run(60.0, 21.0)])
    assert three["p95_ms"] == 40.0 and len(three["runs"]) == 3  # the first run in full
    assert three["median_of_runs"]["p95_ms"] == 60.0 and three["median_of_runs"]["cpu_p95_ms"] == 21.0
