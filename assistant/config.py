"""Where reverie keeps its data and how its settings are resolved.

Owns: the data directory (platformdirs default, REVERIE_HOME overrides, created 0700) and the
typed settings file, including how the chat decodes (`Settings.generation_config`). Knows nothing
about models, memory or training.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, fields
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
    # How the chat decodes: greedy (so runs stay comparable), with a repetition penalty over the
    # last 64 generated tokens and a stop when the answer repeats itself. Greedy with no penalty
    # loops a sentence until max_tokens on the default model (bench/sampling_bench.py measures it).
    # 1.2 measured best of 1.0-1.3 there: 1.1 repeats more, 1.3 breaks numbered lists more often.
    repeat_penalty: float = 1.2
    loop_stop: bool = True
    # Phrasing checked on the 135M default model: shorter or generic prompts made it answer
    # "What is the capital of France?" in French.
    system_prompt: str = "You are reverie, a helpful AI assistant running privately on the user's device."
    memory: bool = True
    # When the nightly gate passes an adapter as a runtime LoRA, sleep also bakes it into its base
    # at this type and gates that file; chat serves it if it passes (assistant.served). Q8_0: the
    # base's own Q4_1 erases the adapter (see assistant/served.py). `sleep --merge` overrides it;
    # "" or "none" always serves the runtime LoRA.
    merge_on_promote: str = "Q8_0"

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
        if (isinstance(self.repeat_penalty, bool) or not isinstance(self.repeat_penalty, (int, float))
                or not 1.0 <= self.repeat_penalty <= 2.0):
            raise ReverieError(f"repeat_penalty must be a number from 1.0 (none) to 2.0, got "
                               f"{self.repeat_penalty!r}; 1.1-1.3 keeps answers from looping")
        if not isinstance(self.loop_stop, bool):
            raise ReverieError(f"loop_stop must be true or false, got {self.loop_stop!r}")
        if not isinstance(self.merge_on_promote, str):
            raise ReverieError(f"merge_on_promote must be a quantization type such as \"Q8_0\", or "
                               f"\"none\", got {self.merge_on_promote!r}")

    def generation_config(self):
        """The chat's GenerationConfig: greedy, these settings' length, penalty and loop stop."""
        from quant.runtime import GenerationConfig

        return GenerationConfig(max_tokens=self.max_tokens, temperature=0.0, top_k=1,
                                repeat_penalty=float(self.repeat_penalty), loop_stop=self.loop_stop)

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
            values = _upgrade(values)
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
        """Write every setting (a file from before a setting existed is upgraded on save)."""
        from common.files import atomic_write_text

        home = home or data_dir()
        path = home / "settings.json"
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path


def _upgrade(values: dict) -> dict:
    """settings.json as older versions wrote it, in today's terms. merge_on_promote used to live
    in an untyped "extra" dict (nothing else in it was ever read): lift it out, drop the rest."""
    if not isinstance(values, dict) or "extra" not in values:
        return values
    values = dict(values)
    extra = values.pop("extra")
    if isinstance(extra, dict) and "merge_on_promote" in extra and "merge_on_promote" not in values:
        values["merge_on_promote"] = str(extra["merge_on_promote"] or "")
    return values
