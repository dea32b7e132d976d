"""What chat serves for a promoted adapter, decided by measurement (issue 16).

The gate first measures a candidate as llama.cpp's runtime LoRA over the base. A runtime LoRA
costs decode speed (extra matmuls, mmap off), while the adapter baked into the base decodes like
a plain model of the merged type. Requantizing moves the weights again, so the merged file is
gated itself with the same checks; if it passes, chat, `ask`, the API and the eval's adapter arms
serve it, otherwise the runtime LoRA the gate measured. The type is the `merge_on_promote`
setting (default Q8_0): at the default model's own Q4_1 the merged weights snap back to the
base's grid and the adapter's effect is gone (personal recall 0.833 as a runtime LoRA, 0.000
merged at Q4_1, 0.778 at Q8_0 on 18 held-back probes; issue 16's closing note). The choice is the adapter
row's `served` column, so a rollback or a forget switches the served form together with the
promoted row, and the merged file lives in the version's own directory and goes with it.

Owns: the merged file's name and making it, and `Served` — the (model file, runtime LoRA) pair a
runtime is opened with. Knows nothing of chat or the gate's checks (sleep runs them).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

MERGED_NAME = "served.gguf"  # in the version's directory, next to adapter.gguf


@dataclass(frozen=True)
class Served:
    """The form of an adapter version a runtime is opened with: a model file, and a runtime LoRA
    on top of it (None when the adapter is baked into the file)."""
    model_path: str
    adapter: str | None
    adapter_id: str = ""

    @property
    def merged(self) -> bool:
        return self.adapter is None

    @property
    def file(self) -> str:
        """The file that carries the adapter: its GGUF LoRA, or the merged model."""
        return self.adapter or self.model_path

    def model_info(self, base):
        """The registry's ModelInfo of the base, pointing at the file this form loads (the name
        stays the base's: promotions, conversations and caches are keyed by it)."""
        return base if self.model_path == base.path else replace(base, path=self.model_path)

    def to_dict(self) -> dict:
        return {"form": "merged" if self.merged else "runtime_lora", "model": self.model_path,
                "adapter": self.adapter, "adapter_id": self.adapter_id}


def runtime_lora(base_path: str, gguf: str, adapter_id: str = "") -> Served:
    return Served(str(base_path), str(gguf), adapter_id)


def served_form(row, base_path: str) -> Served | None:
    """What to serve for an adapter row (None: nothing usable — no row, or its files are gone).
    A merged file that went missing falls back to the runtime LoRA the gate also passed."""
    if row is None:
        return None
    merged = getattr(row, "served", "") or ""
    if merged and Path(merged).is_file():
        return Served(merged, None, row.id)
    if row.gguf and Path(row.gguf).exists():
        return runtime_lora(base_path, row.gguf, row.id)
    return None


def make_merged(base_path: str, gguf: str, out_dir: Path, qtype: str,
                log: Callable[[str], None]) -> Served:
    """Bake the adapter into the base at qtype ("same": the base's own type) as
    out_dir/served.gguf (written atomically by quant.merge; the caller deletes it if the gate
    rejects it)."""
    from quant.merge import merge

    out = Path(out_dir) / MERGED_NAME
    r = merge(base_path, gguf, out, qtype, progress=log)
    log(f"merged into the base at {r.type} in {r.seconds:.0f} s ({r.size_bytes / 1e6:.0f} MB)")
    return Served(str(out), None, Path(out_dir).name)


KEEP_MERGED = 2  # the served version and the one a rollback goes back to


def prune_merged(adapters, model: str, log: Callable[[str], None], keep: int = KEEP_MERGED) -> list[str]:
    """Each merged file is a whole model (145 MB for the default one): keep those of the promoted
    version and the most recently promoted others, `keep` in all; an older version serves its
    runtime LoRA again if it is ever promoted (the gate passed that form first). Returns the ids
    whose merged file went."""
    rows = [r for r in adapters.list(model) if r.served and r.status in ("promoted", "retired")]
    rows.sort(key=lambda r: (r.status == "promoted", r.promoted or 0.0), reverse=True)
    gone = []
    for r in rows[keep:]:
        Path(r.served).unlink(missing_ok=True)
        adapters.set_status(r.id, r.status, served="")
        gone.append(r.id)
    if gone:
        log(f"removed the merged files of {', '.join(gone)} (older versions serve their runtime LoRA)")
    return gone
