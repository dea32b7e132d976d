"""CLI plumbing shared by every command: domain errors → message + exit 1, JSON output, the data
dir (held while a command runs), `-` for stdin/stdout, and text made safe and short for a terminal."""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import sys
import unicodedata
from pathlib import Path

import typer


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def disk_full(e: BaseException) -> str | None:
    """What to tell the user when `e` means the disk (or quota) is full; None if it does not."""
    import errno
    import sqlite3

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {e.filename}" if e.filename else ""
        return f"the disk is full{where}"
    if isinstance(e, sqlite3.OperationalError) and "disk is full" in str(e):
        return "the disk holding the ledger is full"
    return None


def handle_errors(fn):
    """Turn a library's domain error into `error: <message>` on stderr and exit code 1; a full
    disk likewise (every write is a rolled-back transaction or a temp file, so nothing is half
    written)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            typer.echo("", err=True)
            raise typer.Exit(130)
        except Exception as e:  # noqa: BLE001 - filtered right below
            gone = data_dir_gone()
            if gone:  # whatever broke, the cause is that the data dir went away under us
                fail(wiped_message(gone))
            from assistant.errors import domain_errors  # the one list, the API server's too

            if isinstance(e, domain_errors()):
                fail(str(e))
            full = disk_full(e)
            if full:
                fail(f"{full}. Nothing was half-written: the unfinished change was rolled back. "
                     "Free some space and run the command again.")
            if isinstance(e, IsADirectoryError):
                fail(f"{e.filename} is a directory; give a file name inside it.")
            raise
        finally:
            release_data_dir()

    return wrapper


def emit_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


_HOLDS: list = []


def home(hold: bool = True) -> Path:
    """The data dir. hold=True keeps a shared lock on it until the command ends, so `reverie wipe`
    refuses while this process uses it (wipe itself passes hold=False)."""
    from assistant.config import data_dir

    path = data_dir()
    if hold and not any(h.home == path for h in _HOLDS):
        from assistant.privacy import DataDirHold

        _HOLDS.append(DataDirHold(path))
    return path


def data_dir_gone() -> Path | None:
    """The held data dir if it was deleted (or replaced) since this command started."""
    return next((h.home for h in _HOLDS if h.gone()), None)


def wiped_message(path: Path) -> str:
    return (f"the data dir {path} was deleted while this command ran (`reverie wipe`, or removed by "
            "hand); nothing more was saved. Run the command again to start with an empty one.")


def release_data_dir() -> None:
    while _HOLDS:
        _HOLDS.pop().release()


# --- `-` means stdin / stdout ------------------------------------------------------------------
def is_std(path) -> bool:
    return str(path) == "-"


def check_output_file(path: Path, flag: str = "the path") -> Path:
    """A file we may create: not a directory, in a directory that exists (never made for you)."""
    path = Path(path).expanduser()
    if path.is_dir():
        fail(f"{path} is a directory; give a file name inside it, e.g. {path / 'memories.jsonl'}.")
    if not path.parent.is_dir():
        fail(f"directory {path.parent} does not exist; create it first or choose another {flag}.")
    return path


def piped_stdin() -> str | None:
    """What was piped or redirected into stdin, or None when stdin is a terminal (or /dev/null)."""
    import stat

    stream = sys.stdin
    if stream is None or stream.isatty():
        return None
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except Exception:  # noqa: BLE001 - a test runner's in-memory stdin has no descriptor
        return stream.read()
    if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
        return stream.read()
    return None


# --- text for a terminal -----------------------------------------------------------------------
def when(ts: float | None) -> str:
    """A timestamp as local date and time, minutes precision ('-' when missing)."""
    if ts is None or ts == "":
        return "-"
    try:
        return _dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ts)


def safe(text, keep_newlines: bool = False) -> str:
    """Control characters shown as escapes (an ANSI sequence in a memory must not repaint the
    terminal); newlines and tabs kept only when asked."""
    out = []
    for ch in str(text if text is not None else ""):
        if keep_newlines and ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in "\u200d":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def short(text, width: int = 80, full: bool = False) -> str:
    """One line, control characters escaped, cut to `width` with … (full=True: never cut)."""
    one = " ".join(safe(text, keep_newlines=True).split())
    if full or len(one) <= width:
        return one
    return one[:max(1, width - 1)] + "…"


def num(v, digits: int = 3) -> str:
    """A number rounded for people; None as '—'."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return safe(v)


def table(rows: list[list], headers: list[str] | None = None, right: set[int] = frozenset()) -> str:
    """Columns padded to their widest cell; `right` holds the indexes of numeric columns."""
    cells = [[str(c) for c in r] for r in ([headers] if headers else []) + rows]
    if not cells:
        return ""
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(max(map(len, cells)))]
    lines = []
    for r in cells:
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(parts).rstrip())
    if headers:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def train_progress(r) -> None:
    """One updating stderr line per training step: step, loss, tokens/s, peak memory, skips."""
    if r.event not in ("step", "skip"):
        return
    end = "\n" if r.step >= r.total else ""
    sys.stderr.write(f"\r  step {r.step}/{r.total}  loss {r.loss:.3f}  {r.tokens_per_s:.0f} tok/s"
                     f"  peak {r.peak_memory_mb:.0f} MB  skipped {r.skipped}   {end}")
    sys.stderr.flush()
