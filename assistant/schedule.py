"""The nightly timer: a crontab line on Linux, a launchd agent on macOS. Logs go to the data dir."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import ReverieError

MARK = "# reverie-sleep"
LABEL = "dev.reverie.sleep"


def _parse(at: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", at.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ReverieError(f"bad time {at!r}; use HH:MM in 24-hour local time, e.g. --at 03:00")
    return int(m.group(1)), int(m.group(2))


def _command(home: Path) -> str:
    exe = shutil.which("reverie") or f"{sys.executable} -m cli.main"
    return f"REVERIE_HOME={home} {exe} sleep >> {home}/sleep.log 2>&1"


def _crontab() -> str:
    if not shutil.which("crontab"):
        raise ReverieError("crontab is not installed; install cron (e.g. apt-get install cron) "
                           "or run `reverie sleep` from your own timer.")
    r = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def _plist_path() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def install(home: Path, at: str = "03:00", dry_run: bool = False) -> str:
    h, m = _parse(at)
    cmd = _command(home)
    if sys.platform == "darwin":
        plist = (f'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
                 f"<key>Label</key><string>{LABEL}</string>"
                 f"<key>ProgramArguments</key><array><string>/bin/sh</string><string>-c</string>"
                 f"<string>{cmd}</string></array>"
                 f"<key>StartCalendarInterval</key><dict><key>Hour</key><integer>{h}</integer>"
                 f"<key>Minute</key><integer>{m}</integer></dict></dict></plist>\n")
        if dry_run:
            return plist
        _plist_path().parent.mkdir(parents=True, exist_ok=True)
        _plist_path().write_text(plist)
        subprocess.run(["launchctl", "load", str(_plist_path())], check=False)
        return f"installed launchd agent {_plist_path()} at {at}"
    line = f"{m} {h} * * * {cmd} {MARK}"
    if dry_run:
        return line
    current = [l for l in _crontab().splitlines() if MARK not in l]
    new = "\n".join(current + [line]) + "\n"
    r = subprocess.run(["crontab", "-"], input=new, text=True, capture_output=True)
    if r.returncode != 0:
        raise ReverieError(f"crontab refused the entry: {r.stderr.strip()}")
    return f"installed: reverie sleep runs daily at {at} (crontab), log {home}/sleep.log"


def status(home: Path) -> dict:
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger

    runs = AdapterLedger(Ledger(home)).runs()
    if sys.platform == "darwin":
        return {"installed": _plist_path().exists(), "method": "launchd", "at": None, "runs": runs}
    try:
        lines = [l for l in _crontab().splitlines() if MARK in l]
    except ReverieError:
        lines = []
    at = None
    if lines:
        mm, hh = lines[0].split()[:2]
        at = f"{int(hh):02d}:{int(mm):02d}"
    return {"installed": bool(lines), "method": "cron", "at": at, "runs": runs}


def remove(home: Path) -> str:
    if sys.platform == "darwin":
        if _plist_path().exists():
            subprocess.run(["launchctl", "unload", str(_plist_path())], check=False)
            _plist_path().unlink()
            return "removed launchd agent"
        return "no launchd agent installed"
    current = _crontab().splitlines()
    kept = [l for l in current if MARK not in l]
    if len(kept) == len(current):
        return "no reverie entry in crontab"
    subprocess.run(["crontab", "-"], input="\n".join(kept) + ("\n" if kept else ""), text=True, check=True)
    return "removed the reverie crontab entry"
