"""chromadb's persistent client is not multi-process safe on its own: a process that opened the
collection before another process wrote to it, then searches while the writer is still alive,
got "Error creating hnsw segment reader: Nothing found on disk" (the writer keeps its HNSW in
memory). memory/index.py makes one directory safe to share (an flock plus a generation number);
these tests run real processes against one collection."""
import json
import subprocess
import sys
import textwrap
import time

WORKER = textwrap.dedent("""
    import json, random, sys, time
    from pathlib import Path
    from memory.index import VectorIndex
    home, role, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    index = VectorIndex(home)
    rng = random.Random(role)
    def wait_for(name, limit=60):
        t0 = time.time()
        while not (home / name).exists():
            if time.time() - t0 > limit:
                sys.exit(f"{role}: gave up waiting for {name}")
            time.sleep(0.05)
    if role == "reader":  # opens the empty collection first, searches after the writer wrote
        print(json.dumps({"count_before": index.count()}), flush=True)
        (home / "reader-open").touch()
        wait_for("writer-wrote")
        hits = index.search([rng.random() for _ in range(8)], 50)
        print(json.dumps({"found": sorted(h.id for h in hits)}), flush=True)
        (home / "reader-done").touch()
    elif role == "writer":  # writes and stays alive while the reader searches
        wait_for("reader-open")
        vecs = [[rng.random() for _ in range(8)] for _ in range(n)]
        index.add_embedded([f"w{i}" for i in range(n)], vecs, [{"kind": "fact"}] * n)
        (home / "writer-wrote").touch()
        wait_for("reader-done")
    else:  # both write and search, interleaved
        seen_other = 0
        for i in range(n):
            vec = [rng.random() for _ in range(8)]
            index.add_embedded([f"{role}{i}"], [vec], [{"kind": "fact"}])
            hits = index.search(vec, 200)
            assert hits[0].id == f"{role}{i}", hits[:3]  # its own fresh write comes first
            seen_other = max(seen_other, sum(not h.id.startswith(role) for h in hits))
        print(json.dumps({"seen_other": seen_other}))
""")


def _run(home, roles, n):
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(home), role, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role in roles]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for (out, err, rc), role in zip(results, roles):
        assert rc == 0 and "Error" not in err, f"{role}: exit {rc}\n{err[-1500:]}"
    return [[json.loads(line) for line in out.splitlines()] for out, _, _ in results]


def test_a_reader_opened_before_a_live_writer_wrote_sees_its_rows(tmp_path):
    (reader, _) = _run(tmp_path, ("reader", "writer"), 3)
    assert reader[0] == {"count_before": 0}
    assert reader[1] == {"found": ["w0", "w1", "w2"]}
    assert (tmp_path / "chroma.lock").stat().st_mode & 0o777 == 0o600


def test_two_processes_writing_and_searching_at_once_lose_nothing(tmp_path):
    t0 = time.time()
    a, b = _run(tmp_path, ("a", "b"), 20)
    assert a[0]["seen_other"] > 0 and b[0]["seen_other"] > 0  # each saw the other's rows
    from memory.index import VectorIndex

    assert VectorIndex(tmp_path).count() == 40  # no write lost
    assert time.time() - t0 < 120
