"""A full disk is a clear error, not a traceback, and changes nothing (issue 7). The ledger's
"database or disk is full" is real SQLite: the ledger may not grow past its size at open
(PRAGMA max_page_count); the archive's is an ENOSPC raised by the tar writer."""
import errno
import json
import tarfile

from typer.testing import CliRunner

from cli.main import app
from memory_fakes import fake_embedder  # noqa: F401 - fixture

runner = CliRunner()


def _cap_ledger(monkeypatch):
    from memory.ledger import Ledger

    opened = Ledger.__init__

    def capped(self, home):
        opened(self, home)
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        self.db.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(Ledger, "__init__", capped)


def _counts(home):
    import sqlite3

    c = sqlite3.connect(str(home / "ledger.db"))
    try:
        return {t: c.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("memories", "memory_history", "memories_fts")}
    finally:
        c.close()


def test_a_full_disk_during_import_exits_1_and_changes_nothing(tmp_path, monkeypatch,
                                                               fake_embedder):  # noqa: F811
    home = tmp_path / "home"
    monkeypatch.setenv("REVERIE_HOME", str(home))
    assert runner.invoke(app, ["memory", "add", "My sister is called Ingrid."]).exit_code == 0
    before = _counts(home)
    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps({
        "id": f"m_big{i:04d}", "kind": "fact", "text": f"Fact number {i}: " + "word " * 200,
        "subject": None, "status": "active", "created": 1.0e9 + i, "updated": 1.0e9 + i,
        "source": {"command": "test"}, "history": []}) + "\n" for i in range(150)))
    with monkeypatch.context() as full:
        _cap_ledger(full)
        r = runner.invoke(app, ["memory", "import", str(src)])
    assert r.exit_code == 1, r.output
    assert "disk holding the ledger is full" in r.output and "Free some space" in r.output
    assert "Traceback" not in r.output
    assert _counts(home) == before  # the import was one transaction, rolled back
    # space freed: the same import now works
    r = runner.invoke(app, ["memory", "import", str(src), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["imported"] == 150


def test_a_full_disk_during_export_exits_1_and_leaves_no_partial_archive(tmp_path, monkeypatch,
                                                                         fake_embedder):  # noqa: F811
    home = tmp_path / "home"
    monkeypatch.setenv("REVERIE_HOME", str(home))
    assert runner.invoke(app, ["memory", "add", "My sister is called Ingrid."]).exit_code == 0
    out = tmp_path / "out" / "me.tar.gz"
    out.parent.mkdir()

    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(tarfile.TarFile, "addfile", no_space)
    r = runner.invoke(app, ["export", "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert "the disk is full writing" in r.output and "Traceback" not in r.output
    assert list(out.parent.iterdir()) == []  # the temp archive was removed too
