"""Parity between runtimes: one of our adapters, exported once as a GGUF LoRA, in llama.cpp and in
the MLX runtime on the same base gives the same greedy next token (teacher-forced).

The fair comparison is on the F32 twin of the served file: there both runtimes hold identical
weights and neither quantizes activations, so only the adapter path is under test (>= 99%). On the
served Q4_1 file MLX repacks the weights exactly but llama.cpp quantizes activations to 8 bits for
its quantized matmuls, so even the bare bases disagree on a few positions; there we compare the
adapter-induced change of the logits (adapted - base) between runtimes instead.
The adapter is a peft-layout (Hugging Face q/k order) one, so the export's q/k permutation is
exercised; the MLX model loaded from GGUF has llama.cpp's permuted rows and takes the file as is.
"""
from pathlib import Path

import numpy as np
import pytest

from lora.adapter import AdapterSpec, Provenance, save_adapter
from lora.config import ALL_TARGETS
from assistant.quant_api import export_adapter_gguf as export_gguf
from quant.chat_format import CHATML
from quant.registry import ModelInfo

pytest.importorskip("mlx.core")
pytestmark = pytest.mark.mlx

# the fixed prompt set of the peft/llama.cpp parity test (the same first six texts)
from tests.test_lora_parity import MODEL, TEXTS  # noqa: E402

# MLX on a Linux CPU runs this model at ~7 tokens/s (no BLAS): few texts per test; on Apple
# Silicon the whole set takes a second.
F32_TEXTS, Q4_TEXTS = 4, 2
# SmolLM2-135M: 30 layers, 9 query heads, 3 kv heads, hidden 576, mlp 1536
DIMS = {"q_proj": [576, 576], "k_proj": [192, 576], "v_proj": [192, 576], "o_proj": [576, 576],
        "gate_proj": [1536, 576], "up_proj": [1536, 576], "down_proj": [576, 1536]}


def random_adapter(path: Path, layout: str = "hf", seed: int = 0, std: float = 0.05) -> Path:
    """One of our adapter dirs with random non-zero A and B on all 7 projections."""
    rng = np.random.default_rng(seed)
    rank = 8
    w = {}
    for layer in range(30):
        for mod, (out_f, in_f) in DIMS.items():
            w[f"layers.{layer}.{mod}.lora_a"] = rng.normal(0, std, (rank, in_f)).astype(np.float32)
            w[f"layers.{layer}.{mod}.lora_b"] = rng.normal(0, std, (out_f, rank)).astype(np.float32)
    spec = AdapterSpec(trainer="peft" if layout == "hf" else "mlx", rank=rank, alpha=16.0,
                       targets=list(ALL_TARGETS), n_layers=30, base_dims=DIMS, layout=layout,
                       n_head=9, n_head_kv=3)
    return save_adapter(path, w, spec, Provenance(base_model_sha256="test"))


def mlx_runtime(model_path: Path):
    from quant.runtime import load_runtime

    info = ModelInfo(name=model_path.stem, path=str(model_path), source="path", arch="llama",
                     chat_format="chatml")
    return load_runtime(info, "mlx", n_ctx=256)


def cpp_logits(model_path: Path, ids_list, lora: Path | None = None) -> list[np.ndarray]:
    """llama.cpp's logits with the adapter loaded by `lora_path` (a small scoring context: the
    runtime's 2048-position scorer costs more to set up than these texts take to score)."""
    from llama_cpp import Llama

    kw = dict(model_path=str(model_path), n_ctx=256, logits_all=True, verbose=False, n_threads=2, seed=0)
    if lora:
        kw["lora_path"] = str(lora)
    llm = Llama(**kw)
    out = []
    for ids in ids_list:
        llm.reset()
        llm.eval(ids)
        out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
    llm.close()
    return out


def all_logits(rt, ids_list) -> list[np.ndarray]:
    return [rt.logits(ids) for ids in ids_list]


def agreement(a, b) -> float:
    return float(np.mean(np.concatenate([x.argmax(-1) == y.argmax(-1) for x, y in zip(a, b)])))


