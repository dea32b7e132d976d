"""Shared GGUF plumbing for merge/quantize/convert: read, dequantize, rewrite as F32/F16.

Owns: opening a GGUF with clear errors, reading metadata values, dequantizing any tensor type the
`gguf` package knows (K-quants included) to float32 numpy in numpy (row-major) shape, writing a
new unquantized GGUF that keeps every metadata key (tokenizer arrays, chat template) and the tensor
order, and the temp-name-then-rename discipline every writer here follows.
Does not know about adapters, llama.cpp or the registry.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from common.files import atomic_path

from .errors import QuantError

Progress = Callable[[str], None]

# general.file_type values written for the unquantized outputs (llama_ftype numbering).
FTYPE_ALL_F32 = 0
FTYPE_MOSTLY_F16 = 1


def _noop(_: str) -> None:
    pass


def open_gguf(path: Path | str):
    """A gguf.GGUFReader over path (memory-mapped), or a QuantError saying what is wrong."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.exists():
        raise QuantError(f"{path} does not exist; check the path.")
    if not path.is_file():
        raise QuantError(f"{path} is not a file; pass a .gguf file.")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise QuantError(f"{path} is not a GGUF file (bad magic); pass a .gguf file.")
    try:
        return GGUFReader(str(path))
    except Exception as e:  # gguf raises assorted errors on damaged files
        raise QuantError(f"cannot read {path} as GGUF: {e}; the file may be truncated.") from e


def field_value(reader, key: str, default=None):
    """A metadata value as a Python str/int/float/bool/list, or default when absent. The one
    key/value decoder (the registry's model summary and the LoRA reader use it too); a string
    that is not valid UTF-8 (a damaged chat template) decodes with replacement characters."""
    f = reader.fields.get(key)
    if f is None:
        return default
    from gguf import GGUFValueType

    if f.types == [GGUFValueType.STRING]:
        return bytes(f.parts[f.data[0]]).decode("utf-8", "replace")
    return f.contents()


def arch_of(reader) -> str:
    return field_value(reader, "general.architecture", "") or ""


def file_type_name(reader) -> str:
    """general.file_type as a llama.cpp type name ('Q4_1', 'Q4_K_M', 'F16', ...)."""
    from gguf import LlamaFileType

    ft = field_value(reader, "general.file_type")
    if ft is None:
        return ""
    try:
        return LlamaFileType(int(ft)).name.replace("MOSTLY_", "").replace("ALL_", "")
    except ValueError:
        return str(ft)


def tensor_shape(t) -> tuple[int, ...]:
    """numpy (row-major) shape of a reader tensor: ggml's ne reversed."""
    return tuple(int(x) for x in reversed([int(n) for n in t.shape]))


def dequantize(t) -> np.ndarray:
    """One reader tensor as float32 in numpy shape (rows = ggml ne[1], columns = ne[0])."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gg_dequantize

    shape = tensor_shape(t)
    if t.tensor_type == GGMLQuantizationType.F32:
        out = np.asarray(t.data, dtype=np.float32)
    elif t.tensor_type == GGMLQuantizationType.F16:
        out = np.asarray(t.data).astype(np.float32)
    else:
        try:
            out = gg_dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise QuantError(
                f"tensor {t.name} has type {t.tensor_type.name}, which the gguf package cannot "
                "dequantize; convert the model from an F16/F32 GGUF instead.") from e
        out = out.astype(np.float32, copy=False)
    return out.reshape(shape)


def iter_dequantized(reader) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32 array) for every tensor, in file order, one at a time."""
    for t in reader.tensors:
        yield t.name, dequantize(t)


@contextlib.contextmanager
def atomic_target(target: Path | str, suffix: str = ".gguf") -> Iterator[Path]:
    """common.files.atomic_path (temp beside target, renamed only if the block succeeds), with a
    directory that cannot take the file reported as a QuantError before any work starts."""
    target = Path(target)
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_path(target, suffix=suffix + ".tmp"))
        except OSError as e:
            raise QuantError(f"cannot write to {target.parent}: {e.strerror or e}; choose a "
                             "writable --out path.") from e
        yield tmp


