"""The MLX path's tokenizer, built from a GGUF's own vocabulary so ids match llama.cpp's exactly.

Owns: encoding (via transformers' GGUF tokenizer converters, fed from our fast reader's metadata),
BOS handling as llama.cpp does it (`tokenizer.ggml.add_bos_token`), byte-exact detokenisation
piece by piece (llama.cpp's token_to_piece rules for byte-level BPE and sentencepiece vocabularies),
the end-of-generation id set, and saving/loading itself next to a converted MLX model.
Knows nothing about models or runtimes.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from .errors import QuantError

# llama.cpp token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# llama.cpp also treats these control tokens as end-of-generation when the file has them
_EOG_TEXTS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|return|>",
              "<|end_of_text|>", "<eos>", "</s>", "<|eom_id|>",
              # fill-in-the-middle repo/sep/pad markers, which llama.cpp also stops on
              "<reponame>", "<|repo_name|>", "<|file_sep|>", "<|fim_pad|>")
_STATE_FILE = "reverie_tokenizer.json"


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes->printable-unicode table used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _mark_special(backend, tokens: list[str], types: list[int], byte_level: bool) -> None:
    """Control tokens become special and user-defined ones added tokens, so that llama.cpp's
    `special=True` behaviour (matched whole in the text) holds."""
    from tokenizers import AddedToken

    alphabet = set(_byte_decoder()) if byte_level else None
    # a control token spelled outside the byte alphabet is a llama.cpp mislabel in byte-level vocabs
    control = [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types)
               if k == CONTROL and (alphabet is None or set(t) <= alphabet)]
    # Gemma spells multi-space tokens with real spaces, which the converter re-maps; adding those
    # would mint new ids past the vocabulary, so only tokens the model already has are added
    vocab = backend.get_vocab()
    user = [AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types)
            if k == USER_DEFINED and t in vocab]
    if control:
        backend.add_special_tokens(control)
    if user:
        backend.add_tokens(user)


class GGUFTokenizer:
    """Encode/decode with a GGUF's vocabulary. `encode(text, add_bos)` mirrors llama.cpp's
    `tokenize(text, add_bos, special=True)`: special tokens written in the text become single ids."""

    def __init__(self, backend, tokens: list[str], token_types: list[int], model: str,
                 bos_id: int | None, eos_id: int | None, add_bos: bool, eog_ids: set[int]):
        self.backend = backend  # tokenizers.Tokenizer
        self.tokens = tokens
        self.token_types = token_types
        self.model = model  # "gpt2" (byte-level BPE) | "llama" (sentencepiece)
        self.bos_token_id = bos_id
        self.eos_token_id = eos_id
        self.add_bos = add_bos
        self.eog_ids = set(eog_ids)
        self._pieces: dict[int, bytes] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_metadata(cls, md: dict) -> "GGUFTokenizer":
        try:
            from transformers.integrations.gguf import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer
        except ImportError as e:
            raise QuantError("building a tokenizer from a GGUF needs transformers>=5; run `make install`.") from e
        if "tokenizer.ggml.tokens" not in md:
            raise QuantError("the GGUF has no tokenizer vocabulary (tokenizer.ggml.tokens); use a complete model file.")
        tdict = {name: md[f"tokenizer.{key}"] for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
                 if f"tokenizer.{key}" in md}
        types = [int(x) for x in tdict.pop("token_type", [])]
        # transformers' own GGUF path passes neither: merges are rebuilt from the vocab, and
        # marking special tokens through its slow wrapper costs ~15 s on Gemma's vocab; we add
        # them to the Rust tokenizer directly below instead
        tdict.pop("scores", None)
        for k in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id"):
            if k in tdict:
                tdict[k] = int(tdict[k])
        arch = md.get("general.architecture", "")
        try:
            backend, _ = convert_gguf_tokenizer(arch, tdict)
        except Exception as e:  # the converters raise assorted errors for vocabularies they lack
            raise QuantError(f"cannot build a tokenizer for this GGUF ({arch}, "
                             f"{tdict.get('tokenizer_type')}): {e}") from e
        tokens = list(tdict["tokens"])
        types = types or [NORMAL] * len(tokens)
        _mark_special(backend, tokens, types, byte_level=tdict.get("tokenizer_type") == "gpt2")
        model = tdict.get("tokenizer_type", "gpt2")
        add_bos = md.get("tokenizer.ggml.add_bos_token")
        # llama.cpp defaults: sentencepiece vocabularies add BOS unless the file says otherwise
        add_bos = bool(add_bos) if add_bos is not None else model == "llama"
        bos = md.get("tokenizer.ggml.bos_token_id")
        eos = md.get("tokenizer.ggml.eos_token_id")
        eog = {int(eos)} if eos is not None else set()
        for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            if key in md:
                eog.add(int(md[key]))
        index = {t: i for i, t in enumerate(tokens) if types[i] in (CONTROL, USER_DEFINED)}
        eog |= {index[t] for t in _EOG_TEXTS if t in index}
        return cls(backend, tokens, types, model, int(bos) if bos is not None else None,
                   int(eos) if eos is not None else None, add_bos, eog)

    # --- encode / decode --------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_bos and self.add_bos and self.bos_token_id is not None:
            ids = [self.bos_token_id] + ids
        return ids

    def piece(self, token_id: int) -> bytes:
        """The bytes llama.cpp emits for one token (control tokens render as nothing)."""
        p = self._pieces.get(token_id)
        if p is None:
            p = self._make_piece(token_id)
            self._pieces[token_id] = p
        return p

    def _make_piece(self, i: int) -> bytes:
        if not 0 <= i < len(self.tokens):
            raise QuantError(f"token id {i} is outside the vocabulary (0..{len(self.tokens) - 1}).")
        text, kind = self.tokens[i], self.token_types[i]
        if kind in (CONTROL, UNUSED):
            return b""
        if kind == USER_DEFINED:
            return text.encode("utf-8")
        if self.model == "gpt2":
            dec = _byte_decoder()
            if all(c in dec for c in text):
                return bytes(dec[c] for c in text)
            return text.encode("utf-8")
        if kind == BYTE and len(text) == 6 and text.startswith("<0x"):
            return bytes([int(text[3:5], 16)])
        if kind == UNKNOWN:
            return "\u2047".encode("utf-8")  # llama.cpp renders <unk> as ' ⁇ '-like text
        return text.replace("\u2581", " ").encode("utf-8")

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.piece(int(i)) for i in ids).decode("utf-8", errors="replace")

    def to_transformers(self):
        """A transformers fast tokenizer over the same vocabulary (for trainers that want one)."""
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast(tokenizer_object=self.backend)
        if self.bos_token_id is not None:
            tok.bos_token = self.tokens[self.bos_token_id]
        if self.eos_token_id is not None:
            tok.eos_token = self.tokens[self.eos_token_id]
        return tok

    # --- persistence ------------------------------------------------------------------------
    def save(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        self.backend.save(str(out_dir / "tokenizer.json"))
        state = {"tokens": self.tokens, "token_types": self.token_types, "model": self.model,
                 "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
                 "add_bos": self.add_bos, "eog_ids": sorted(self.eog_ids)}
        (out_dir / _STATE_FILE).write_text(json.dumps(state))
        # so mlx_lm.load / transformers can open the directory too
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": self.add_bos}
        if self.bos_token_id is not None:
            cfg["bos_token"] = self.tokens[self.bos_token_id]
        if self.eos_token_id is not None:
            cfg["eos_token"] = self.tokens[self.eos_token_id]
        (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))

    @classmethod
    def load(cls, out_dir: Path) -> "GGUFTokenizer":
        from tokenizers import Tokenizer

        out_dir = Path(out_dir)
        try:
            state = json.loads((out_dir / _STATE_FILE).read_text())
            backend = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
        except (OSError, ValueError, Exception) as e:
            raise QuantError(f"{out_dir} has no readable tokenizer ({e}); re-run `reverie quant to-mlx`.") from e
        return cls(backend, state["tokens"], state["token_types"], state["model"], state["bos_token_id"],
                   state["eos_token_id"], state["add_bos"], set(state["eog_ids"]))
