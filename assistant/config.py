"""Where reverie keeps its data and how its settings are resolved.

Owns: the data directory (platformdirs default, REVERIE_HOME overrides, created 0700) and the
typed settings file. Knows nothing about models, memory or training.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import ReverieError

BACKENDS = ("auto", "llama.cpp", "mlx")


def data_dir(create: bool = True) -> Path:
    """The data directory: $REVERIE_HOME or the platform's user data dir, private to the user."""
    env = os.environ.get("REVERIE_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("reverie", appauthor=False))
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path, 0o700)
        except OSError as e:
            raise ReverieError(
                f"cannot use data directory {path}: {e.strerror}. "
                "Set REVERIE_HOME to a writable directory."
            ) from e
    return path


def dir_permissions(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@dataclass
class Settings:
    """User settings (data_dir/settings.json). CLI flags override these, these override defaults."""

    backend: str = "auto"
    threads: int = 0  # 0: all physical cores the runtime sees
    n_ctx: int = 2048
    max_tokens: int = 256
    # Phrasing checked on the 135M default model: shorter or generic prompts made it answer
    # "What is the capital of France?" in French.
    system_prompt: str = "You are reverie, a helpful AI assistant running privately on the user's device."
    memory: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ReverieError(
                f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}"
            )
        if self.n_ctx < 256:
            raise ReverieError(f"n_ctx must be at least 256, got {self.n_ctx}")
        if self.max_tokens < 1:
            raise ReverieError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.threads < 0:
            raise ReverieError(f"threads must be 0 (auto) or positive, got {self.threads}")

    @classmethod
    def load(cls, home: Path | None = None, **overrides) -> "Settings":
        home = home or data_dir()
        path = home / "settings.json"
        values: dict = {}
        if path.exists():
            try:
                values = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ReverieError(f"{path} is not valid JSON ({e}); fix or delete it.") from e
            known = {f.name for f in fields(cls)}
            unknown = set(values) - known
            if unknown:
                raise ReverieError(
                    f"{path} has unknown settings: {', '.join(sorted(unknown))}; "
                    f"known: {', '.join(sorted(known))}"
                )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def save(self, home: Path | None = None) -> Path:
        from .files import atomic_write_text

        home = home or data_dir()
        path = home / "settings.json"
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path
