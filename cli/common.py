"""CLI plumbing shared by every command: domain errors → message + exit 1, JSON output, home."""
from __future__ import annotations

import functools
import json
import sys

import typer


def domain_errors() -> tuple[type[BaseException], ...]:
    """Every library's user-facing exception type (imported lazily: some live in heavy packages)."""
    from assistant.errors import ReverieError

    errs: list[type[BaseException]] = [ReverieError]
    for mod, names in (("quant.errors", ["QuantError"]), ("memory.ledger", ["LedgerError"]),
                       ("memory.errors", ["MemoryStoreError"]), ("lora.errors", ["LoraError"])):
        try:
            m = __import__(mod, fromlist=names)
        except ImportError:
            continue
        errs += [getattr(m, n) for n in names if hasattr(m, n)]
    return tuple(errs)


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
            if isinstance(e, domain_errors()):
                fail(str(e))
            full = disk_full(e)
            if full:
                fail(f"{full}. Nothing was half-written: the unfinished change was rolled back. "
                     "Free some space and run the command again.")
            raise

    return wrapper


def emit_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def home():
    from assistant.config import data_dir

    return data_dir()


def train_progress(r) -> None:
    """One updating stderr line per training step: step, loss, tokens/s, peak memory, skips."""
    if r.event not in ("step", "skip"):
        return
    end = "\n" if r.step >= r.total else ""
    sys.stderr.write(f"\r  step {r.step}/{r.total}  loss {r.loss:.3f}  {r.tokens_per_s:.0f} tok/s"
                     f"  peak {r.peak_memory_mb:.0f} MB  skipped {r.skipped}   {end}")
    sys.stderr.flush()
