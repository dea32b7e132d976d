"""A small, fast GGUF reader for the MLX path: metadata, the tensor table, and raw tensor bytes.

Owns: parsing the GGUF container (header, key/values, tensor infos, alignment) with numpy, and
catching truncated or corrupt files as QuantError. Does not know about models or tokenizers.

Why not gguf.GGUFReader: it builds numpy views per array element, which takes ~20 s for Gemma's
262k-token vocabulary on 2 cores; this reader reads the same file in well under a second.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import QuantError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF value types -> (struct format, numpy dtype); 8 = string, 9 = array
_SCALARS = {0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
            4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
            10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64)}
_STRING, _ARRAY = 8, 9


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (rows last dim fastest), i.e. GGUF dims reversed
    ggml_type: int
    offset: int  # absolute byte offset in the file
    n_bytes: int


@dataclass
class GGUFFile:
    path: Path
    version: int
    metadata: dict = field(default_factory=dict)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    def arch_get(self, key: str, default=None):
        """A key under the architecture's namespace, e.g. arch_get('block_count')."""
        return self.metadata.get(f"{self.metadata.get('general.architecture', '')}.{key}", default)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as uint8 of shape (rows..., bytes per row): what gguf.quants expects."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        t = self.tensors[name]
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(t.ggml_type)]
        row_bytes = t.shape[-1] // block * type_size
        mm = np.memmap(self.path, dtype=np.uint8, mode="r", offset=t.offset, shape=(t.n_bytes,))
        return mm.reshape(*t.shape[:-1], row_bytes)


class _Cursor:
    def __init__(self, buf: memoryview):
        self.buf = buf
        self.pos = 0

    def scalar(self, fmt: str):
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > len(self.buf) - self.pos:
            raise ValueError(f"string of {n} bytes runs past the end of the file")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype][0])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, n = self.scalar("<I"), self.scalar("<Q")
            if etype in _SCALARS:
                dt = np.dtype(_SCALARS[etype][1]).newbyteorder("<")
                end = self.pos + n * dt.itemsize
                if end > len(self.buf):
                    raise ValueError("array runs past the end of the file")
                arr = np.frombuffer(self.buf[self.pos:end], dtype=dt).copy()
                self.pos = end
                return arr
            return [self.value(etype) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {vtype}")


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header and tensor table; tensor data stays on disk (memory-mapped)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    if not path.is_file():
        raise QuantError(f"model file {path} does not exist; check the path or run `reverie models list`.")
    size = path.stat().st_size
    try:
        mm = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as e:
        raise QuantError(f"cannot read {path}: {e}") from e
    cur = _Cursor(memoryview(mm))
    try:
        if bytes(cur.buf[:4]) != GGUF_MAGIC:
            raise QuantError(f"{path} is not a GGUF file (bad magic); pass a .gguf model file.")
        cur.pos = 4
        version = cur.scalar("<I")
        if version not in (2, 3):
            raise QuantError(f"{path}: unsupported GGUF version {version}; re-create the file with a current llama.cpp.")
        n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
        out = GGUFFile(path=path, version=version)
        for _ in range(n_kv):
            key = cur.string()
            out.metadata[key] = cur.value(cur.scalar("<I"))
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.scalar("<I")
            dims = [cur.scalar("<Q") for _ in range(n_dims)]
            ggml_type, offset = cur.scalar("<I"), cur.scalar("<Q")
            infos.append((name, tuple(reversed(dims)), ggml_type, offset))
    except (struct.error, ValueError, IndexError) as e:
        raise QuantError(f"{path} looks truncated or corrupt ({e}); re-download or re-create it.") from e
    align = int(out.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = (cur.pos + align - 1) // align * align
    for name, shape, ggml_type, offset in infos:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        except (ValueError, KeyError) as e:
            raise QuantError(f"{path}: tensor {name} has unknown type {ggml_type}; the file is corrupt "
                             "or needs a newer gguf package.") from e
        n = int(np.prod(shape)) if shape else 1
        n_bytes = n // block * type_size
        start = data_start + offset
        if start + n_bytes > size:
            raise QuantError(f"{path} is truncated: tensor {name} ends at byte {start + n_bytes}, "
                             f"the file has {size}; re-download or re-create it.")
        out.tensors[name] = TensorInfo(name, shape, ggml_type, start, n_bytes)
    if not out.tensors:
        raise QuantError(f"{path} has no tensors; it is not a model file.")
    return out
