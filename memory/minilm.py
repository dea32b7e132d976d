"""all-MiniLM-L6-v2 in NumPy: the BERT forward pass, mean pooling and L2 normalisation.

Owns: reading the shipped model directory (config.json, the pooling config, tokenizer.json,
model.safetensors) and turning texts into the same unit vectors sentence-transformers makes from
those files (cosine ≥ 0.999 per text, pinned by tests/test_memory_embedder.py). Knows nothing
about where the directory comes from, caching or chromadb: memory/embedder.py does that.

Why NumPy and not the other light engines (measured on 2 cores, see memory/embedder.py):
- Start-up is what users feel. numpy is already in every process (chromadb needs it), `tokenizers`
  (Rust) imports in ~0.05 s and the 90 MB of float32 weights are memory-mapped (~1 ms; reading
  them with the safetensors library took 0.1-0.4 s), so a cold first query costs ~0.1-0.2 s
  instead of ~4.5 s for sentence-transformers + torch.
- ONNX Runtime would need an .onnx file; writing one without torch needs the `onnx` package
  (not installed) and a second copy of this graph. llama.cpp's BERT tokenizes with its own
  WordPiece, a second tokenizer that can disagree with the one the index was built with.
- The model is 22M parameters: a query is ~10 tokens, a few milliseconds of BLAS, and bulk
  throughput on float32 BLAS is within the same range as torch's (bench/startup_bench.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

# Abramowitz & Stegun 7.1.26: erf to 1.5e-7 absolute, below float32's own rounding at 1.0.
# NumPy has no erf and BERT's GELU is the exact (erf) one, not the tanh approximation.
_P = np.float32(0.3275911)
_A = [np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)]
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
FFN_ROWS = 128  # rows per FFN block: 128 × 1536 float32 is 0.75 MB, inside L2
SMALL_ROWS = 64  # up to this many rows (token positions) a weight multiply runs as (w @ x.T).T


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x·Φ(x), in float32, as a new array (x is left alone)."""
    z = np.abs(x)
    z *= _INV_SQRT2
    t = z * _P
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * _A[0]
    for a in _A[1:]:
        poly += a
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z
    poly *= 0.5  # Φ(-|x|) = (1 - erf(|x|/√2)) / 2
    np.subtract(0.5, poly, out=poly)
    np.copysign(poly, x, out=poly)
    poly += 0.5  # Φ(x)
    poly *= x
    return poly


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    x = x - mean
    var = np.mean(np.square(x), axis=-1, keepdims=True)
    x *= 1.0 / np.sqrt(var + eps)
    x *= w
    x += b
    return x