def delta_cosine(base_a, ad_a, base_b, ad_b) -> float:
    """Cosine between the adapter-induced logit changes of two runtimes, over all positions."""
    da = np.concatenate([(y - x).ravel() for x, y in zip(base_a, ad_a)]).astype(np.float64)
    db = np.concatenate([(y - x).ravel() for x, y in zip(base_b, ad_b)]).astype(np.float64)
    return float(da @ db / (np.linalg.norm(da) * np.linalg.norm(db)))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlxpar")
    adir = random_adapter(d / "adapter")
    return {"dir": d, "good": export_gguf(adir, d / "good.gguf"),
            "wrong": export_gguf(adir, d / "wrong.gguf", skip_permutation=True)}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_same_gguf_lora_same_greedy_tokens_in_llama_cpp_and_mlx(work, f32_default_model):
    f32 = f32_default_model
    mlx = mlx_runtime(f32)
    try:
        ids = [mlx.tokenize(t, add_bos=True) for t in TEXTS[:F32_TEXTS]]
        probe = ids[0][:12]
        base_probe = mlx.logits(probe)
        mlx.set_adapter(str(work["good"]))
        ad_m = all_logits(mlx, ids)
        mlx.set_adapter(None)
        restored = mlx.logits(probe)
    finally:
        mlx.close()
    base_c, ad_c = cpp_logits(f32, ids), cpp_logits(f32, ids, work["good"])
    changed = 1 - agreement(base_c, ad_c)
    ad_agree = agreement(ad_c, ad_m)
    max_diff = max(float(np.abs(x - y).max()) for x, y in zip(ad_c, ad_m))
    n = sum(len(x) for x in ids)
    print(f"F32 twin, {n} positions: adapter changes {changed:.3f} of llama.cpp's greedy tokens; "
          f"adapted greedy agreement llama.cpp vs MLX {ad_agree:.4f}; max |logit diff| {max_diff:.4f}")
    assert changed > 0.2, "the adapter must move predictions, or parity proves nothing"
    assert ad_agree >= 0.99
    np.testing.assert_allclose(restored, base_probe, atol=1e-4)  # removing the adapter restores the base


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_adapter_effect_agrees_between_runtimes_on_the_served_q4_1_file(work):
    mlx = mlx_runtime(MODEL)
    try:
        ids = [mlx.tokenize(t, add_bos=True) for t in TEXTS[F32_TEXTS:F32_TEXTS + Q4_TEXTS]]
        base_m = all_logits(mlx, ids)
        mlx.set_adapter(str(work["good"]))
        ad_m = all_logits(mlx, ids)
    finally:
        mlx.close()
    base_c, ad_c = cpp_logits(MODEL, ids), cpp_logits(MODEL, ids, work["good"])
    base_agree, ad_agree = agreement(base_c, base_m), agreement(ad_c, ad_m)
    cos = delta_cosine(base_c, ad_c, base_m, ad_m)
    n = sum(len(x) for x in ids)
    print(f"Q4_1, {n} positions: base greedy agreement {base_agree:.4f} (llama.cpp 8-bit activations vs "
          f"MLX); adapted agreement {ad_agree:.4f}; cosine of adapter-induced logit changes {cos:.4f}")
    # near-ties flip either way under llama.cpp's 8-bit activations: the token-level bound is the
    # base's; the adapter's own effect is compared through the logit changes
    assert base_agree >= 0.9 and ad_agree >= 0.9
    assert cos > 0.95


def test_damaged_or_foreign_gguf_lora_is_a_clear_error_and_leaves_the_model(tmp_path):
    """Fast: a tiny model and hand-made adapter files; nothing real is loaded."""
    import gguf

    from quant.errors import QuantError
    from quant.mlx_runtime import MLXRuntime
    from test_mlx_runtime import _tiny_llama

    path = tmp_path / "tiny.gguf"
    _tiny_llama(path)
    rt = MLXRuntime(ModelInfo(name="tiny", path=str(path), source="path", arch="llama"), CHATML, 64, 1)
    ids = [0, 3, 1, 2, 5]
    base = rt.logits(ids)

    def lora(name, tensors, arch="llama", kind="adapter"):
        w = gguf.GGUFWriter(str(tmp_path / name), arch)
        w.add_string("general.type", kind)
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", 4.0)
        for k, v in tensors.items():
            w.add_tensor(k, v.astype(np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return str(tmp_path / name)

    rng = np.random.default_rng(0)
    ok = {"blk.0.attn_q.weight.lora_a": rng.normal(0, 0.1, (2, 64)),
          "blk.0.attn_q.weight.lora_b": rng.normal(0, 0.1, (64, 2))}
    rt.set_adapter(lora("ok.gguf", ok))
    assert np.abs(rt.logits(ids) - base).max() > 1e-4
    rt.set_adapter(None)
    cases = {
        lora("wrongdim.gguf", {"blk.0.attn_k.weight.lora_a": rng.normal(0, 0.1, (2, 64)),
                               "blk.0.attn_k.weight.lora_b": rng.normal(0, 0.1, (64, 2))}): "does not fit",
        lora("nolayer.gguf", {"blk.7.attn_q.weight.lora_a": ok["blk.0.attn_q.weight.lora_a"],
                              "blk.7.attn_q.weight.lora_b": ok["blk.0.attn_q.weight.lora_b"]}): "no matching layer",
        lora("half.gguf", {"blk.0.attn_q.weight.lora_a": ok["blk.0.attn_q.weight.lora_a"]}): "without its partner",
        lora("gemma.gguf", ok, arch="gemma3"): "for a gemma3 model",
        lora("model.gguf", ok, kind="model"): "not a LoRA adapter",
    }
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes((tmp_path / "ok.gguf").read_bytes()[:300])
    cases[str(trunc)] = "trunc.gguf"
    cases[str(tmp_path / "nowhere")] = "neither a GGUF LoRA file"
    for bad, msg in cases.items():
        with pytest.raises(QuantError, match=msg):
            rt.set_adapter(bad)
        assert rt.adapter_path is None
        np.testing.assert_allclose(rt.logits(ids), base, atol=1e-6)
    rt.close()


def test_our_adapter_dir_resolves_to_its_gguf_and_chat_gives_mlx_the_gguf(tmp_path, reverie_home):
    """An adapter dir (never exported) is exported on first use; the promoted adapter handed to
    an MLX runtime is the same GGUF file llama.cpp gets (not the dir, which MLX cannot read)."""
    from types import SimpleNamespace

    from assistant.runtime_api import adapter_file
    from assistant.services import Services
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger

    adir = random_adapter(tmp_path / "v001")
    got = adapter_file(adir)
    assert got == str(adir / "adapter.gguf") and Path(got).is_file()
    assert adapter_file(got) == got
    ledger = Ledger(reverie_home)
    led = AdapterLedger(ledger)
    led.add(id="v001-x", model="m", path=str(adir), gguf=got)
    led.promote("v001-x")
    for backend in ("mlx", "llama.cpp"):
        base = SimpleNamespace(name="m", path=str(tmp_path / "base.gguf"))
        served = Services(reverie_home, ledger).served(base)
        assert (served.model_path, served.adapter) == (base.path, got)