def check_writable(target: Path | str) -> None:
    """Fail before hours of work if target's directory cannot take a file."""
    with atomic_target(Path(target).with_name(Path(target).name + ".probe")) as tmp:
        tmp.write_bytes(b"")
    Path(target).with_name(Path(target).name + ".probe").unlink(missing_ok=True)


def copy_metadata(reader, writer, file_type: int | None = None, skip: tuple[str, ...] = ()) -> None:
    """Every KV of reader into writer (strings as raw bytes, arrays with their element type)."""
    from gguf import GGUFValueType

    for f in reader.fields.values():
        name = f.name
        # GGUF.* are the reader's virtual header fields; the writer adds the architecture itself
        if name.startswith("GGUF.") or name == "general.architecture" or name in skip:
            continue
        if name == "general.alignment":
            writer.data_alignment = int(f.contents())
        if name == "general.file_type" and file_type is not None:
            writer.add_key_value(name, int(file_type), GGUFValueType.UINT32)
            continue
        vtype = f.types[0]
        if vtype == GGUFValueType.ARRAY:
            sub = f.types[-1]
            if sub == GGUFValueType.STRING:
                # raw bytes: a vocabulary may hold pieces that are not valid UTF-8 on their own
                val = [bytes(f.parts[i]) for i in f.data]
            else:
                val = f.contents()
            writer.add_key_value(name, val, vtype, sub_type=sub)
        elif vtype == GGUFValueType.STRING:
            writer.add_key_value(name, bytes(f.parts[f.data[0]]), vtype)
        else:
            writer.add_key_value(name, f.contents(), vtype)
    if file_type is not None and "general.file_type" not in reader.fields:
        writer.add_key_value("general.file_type", int(file_type), GGUFValueType.UINT32)


def write_unquantized(reader, out_path: Path | str, out_type: str = "F16",
                      transform: Callable[[str, np.ndarray], np.ndarray] | None = None,
                      extra_kv: dict[str, str] | None = None,
                      progress: Progress = _noop) -> Path:
    """Write reader's model as an F32 or F16 GGUF at out_path (atomically); return out_path.

    transform(name, weights) may change a tensor's values (not its shape) on the way through:
    merge uses it to add LoRA deltas. 1-D tensors (norms) always stay F32, as llama.cpp expects.
    """
    from gguf import GGUFValueType, GGUFWriter

    out_type = out_type.upper()
    if out_type not in ("F16", "F32"):
        raise QuantError(f"unquantized output type must be F16 or F32, got {out_type!r}.")
    arch = arch_of(reader)
    if not arch:
        raise QuantError("the source GGUF has no general.architecture; it is not a model file.")
    out_path = Path(out_path)
    big = np.float16 if out_type == "F16" else np.float32

    def out_dtype(shape) -> type:
        return big if len(shape) >= 2 else np.float32

    with atomic_target(out_path) as tmp:
        writer = GGUFWriter(str(tmp), arch)
        try:
            copy_metadata(reader, writer,
                          file_type=FTYPE_MOSTLY_F16 if out_type == "F16" else FTYPE_ALL_F32)
            for k, v in (extra_kv or {}).items():
                writer.add_key_value(k, v, GGUFValueType.STRING)
            for t in reader.tensors:
                shape = tensor_shape(t)
                dt = np.dtype(out_dtype(shape))
                nbytes = int(np.prod(shape)) * dt.itemsize
                writer.add_tensor_info(t.name, shape, dt, nbytes)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            n = len(reader.tensors)
            step = max(1, n // 10)
            for i, t in enumerate(reader.tensors):
                w = dequantize(t)
                if transform is not None:
                    w = transform(t.name, w)
                writer.write_tensor_data(np.ascontiguousarray(w.astype(out_dtype(w.shape), copy=False)))
                if (i + 1) % step == 0 or i + 1 == n:
                    progress(f"wrote {i + 1}/{n} tensors")
        except OSError as e:
            raise QuantError(f"writing {out_path} failed: {e.strerror or e}; check free disk space.") from e
        finally:
            writer.close()
    return out_path
