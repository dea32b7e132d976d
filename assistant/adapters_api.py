"""Feedback and adapter registry operations for the CLI."""
from __future__ import annotations

import shutil
from pathlib import Path


def _ledger(home: Path):
    """The ledger, opened for one call: callers use it as `with _ledger(home) as ledger:` so it
    is closed when the call is done (the rows returned are plain data)."""
    from memory.ledger import Ledger

    return Ledger(home)


def feedback_list(home: Path, kind: str | None = None, limit: int = 50):
    from memory.feedback import FeedbackLog

    with _ledger(home) as ledger:
        return FeedbackLog(ledger).list(kind, limit)


def feedback_get(home: Path, fid: str):
    from memory.feedback import FeedbackLog

    with _ledger(home) as ledger:
        return FeedbackLog(ledger).get(fid)


def feedback_remove(home: Path, fid: str):
    from memory.feedback import FeedbackLog

    with _ledger(home) as ledger:
        return FeedbackLog(ledger).remove(fid)


def adapters_list(home: Path):
    from memory.adapters_ledger import AdapterLedger

    with _ledger(home) as ledger:
        return AdapterLedger(ledger).list()


def adapter_get(home: Path, aid: str):
    from memory.adapters_ledger import AdapterLedger

    with _ledger(home) as ledger:
        return AdapterLedger(ledger).get(aid)


def adapter_promote(home: Path, aid: str):
    from memory.adapters_ledger import AdapterLedger

    with _ledger(home) as ledger:
        led = AdapterLedger(ledger)
        row = led.get(aid)
        check_adapter_files(home, row)
        return led.promote(row.id)


def check_adapter_files(home: Path, row) -> None:
    """Refuse an adapter whose files are damaged or that belongs to another base model: the
    directory validates, the GGUF LoRA (what chat loads) is complete and holds the same tensors,
    the base model registered under row.model is still the file it was trained on, and the GGUF
    fits that model (quant.gguf_lora.check_fits, the check the runtimes and merge make too)."""
    from lora import load_adapter
    from quant.errors import QuantError
    from quant.gguf_lora import base_shapes, base_tensor_name, check_fits, read_gguf_lora
    from quant.registry import Registry, sha256_file

    from .errors import ReverieError
    from common.files import cached_sha256

    gguf = Path(row.gguf) if row.gguf else None
    if gguf is None or not gguf.is_file():
        raise ReverieError(f"{row.id}'s GGUF file {row.gguf or '(none)'} is missing; it cannot be "
                           "promoted. Run `reverie sleep --force` to train a new adapter.")
    model = Registry(home).get(row.model)
    current = cached_sha256(Path(home), Path(model.path), sha256_file) if Path(model.path).is_file() else ""
    if row.base_sha256 and current and row.base_sha256 != current:
        raise ReverieError(f"{row.id} was trained for another base model (sha256 {row.base_sha256[:12]}…) "
                           f"than the current {model.name} ({current[:12]}…); run `reverie sleep --force` "
                           "to train one for this model.")
    ad = load_adapter(Path(row.path), base_model_sha256=row.base_sha256 or None,
                      load_weights=False)  # validates, lists every mismatch
    s = ad.spec
    try:
        lora = read_gguf_lora(gguf)
        # the GGUF holds the directory's tensors: the same pairs, each fitting the trained shapes
        want = {base_tensor_name(layer, mod) for layer in range(s.n_layers) for mod in s.targets}
        missing = sorted(want - {b + ".weight" for b in lora.tensors})
        if missing:
            raise QuantError(f"it lacks {len(missing)} LoRA pairs (e.g. {missing[0]}).")
        trained = {base_tensor_name(layer, mod): tuple(s.base_dims[mod])
                   for layer in range(s.n_layers) for mod in s.targets}
        check_fits(lora, trained, gguf, "its adapter directory")
        if {a.shape[0] for a, _ in lora.tensors.values()} != {s.rank}:
            raise QuantError(f"its rank is not the directory's {s.rank}.")
    except QuantError as e:
        raise ReverieError(f"{row.id}'s GGUF file {gguf} does not match its adapter: {e} "
                           "Re-export it or run `reverie sleep --force`.") from None
    if not Path(model.path).is_file():
        return
    shapes = base_shapes(model.path)
    n_layers = len({n.split(".")[1] for n in shapes if n.startswith("blk.")})
    try:
        check_fits(lora, shapes, gguf, model.name, arch=model.arch or None)
        if n_layers != s.n_layers:
            raise QuantError(f"it has {s.n_layers} layers, {model.name} has {n_layers}.")
    except QuantError as e:
        raise ReverieError(f"{row.id} is for another base model: {e} Train one for {model.name} "
                           "with `reverie sleep --force`.") from None


def adapter_rollback(home: Path, model: str | None = None):
    """Promote the parent of the current adapter, or go back to the bare base model."""
    from memory.adapters_ledger import AdapterLedger
    from quant.registry import Registry

    from .errors import ReverieError

    name = Registry(home).get(model).name
    with _ledger(home) as ledger:
        led = AdapterLedger(ledger)
        cur = led.promoted(name)
        if cur is None:
            raise ReverieError(f"no promoted adapter for {name}; nothing to roll back.")
        if cur.parent:
            return led.promote(cur.parent)
        led.demote_all(name)
    return None


def adapter_diff(home: Path, a: str, b: str) -> dict:
    import json

    ra, rb = adapter_get(home, a), adapter_get(home, b)
    fa, fb = set(json.loads(ra.fact_ids)), set(json.loads(rb.fact_ids))
    ma, mb = json.loads(ra.metrics or "{}"), json.loads(rb.metrics or "{}")
    keys = ["personal_adapted", "general_adapted", "ppl_ratio", "kl_drift", "bwt"]
    return {"a": ra.id, "b": rb.id, "facts_only_in_a": sorted(fa - fb), "facts_only_in_b": sorted(fb - fa),
            "metrics": {k: [ma.get(k), mb.get(k)] for k in keys}}


def adapter_remove(home: Path, aid: str):
    from memory.adapters_ledger import AdapterLedger

    with _ledger(home) as ledger:
        row = AdapterLedger(ledger).remove(aid)
    if row.path and Path(row.path).is_dir():
        shutil.rmtree(row.path, ignore_errors=True)
    return row
