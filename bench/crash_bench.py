"""Crash harness: real `reverie` subprocesses SIGKILLed at random times, then the data dir checked.

Commands killed (round robin): `memory import FILE` (a fresh file of new records each time),
`memory add TEXT`, `chat` fed lines on stdin, `sleep --steps 1 --force`. After every kill:
  - `PRAGMA integrity_check` of the ledger is ok;
  - every memory, turn and feedback row that existed before the kill is still there (rows_lost),
    a memory that `memory add` reported is there, an import is all-or-nothing (partial_imports);
  - no duplicate rows (the same active fact twice, two memories for one chat turn);
  - the sleep lock is free and every adapter the ledger points at loads (files complete).
Before the kills (unless --no-warm-up) one whole night runs and its adapter is promoted, so every
check has a promoted adapter to load. After a kill the same command is run again to completion (every time, or only after the last kill
of each kind with --recover last) and must exit 0. At the end `memory reindex` must bring the
chromadb index to the ledger's active count.

Run: .venv/bin/python -m bench.crash_bench --kills 200 --json
     (CI form: tests/test_crash.py runs a few kills under a wall-clock budget)
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import re
import uuid
from collections import Counter
from pathlib import Path

KINDS = ("import", "add", "chat", "sleep")
# Until a command has run to completion once, kill it somewhere in this many seconds.
DEFAULT_WINDOW_S = 20.0
IMPORT_RECORDS = 40
ACK = re.compile(r"^(?:added|updated|superseded) (m_[0-9a-z_-]+):", re.M)


def reverie_bin() -> str:
    exe = Path(sys.executable).parent / "reverie"
    if not exe.exists():
        raise SystemExit(f"{exe} not found; install reverie in this venv (make install).")
    return str(exe)


def _env(home: Path) -> dict:
    env = dict(os.environ, REVERIE_HOME=str(home), ANONYMIZED_TELEMETRY="False",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


class Harness:
    def __init__(self, home: Path, work: Path, seed: int = 0, log=None, sleep_recovery: str = "full"):
        self.sleep_recovery = sleep_recovery
        self.home, self.work = Path(home), Path(work)
        self.rng = random.Random(seed)
        self.log = log or (lambda m: None)
        self.bin = reverie_bin()
        self.durations: dict[str, float] = {}
        self.pending: dict[str, dict] = {}  # kind -> the last killed job, to run again
        self.stats = Counter()
        self.failures: list[str] = []
        self.n = 0

    # --- jobs: (argv, stdin) for each kind --------------------------------------------------
    def job(self, kind: str) -> dict:
        self.n += 1
        tag = uuid.uuid4().hex[:8]
        if kind == "import":
            path = self.work / f"import-{tag}.jsonl"
            t = time.time()
            recs = [{"id": f"m_crash{tag}{i:03d}", "kind": "fact",
                     "text": f"Crash test record {tag} number {i}: the code word is {tag}{i}.",
                     "subject": None, "status": "active", "created": t, "updated": t,
                     "source": {"command": "crash_bench"}, "history": []}
                    for i in range(IMPORT_RECORDS)]
            path.write_text("".join(json.dumps(r) + "\n" for r in recs))
            return {"kind": kind, "argv": ["memory", "import", str(path)], "stdin": None,
                    "ids": [r["id"] for r in recs]}
        if kind == "add":
            text = f"My locker {tag} has the combination {self.rng.randrange(10**6)}."
            return {"kind": kind, "argv": ["memory", "add", text], "stdin": None}
        if kind == "chat":
            lines = [f"My friend {tag} plays the {self.rng.choice(['oboe', 'drums', 'lute'])}.", "/good",
                     "/remember I water the plants on Sundays."]
            return {"kind": kind, "argv": ["chat", "--max-tokens", "8"], "stdin": "\n".join(lines) + "\n"}
        if kind == "sleep":
            return {"kind": kind, "argv": ["sleep", "--steps", "1", "--force"], "stdin": None}
        raise ValueError(kind)

    def start(self, job: dict) -> subprocess.Popen:
        p = subprocess.Popen([self.bin, *job["argv"]], env=_env(self.home), cwd=self.work,
                             stdin=subprocess.PIPE if job["stdin"] else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        return p

    def run_to_end(self, job: dict, timeout: float | None = None) -> tuple[int, str, str]:
        # a whole night (anchors, training, evaluation) took over 15 min on 2 loaded cores
        timeout = timeout or (3600 if job["kind"] == "sleep" else 600)
        t0 = time.time()
        p = self.start(job)
        try:
            out, err = p.communicate(job["stdin"], timeout=timeout)
        except BaseException:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise
        # the longest successful run sets the kill window (a rerun of a committed import is quick)
        if p.returncode == 0:
            self.durations[job["kind"]] = max(self.durations.get(job["kind"], 0), time.time() - t0)
        return p.returncode, out, err

    # --- the ledger, read directly (no reverie import: the checker must not share its bugs) --
    def snapshot(self) -> dict:
        db = self.home / "ledger.db"
        if not db.exists():
            return {"memories": set(), "turns": set(), "feedback": set()}
        c = sqlite3.connect(str(db), timeout=30)
        try:
            return {"memories": {r[0] for r in c.execute("select id from memories")},
                    "turns": {r[0] for r in c.execute("select id from turns")},
                    "feedback": {r[0] for r in c.execute("select id from feedback")}}
        finally:
            c.close()

    def check(self, before: dict, job: dict, out: str) -> None:
        c = sqlite3.connect(str(self.home / "ledger.db"), timeout=30)
        try:
            ok = c.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                self.fail(f"{job['kind']}: integrity_check says {ok!r}")
            after = self.snapshot()
            for table, ids in before.items():
                lost = ids - after[table]
                if lost:
                    self.stats["rows_lost"] += len(lost)
                    self.fail(f"{job['kind']}: {len(lost)} {table} rows lost, e.g. {sorted(lost)[:3]}")
            for mid in ACK.findall(out) if job["kind"] == "add" else []:
                if mid not in after["memories"]:  # what `memory add` acknowledged must be there
                    self.stats["rows_lost"] += 1
                    self.fail(f"add: acknowledged {mid} is missing")
            if job.get("ids"):
                n = c.execute(f"select count(*) from memories where id in "
                              f"({','.join('?' * len(job['ids']))})", job["ids"]).fetchone()[0]
                if n not in (0, len(job["ids"])):
                    self.stats["partial_imports"] += 1
                    self.fail(f"import: {n} of {len(job['ids'])} records present (not all-or-nothing)")
            dup_facts = c.execute("select coalesce(sum(n - 1), 0) from (select count(*) n from memories "
                                  "where kind = 'fact' and status = 'active' group by text having n > 1)"
                                  ).fetchone()[0]
            dup_turns = c.execute("select coalesce(sum(n - 1), 0) from (select count(*) n from memories "
                                  "where kind = 'episodic' and json_extract(source, '$.turn_id') is not null "
                                  "group by json_extract(source, '$.conversation_id'), "
                                  "json_extract(source, '$.turn_id') having n > 1)").fetchone()[0]
            self.stats["duplicates"] = int(dup_facts) + int(dup_turns)
            if self.stats["duplicates"]:
                self.fail(f"{job['kind']}: {self.stats['duplicates']} duplicate memories")
            # a chat turn in the ledger whose episodic memory was never written is a lost memory
            orphans = c.execute("select count(*) from turns t where t.role = 'user' and not exists "
                                "(select 1 from memories m where m.kind = 'episodic' and "
                                "json_extract(m.source, '$.turn_id') = t.id)").fetchone()[0]
            self.stats["turns_without_memory"] = int(orphans)
            if orphans:
                self.fail(f"{job['kind']}: {orphans} user turn(s) recorded without their memory")
            adapters = c.execute("select id, path, gguf from adapters where status = 'promoted'").fetchall()
        finally:
            c.close()
        self.check_lock()
        for aid, path, gguf in adapters:
            self.check_adapter(aid, Path(path), Path(gguf))

    def check_lock(self) -> None:
        lock = self.home / "sleep.lock"
        if lock.exists():
            with open(lock, "a+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(f, fcntl.LOCK_UN)
                except BlockingIOError:
                    self.fail("sleep.lock is still held after the sleep was killed")

    def check_adapter(self, aid: str, path: Path, gguf: Path) -> None:
        from lora.adapter import load_adapter
        from quant.gguf_lora import read_gguf_lora

        try:
            load_adapter(path)
            read_gguf_lora(gguf)
            self.stats["adapter_checks"] += 1
        except Exception as e:  # noqa: BLE001 - any failure to load is the finding
            self.fail(f"promoted adapter {aid} does not load: {type(e).__name__}: {e}")

    def fail(self, msg: str) -> None:
        self.log("FAIL " + msg)
        self.failures.append(msg)

    # --- one kill, one recovery --------------------------------------------------------------
    def kill_one(self, kind: str) -> None:
        job = self.job(kind)
        before = self.snapshot()
        window = self.durations.get(kind, DEFAULT_WINDOW_S)
        at = self.rng.uniform(0.05, 1.0) * window
        p = self.start(job)
        t0 = time.time()
        try:
            out, _ = p.communicate(job["stdin"], timeout=at)
            self.stats["finished_before_kill"] += 1  # ran to the end first: not a kill
            # the next kill of this kind aims inside the time it really took
            took = time.time() - t0
            self.durations[kind] = min(self.durations.get(kind, took), took)
            if p.returncode != 0:
                self.fail(f"{kind}: exited {p.returncode} without being killed")
            self.check(before, job, out)
            return
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        except BaseException:
            os.killpg(p.pid, signal.SIGKILL)  # never leave a child running behind the harness
            p.wait()
            raise
        self.stats["kills"] += 1
        self.stats[f"kills_{kind}"] += 1
        self.log(f"killed {kind} at {at:.1f}s (kill {self.stats['kills']}, "
                 f"rows lost {self.stats['rows_lost']}, failures {len(self.failures)})")
        self.check(before, job, out or "")
        self.pending[kind] = job

    def recover(self, kind: str) -> None:
        job = self.pending.pop(kind)
        if kind == "sleep" and self.sleep_recovery == "dry-run":
            # a full night (anchors, training, evaluation) takes minutes on 2 cores: the CI form
            # checks that the lock is free and the next sleep gets as far as its dataset
            job = {**job, "kind": "sleep-dry-run", "argv": ["sleep", "--dry-run"]}  # own kill window
        before = self.snapshot()
        try:
            rc, out, err = self.run_to_end(job)
        except subprocess.TimeoutExpired as e:
            self.fail(f"{kind}: the run after the kill hung for {e.timeout:.0f}s (killed)")
            return
        if rc != 0:
            self.fail(f"{kind}: the run after the kill exited {rc}: {err.strip()[-300:]}")
            return
        self.stats["recoveries"] += 1
        self.log(f"reran {kind}: ok (slowest run {self.durations[job['kind']]:.1f}s)")
        self.check(before, job, out)
        if job.get("ids"):
            c = sqlite3.connect(str(self.home / "ledger.db"))
            n = c.execute(f"select count(*) from memories where id in ({','.join('?' * len(job['ids']))})",
                          job["ids"]).fetchone()[0]
            c.close()
            if n != len(job["ids"]):
                self.fail(f"import: after the rerun {n} of {len(job['ids'])} records present")

    def warm_up(self) -> None:
        """One whole night before the kills, so a promoted adapter exists and every check after a
        kill (sleep's above all) proves it still loads. Not a kill kind: its duration does not
        set a kill window. A rejected candidate is promoted by hand (the gate is not under test)."""
        for job in ({"kind": "warm-up", "argv": ["memory", "add", "My dog's name is Biscuit."], "stdin": None},
                    {"kind": "warm-up", "argv": ["sleep", "--steps", "30"], "stdin": None}):
            rc, out, err = self.run_to_end({**job, "kind": "sleep" if job["argv"][0] == "sleep" else "add"})
            if rc != 0:
                self.fail(f"warm-up {' '.join(job['argv'][:2])} exited {rc}: {err.strip()[-300:]}")
                return
        self.durations.clear()  # kill windows come from the runs under test, not the warm-up
        c = sqlite3.connect(str(self.home / "ledger.db"))
        try:
            promoted = c.execute("select id from adapters where status = 'promoted'").fetchone()
            newest = c.execute("select id from adapters order by created desc limit 1").fetchone()
        finally:
            c.close()
        if promoted is None and newest is not None:
            rc, _, err = self.run_to_end({"kind": "warm-up", "argv": ["adapters", "promote", newest[0]],
                                          "stdin": None})
            if rc != 0:
                self.fail(f"warm-up: promoting {newest[0]} exited {rc}: {err.strip()[-300:]}")
                return
        self.stats["warm_up_adapter"] = 1
        self.log(f"warm-up: adapter {(promoted or newest or ['?'])[0]} promoted before the kills")

    def reindex(self) -> dict:
        rc, out, err = self.run_to_end({"kind": "reindex", "argv": ["memory", "reindex", "--json"],
                                        "stdin": None})
        if rc != 0:
            self.fail(f"reindex exited {rc}: {err.strip()[-300:]}")
            return {}
        rc, out, err = self.run_to_end({"kind": "stats", "argv": ["memory", "stats", "--json"],
                                        "stdin": None})
        s = json.loads(out)
        active = sum(n for k, n in s["by_kind_status"].items() if k.endswith("/active"))
        if not (s["vector_rows"] == s["fts_rows"] == active):
            self.fail(f"after reindex: vectors {s['vector_rows']}, fts {s['fts_rows']}, "
                      f"active memories {active}")
        return {"active": active, "vector_rows": s["vector_rows"], "fts_rows": s["fts_rows"]}


def run(kills: int = 20, budget_s: float | None = None, seed: int = 0, kinds=KINDS,
        recover: str = "every", home: Path | None = None, log=None,
        sleep_recovery: str = "full", warm_up: bool = False, min_kills: int = 0) -> dict:
    """Kill up to `kills` commands; `budget_s` stops starting new ones, but not before
    `min_kills` kills have happened (a fast machine can finish every command before its kill)."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="reverie-crash-") as tmp:
        home = Path(home) if home else Path(tmp) / "home"
        work = Path(tmp) / "work"
        work.mkdir()
        h = Harness(home, work, seed, log, sleep_recovery)
        i = 0
        if warm_up:
            h.warm_up()
        try:
            while h.stats["kills"] < kills and (budget_s is None or time.time() - t0 < budget_s
                                                or h.stats["kills"] < min_kills):
                kind = kinds[i % len(kinds)]
                i += 1
                h.kill_one(kind)
                if recover == "every" and kind in h.pending:
                    h.recover(kind)
                if i > 4 * kills:
                    break  # commands keep finishing before the kill: stop rather than spin
        except KeyboardInterrupt:
            # Ctrl-C ends the kill phase early; the reruns, reindex and summary still happen
            h.log("interrupted: finishing reruns and the final checks")
        for kind in list(h.pending):
            h.recover(kind)
        index = h.reindex()
        snap = h.snapshot()
        return {"kills": h.stats["kills"],
                "kills_by_kind": {k: h.stats[f"kills_{k}"] for k in kinds},
                "recoveries": h.stats["recoveries"], "rows_lost": h.stats["rows_lost"],
                "duplicates": h.stats["duplicates"], "partial_imports": h.stats["partial_imports"],
                "finished_before_kill": h.stats["finished_before_kill"],
                "turns_without_memory": h.stats["turns_without_memory"],
                "adapter_checks": h.stats["adapter_checks"], "warm_up": warm_up,
                "index": index,
                "rows": {k: len(v) for k, v in snap.items()},
                "durations_s": {k: round(v, 1) for k, v in h.durations.items()},
                "failures": h.failures, "ok": not h.failures, "seed": seed, "recover": recover,
                "sleep_recovery": sleep_recovery,
                "wall_s": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--budget-s", type=float, default=None, help="Stop starting kills after this long.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"Comma list of {', '.join(KINDS)}.")
    ap.add_argument("--recover", choices=("every", "last"), default="every",
                    help="Rerun each killed command every time, or only its last kill.")
    ap.add_argument("--sleep-recovery", choices=("full", "dry-run"), default="full",
                    help="After a killed sleep run a whole sleep (minutes) or only --dry-run.")
    ap.add_argument("--no-warm-up", action="store_true",
                    help="Skip the whole night (and adapter promotion) that runs before the kills.")
    ap.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    a = ap.parse_args(argv)
    kinds = tuple(k for k in a.kinds.split(",") if k)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        ap.error(f"unknown kind(s) {bad}; use {', '.join(KINDS)}")
    res = run(a.kills, a.budget_s, a.seed, kinds, a.recover,
              log=lambda m: print(m, file=sys.stderr, flush=True), sleep_recovery=a.sleep_recovery,
              warm_up=not a.no_warm_up)
    print(json.dumps(res, indent=2) if a.json else
          f"kills {res['kills']} · recoveries {res['recoveries']} · rows lost {res['rows_lost']} · "
          f"duplicates {res['duplicates']} · failures {len(res['failures'])}")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
