"""Your data, out and gone: `reverie export` (one private archive) and `reverie wipe`.

Owns: what counts as personal data in a data dir, a consistent snapshot of it (the ledger copied
with SQLite's online backup API, memories and feedback read from that copy), the archive written
0600 under a temp name then renamed, and deleting the whole data dir — never while a reverie
process uses it (each command holds a shared lock on IN_USE; wipe takes it exclusively).
Derived or public files (the chromadb index, caches, checkpoints, model files) are left out:
the index is rebuilt by `reverie memory reindex`.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

from common.files import atomic_path

from .errors import ReverieError

# Copied as they are when present: adapters (trained on your facts), sleep/eval reports (they quote
# your facts), settings and the model list.
PLAIN = ("adapters", "reports", "settings.json", "models.json")
# Left out: derived from the ledger or public. Named in the export's result so nothing is silent.
SKIPPED = ("chroma", "cache", "work", "models")
# Anything a reverie data dir can hold; wipe refuses a directory with none of these in it.
IN_USE = "in-use.lock"
KNOWN = {"ledger.db", "ledger.db-wal", "ledger.db-shm", "sleep.lock", "chroma.lock", IN_USE,
         *PLAIN, *SKIPPED}


class DataDirHold:
    """A shared flock on <home>/in-use.lock while a command runs (the OS drops it if the process
    dies). `wipe` takes the same lock exclusively and non-blocking, so it refuses while any chat,
    ask, sleep or memory command uses the dir; `gone()` tells a process that its dir was deleted
    anyway (by hand) or replaced since it started."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.path = self.home / IN_USE
        while True:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a wipe is deleting the dir
            if not self._gone(fd):
                self.fd: int | None = fd
                return
            os.close(fd)  # the dir was wiped while we waited: hold the fresh one instead

    def _gone(self, fd: int) -> bool:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        mine = os.fstat(fd)
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)

    def gone(self) -> bool:
        return self.fd is not None and self._gone(self.fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def _backup_ledger(home: Path, dest: Path) -> None:
    """A transactionally consistent copy, even while chat or sleep write (WAL readers see a snapshot)."""
    src = sqlite3.connect(str(home / "ledger.db"), timeout=30)
    try:
        out = sqlite3.connect(str(dest))
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()


def _jsonl_from_copy(copy_dir: Path) -> tuple[int, int]:
    """memories.jsonl and feedback.jsonl read from the ledger copy (same snapshot as ledger.db)."""
    from memory import MemoryStore
    from memory.feedback import FeedbackLog
    from memory.ledger import Ledger

    ledger = Ledger(copy_dir)
    try:
        n_mem = MemoryStore(copy_dir, ledger).export_jsonl(copy_dir / "memories.jsonl")
        rows = FeedbackLog(ledger).list(limit=None)
        (copy_dir / "feedback.jsonl").write_text(
            "".join(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for r in rows),
            encoding="utf-8")
        ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        ledger.close()
    return n_mem, len(rows)


def default_archive(now: float | None = None) -> Path:
    return Path.cwd() / f"reverie-export-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}.tar.gz"


def export_all(home: Path, out: Path | None = None) -> dict:
    """Write every personal file of `home` into one .tar.gz (0600, temp name then rename)."""
    home = Path(home)
    out = Path(out).expanduser() if out else default_archive()
    if out.exists() and out.is_dir():
        raise ReverieError(f"{out} is a directory; give a file name such as {out / 'reverie.tar.gz'}.")
    if not out.parent.is_dir():
        raise ReverieError(f"directory {out.parent} does not exist; create it or choose another --out.")
    try:
        out.resolve().relative_to(home.resolve())
        raise ReverieError(f"{out} is inside the data dir {home}; write the archive somewhere else.")
    except ValueError:
        pass
    members: list[str] = []
    counts = {"memories": 0, "feedback": 0}
    with tempfile.TemporaryDirectory(prefix="reverie-export-") as work:
        snap = Path(work)
        os.chmod(snap, 0o700)
        if (home / "ledger.db").exists():
            _backup_ledger(home, snap / "ledger.db")
            counts["memories"], counts["feedback"] = _jsonl_from_copy(snap)
            for name in ("ledger.db", "memories.jsonl", "feedback.jsonl"):
                os.chmod(snap / name, 0o600)
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                for name in ("ledger.db", "memories.jsonl", "feedback.jsonl"):
                    if (snap / name).exists():
                        tar.add(snap / name, arcname=f"reverie/{name}")
                        members.append(name)
                for name in PLAIN:
                    if (home / name).exists():
                        tar.add(home / name, arcname=f"reverie/{name}", filter=_no_temp)
                        members.append(name)
                tar.close()
                raw.flush()
                os.fsync(raw.fileno())
            os.chmod(tmp, 0o600)
    return {"path": str(out), "bytes": out.stat().st_size, "members": members, **counts,
            "skipped": [s for s in SKIPPED if (home / s).exists()]}


def _no_temp(info: tarfile.TarInfo):
    # half-written temp files and dirs of an atomic write in progress are not data
    base = os.path.basename(info.name)
    return None if base.startswith(".") and (".tmp" in base or ".old." in base) else info


def wipe(home: Path) -> dict:
    """Delete the whole data dir; refuses while any reverie process holds it (DataDirHold) or
    `reverie sleep` holds its lock."""
    from .sleep import sleep_lock

    home = Path(home)
    if not home.exists():
        return {"path": str(home), "wiped": False, "message": "nothing to wipe"}
    entries = {p.name for p in home.iterdir()}
    if entries and not entries & KNOWN:
        raise ReverieError(f"{home} does not look like a reverie data dir (no ledger.db, "
                           "settings or adapters); not deleting it. Check REVERIE_HOME.")
    if home.resolve() in (Path.home().resolve(), Path("/")):
        raise ReverieError(f"refusing to delete {home}; point REVERIE_HOME at reverie's own directory.")
    fd = os.open(home / IN_USE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReverieError(
                f"another reverie process is using {home} (a chat, ask, sleep or memory command); "
                "quit it (/quit or Ctrl-D in chat) or let it finish, then run `reverie wipe` again. "
                "Nothing was deleted.") from None
        with sleep_lock(home):  # raises "another `reverie sleep` is running" when held
            shutil.rmtree(home)
    finally:
        os.close(fd)
    return {"path": str(home), "wiped": True, "message": f"deleted {home}"}