def _linear(x: np.ndarray, w: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x @ w.T for a weight w stored (out, in) as in the file. A few rows (a query's tokens) as
    (w @ x.T).T: BLAS then reads w as it lies, a query 12.6 -> 9.8 ms on one thread, the same
    bits (tests/test_memory_embedder.py; a contiguous (in, out) copy of the weights was as fast
    but cost ~35 ms at load). Many rows (bulk) keep the transposed GEMM: no faster that way."""
    if x.shape[0] > SMALL_ROWS:
        return np.matmul(x, w.T, out=out)
    y = np.matmul(w, x.T).T
    if out is None:
        return np.ascontiguousarray(y)
    out[...] = y
    return out


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """float32 arrays over a memory map of a .safetensors file: opening costs ~1 ms where reading
    90 MB costs 0.1-0.4 s, and only the embedding rows a text uses are ever paged in. (The
    format: 8-byte little-endian header length, a JSON header of name → dtype, shape, byte
    offsets, then the data.) Arrays are read-only; float16/bfloat16 files are not expected."""
    import mmap

    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    data = np.frombuffer(mapped, dtype=np.uint8, offset=8 + n)
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        start, end = t["data_offsets"]
        if t["dtype"] != "F32":
            if t["dtype"] in ("I64", "I32"):  # position_ids: a buffer, not a weight
                continue
            raise ValueError(f"{path}: tensor {name} is {t['dtype']}; only float32 weights are read")
        raw = data[start:end]
        arr = raw.view(np.float32) if (8 + n + start) % 4 == 0 else raw.copy().view(np.float32)
        out[name] = arr.reshape(t["shape"])
    return out


class MiniLM:
    """A BERT encoder with mean pooling, loaded from a sentence-transformers model directory."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        directory = Path(directory)
        cfg = json.loads((directory / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
            raise ValueError(f"{directory} is not a BERT model with GELU; this encoder only runs those.")
        pooling = directory / "1_Pooling" / "config.json"
        if pooling.exists() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
            raise ValueError(f"{pooling} asks for a pooling other than mean; this encoder only does mean.")
        st_cfg = directory / "sentence_bert_config.json"
        self.max_seq_length = min(int(json.loads(st_cfg.read_text()).get("max_seq_length", 512))
                                  if st_cfg.exists() else 512, int(cfg["max_position_embeddings"]))
        self.heads = int(cfg["num_attention_heads"])
        self.dim = int(cfg["hidden_size"])
        self.eps = float(cfg["layer_norm_eps"])

        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # tokenizer.json pads to 128 and truncates at 128; sentence-transformers overrides both
        # per call (longest in the batch, max_seq_length), so do the same.
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.no_padding()

        w = read_safetensors(directory / "model.safetensors")
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
        g = lambda name: w[prefix + name]  # noqa: E731
        # Weights stay (out, in) views of the mapped file, used as they lie by _linear: no copy.
        self.word = g("embeddings.word_embeddings.weight")
        self.pos = g("embeddings.position_embeddings.weight")
        self.type0 = g("embeddings.token_type_embeddings.weight")[0]
        self.emb_ln = (g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"))
        self.layers = []
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            att = p + "attention.self."
            # q, k and v as one (3·out, in) matrix: one GEMM instead of three
            wqkv = np.concatenate([g(att + n + ".weight") for n in ("query", "key", "value")])
            bqkv = np.concatenate([g(att + n + ".bias") for n in ("query", "key", "value")])
            self.layers.append((
                wqkv, bqkv,
                g(p + "attention.output.dense.weight"), g(p + "attention.output.dense.bias"),
                (g(p + "attention.output.LayerNorm.weight"), g(p + "attention.output.LayerNorm.bias")),
                g(p + "intermediate.dense.weight"), g(p + "intermediate.dense.bias"),
                g(p + "output.dense.weight"), g(p + "output.dense.bias"),
                (g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias")),
            ))

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask), both (batch, longest) int64/float32, padded with [PAD]=0 on the right."""
        # encode_batch starts a thread pool: not worth it for the one-text query path
        encs = [self.tokenizer.encode(texts[0])] if len(texts) == 1 else self.tokenizer.encode_batch(texts)
        longest = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), longest), dtype=np.int64)
        mask = np.zeros((len(encs), longest), dtype=np.float32)
        for row, e in enumerate(encs):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1.0
        return ids, mask

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean-pooled, L2-normalised sentence embeddings (batch, dim) for one padded batch."""
        b, n = ids.shape
        h, d = self.heads, self.dim // self.heads
        x = self.word[ids] + self.pos[:n] + self.type0  # (b, n, dim)
        x = _layer_norm(x.reshape(b * n, self.dim), *self.emb_ln, self.eps)
        # padded keys get no attention: a large negative added before the softmax
        key_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(d))
        for wqkv, bqkv, wo, bo, ln1, wi, bi, wo2, bo2, ln2 in self.layers:
            qkv = _linear(x, wqkv)
            qkv += bqkv
            qkv = qkv.reshape(b, n, 3, h, d).transpose(2, 0, 3, 1, 4)  # (3, b, h, n, d)
            scores = qkv[0] @ qkv[1].transpose(0, 1, 3, 2)
            scores *= scale
            scores += key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(b * n, self.dim)
            att = _linear(ctx, wo)
            att += bo
            att += x
            x = _layer_norm(att, *ln1, self.eps)
            x = _layer_norm(self._ffn(x, wi, bi, wo2, bo2), *ln2, self.eps)
        x = x.reshape(b, n, self.dim)
        summed = np.einsum("bnd,bn->bd", x, mask)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norm, 1e-12)).astype(np.float32)

    @staticmethod
    def _ffn(x: np.ndarray, wi, bi, wo2, bo2) -> np.ndarray:
        """x + FFN(x), in blocks of rows so the 4×-wide intermediate stays in the CPU cache
        (GELU is ~20 elementwise passes; over the whole batch they were memory-bound)."""
        out = np.empty_like(x)
        for r in range(0, x.shape[0], FFN_ROWS):
            inter = _linear(x[r:r + FFN_ROWS], wi)
            inter += bi
            _linear(gelu(inter), wo2, out=out[r:r + FFN_ROWS])
        out += bo2
        out += x
        return out

    def encode(self, texts: list[str], batch_size: int = 64, workers: int = 1) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors, in the input's order. Texts are sorted by
        length before batching (as sentence-transformers does) so a batch pads little; batches
        run on up to `workers` threads (NumPy and BLAS release the GIL)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1.")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]

        def run(rows: list[int]) -> None:
            out[rows] = self.forward(*self.tokenize([texts[i] for i in rows]))

        if workers <= 1 or len(chunks) <= 1:
            for rows in chunks:
                run(rows)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(workers, len(chunks)), thread_name_prefix="minilm") as pool:
                list(pool.map(run, chunks))
        return out
