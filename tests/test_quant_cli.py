"""`reverie quant …` through typer's runner, and the assistant facade behind it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from test_quant_fixtures import N_EMBD, write_tiny_model


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REVERIE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def app():
    from cli.quant_cmd import quant_app

    return quant_app


def _adapter(path, arch="llama", scale=0.1):
    from quant.gguf_lora import write_lora_gguf

    rng = np.random.default_rng(0)
    pairs = {"blk.0.attn_q.weight": (rng.normal(0, scale, (4, N_EMBD)).astype(np.float32),
                                     rng.normal(0, scale, (N_EMBD, 4)).astype(np.float32))}
    return write_lora_gguf(path, arch, pairs, 8.0)


def _registered(home):
    f = home / "models.json"
    return json.loads(f.read_text())["user"] if f.exists() else {}


@pytest.mark.parametrize("cmd", ["merge", "quantize", "report", "to-mlx"])
def test_help(app, cmd):
    r = CliRunner().invoke(app, [cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_merge_registers_result(app, tmp_path, home):
    write_tiny_model(tmp_path / "tiny.gguf")
    ad = _adapter(tmp_path / "ad.gguf")
    r = CliRunner().invoke(app, ["merge", "--adapter", str(ad), "--base", str(tmp_path / "tiny.gguf"),
                                 "--type", "Q8_0", "--name", "tiny-merged", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["name"] == "tiny-merged" and out["type"] == "Q8_0" and out["merged_tensors"] == 1
    reg = _registered(home)
    assert reg["tiny-merged"]["source"] == "merged"
    assert reg["tiny-merged"]["file_type"] == "Q8_0"
    # the same name twice is refused before any work
    r = CliRunner().invoke(app, ["merge", "--adapter", str(ad), "--base", str(tmp_path / "tiny.gguf"),
                                 "--name", "tiny-merged"])
    assert r.exit_code == 1 and "already exists" in r.output


@pytest.mark.parametrize("case", ["bad_type", "wrong_arch", "missing_adapter", "unwritable"])
def test_merge_errors_exit_1_and_register_nothing(app, tmp_path, home, case):
    write_tiny_model(tmp_path / "tiny.gguf")
    args = ["merge", "--base", str(tmp_path / "tiny.gguf"), "--name", "m"]
    if case == "bad_type":
        args += ["--adapter", str(_adapter(tmp_path / "ad.gguf")), "--type", "Q5"]
        expect = "unknown quantization type 'Q5'; choose one of: Q4_K_M"
    elif case == "wrong_arch":
        args += ["--adapter", str(_adapter(tmp_path / "ad.gguf", arch="gemma3"))]
        expect = "architecture 'gemma3'"
    elif case == "missing_adapter":
        args += ["--adapter", str(tmp_path / "nope.gguf")]
        expect = "does not exist"
    else:
        home.mkdir(parents=True, exist_ok=True)
        (home / "models").write_text("a file where the models directory should be")
        args += ["--adapter", str(_adapter(tmp_path / "ad.gguf"))]
        expect = "cannot write"
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert expect in r.output
    assert "Traceback" not in r.output
    assert _registered(home) == {}
    models = home / "models"
    assert not models.is_dir() or list(models.iterdir()) == []


def test_quantize_and_report_errors(app, tmp_path):
    write_tiny_model(tmp_path / "tiny.gguf")
    r = CliRunner().invoke(app, ["quantize", str(tmp_path / "tiny.gguf"), "--type", "Q9"])
    assert r.exit_code == 1 and "choose one of" in r.output
    r = CliRunner().invoke(app, ["quantize", str(tmp_path / "nope.gguf"), "--type", "Q8_0"])
    assert r.exit_code == 1 and "nope" in r.output
    r = CliRunner().invoke(app, ["report", "no-such-model"])
    assert r.exit_code == 1 and "unknown model" in r.output


def test_quantize_cli_writes_and_registers(app, tmp_path, home):
    write_tiny_model(tmp_path / "tiny.gguf")
    out = tmp_path / "tiny.F16.gguf"
    r = CliRunner().invoke(app, ["quantize", str(tmp_path / "tiny.gguf"), "--type", "f16",
                                 "--out", str(out), "--name", "tiny16", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["type"] == "F16" and out.exists()
    assert _registered(home)["tiny16"]["file_type"] == "F16"


def test_adapter_resolver_is_pluggable(tmp_path, home):
    from assistant import quant_api

    write_tiny_model(tmp_path / "tiny.gguf")
    ad = _adapter(tmp_path / "v3.gguf")
    seen = []

    def resolver(ref, h):
        seen.append((ref, h))
        return ad

    quant_api.set_adapter_resolver(resolver)
    try:
        r = quant_api.merge_adapter("v3", "F32", base=str(tmp_path / "tiny.gguf"), home=home)
    finally:
        quant_api.set_adapter_resolver(None)
    assert seen == [("v3", home)]
    assert r["name"] == "tiny-v3-f32"
    from assistant.errors import ReverieError

    with pytest.raises(ReverieError, match="path to a GGUF LoRA file"):
        quant_api.merge_adapter("v3", "F32", base=str(tmp_path / "tiny.gguf"), home=home)


@pytest.mark.slow
def test_report_json_on_default_model(app):
    r = CliRunner().invoke(app, ["report", "--json", "--tokens", "16"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["name"] == "smollm2-135m" and d["file_type"] == "Q4_1"
    assert 2 < d["perplexity"] < 100 and d["tokens_scored"] > 500
    assert d["decode_tokens_per_s"] > 0 and d["kl_mean"] is None


def test_adapter_version_resolves_through_the_ledger(tmp_path, home):
    from assistant import quant_api
    from assistant.adapters_api import _ledger
    from assistant.errors import ReverieError
    from memory.adapters_ledger import AdapterLedger

    write_tiny_model(tmp_path / "tiny.gguf")
    (tmp_path / "v7-abc").mkdir()
    ad = _adapter(tmp_path / "v7-abc" / "adapter.gguf")  # sleep's layout
    AdapterLedger(_ledger(home)).add(id="v7-abc", model="tiny", path=str(ad.parent), gguf=str(ad))
    assert quant_api.path_adapter_resolver("v7", home) == ad
    r = quant_api.merge_adapter("v7", "F32", base=str(tmp_path / "tiny.gguf"), home=home)
    assert r["merged_tensors"] == 1 and r["name"] == "tiny-v7-abc-f32"  # named for the version
    with pytest.raises(ReverieError, match="adapter version 'v9'"):
        quant_api.path_adapter_resolver("v9", home)


def test_the_served_merge_type_is_the_option_else_the_setting(home):
    """sleep's merge for serving: option > setting (default Q8_0); none turns it off; a bad
    setting is a usage error that names the types, raised before any work."""
    from assistant.config import Settings
    from assistant.sleep import merge_type
    from assistant.errors import ReverieError

    assert merge_type(home, "") == "Q8_0"  # the default setting
    assert merge_type(home, "F16") == "F16" and merge_type(home, "none") == ""
    Settings(merge_on_promote="none").save(home)
    assert merge_type(home, "") == "" and merge_type(home, "same") == "same"
    Settings(merge_on_promote="Q5").save(home)
    with pytest.raises(ReverieError, match="unknown quantization type 'Q5'"):
        merge_type(home, "")


def test_sleep_merge_option_rejects_a_bad_type_before_any_work(home):
    from cli.main import app

    r = CliRunner().invoke(app, ["sleep", "--merge", "Q5"])
    assert r.exit_code == 1 and "unknown quantization type 'Q5'" in r.output
    assert "Traceback" not in r.output


def test_to_mlx_writes_registers_and_the_runtime_serves_it(app, tmp_path, home):
    """to-mlx: a complete directory, registered as a model (file type MLX) that load_runtime
    serves with MLX by name, with the same logits as MLX on the GGUF itself."""
    pytest.importorskip("mlx.core")
    from test_mlx_runtime import _tiny_llama

    from quant.errors import QuantError
    from quant.registry import Registry
    from quant.runtime import load_runtime

    _tiny_llama(tmp_path / "tiny.gguf")
    r = CliRunner().invoke(app, ["to-mlx", str(tmp_path / "tiny.gguf"), "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["registered_as"] == "tiny-mlx"
    m = Registry(home).get("tiny-mlx")
    assert m.file_type == "MLX" and m.arch == "llama" and m.size_bytes > 0
    assert sorted(p.name for p in (home / "models").iterdir()) == ["tiny-mlx"]  # no .partial left
    rt = load_runtime(m, "auto", n_ctx=64, threads=1)
    ref = load_runtime(Registry(home).get(str(tmp_path / "tiny.gguf")), "mlx", n_ctx=64, threads=1)
    assert rt.backend == "mlx"
    ids = [0, 3, 1, 2, 5, 8]
    np.testing.assert_allclose(rt.logits(ids), ref.logits(ids), atol=1e-5)
    rt.close(), ref.close()
    with pytest.raises(QuantError, match="MLX directory"):
        load_runtime(m, "llama.cpp", n_ctx=64, threads=1)
    # a directory path works as a model too, and the same name twice is refused before any work
    assert Registry(home).get(out["path"]).file_type == "MLX"
    r = CliRunner().invoke(app, ["to-mlx", str(tmp_path / "tiny.gguf")])
    assert r.exit_code == 1 and "already exists" in r.output


@pytest.mark.parametrize("case", ["unwritable", "not_empty", "bad_bits"])
def test_to_mlx_errors_exit_1_and_leave_nothing(app, tmp_path, home, case):
    pytest.importorskip("mlx.core")
    from test_mlx_runtime import _tiny_llama

    _tiny_llama(tmp_path / "tiny.gguf")
    args = ["to-mlx", str(tmp_path / "tiny.gguf")]
    if case == "unwritable":
        (tmp_path / "afile").write_text("x")
        args += ["--out", str(tmp_path / "afile" / "m")]
        expect = "cannot write"
    elif case == "not_empty":
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        args += ["--out", str(tmp_path / "full")]
        expect = "not empty"
    else:
        args += ["--bits", "7"]
        expect = "requant_bits must be one of"
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert expect in r.output and "Traceback" not in r.output
    assert _registered(home) == {}
    assert not list(tmp_path.glob("**/.*.partial"))


def test_registry_refuses_an_incomplete_mlx_dir(tmp_path, home):
    from quant.errors import QuantError
    from quant.registry import Registry

    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(QuantError, match="missing model.safetensors"):
        Registry(home).add("half", tmp_path / "half")
    assert _registered(home) == {}


@pytest.mark.parametrize("case", ["bad_type", "unwritable", "missing_src", "wrong_shape_adapter"])
def test_quantize_and_merge_bad_input_register_nothing(app, tmp_path, home, case):
    """The issue's bad inputs through the CLI: exit 1, `error:` message, no traceback, nothing
    registered and no output file left behind."""
    write_tiny_model(tmp_path / "tiny.gguf")
    (tmp_path / "afile").write_text("x")
    if case == "bad_type":
        args = ["quantize", str(tmp_path / "tiny.gguf"), "--type", "Q3_Z", "--name", "q",
                "--out", str(tmp_path / "out.gguf")]
        expect = "unknown quantization type"
    elif case == "unwritable":
        args = ["quantize", str(tmp_path / "tiny.gguf"), "--type", "F16", "--name", "q",
                "--out", str(tmp_path / "afile" / "out.gguf")]
        expect = "cannot write"
    elif case == "missing_src":
        args = ["quantize", str(tmp_path / "nope.gguf"), "--type", "F16", "--name", "q"]
        expect = "nope"
    else:  # same architecture, other dimensions: a model it was not trained on
        from quant.gguf_lora import write_lora_gguf

        rng = np.random.default_rng(0)
        ad = write_lora_gguf(tmp_path / "big.gguf", "llama", {"blk.0.attn_q.weight": (
            rng.normal(0, 0.1, (4, 576)).astype(np.float32),
            rng.normal(0, 0.1, (576, 4)).astype(np.float32))}, 8.0)
        args = ["merge", "--adapter", str(ad), "--base", str(tmp_path / "tiny.gguf"), "--name", "q"]
        expect = "does not fit base"
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "error:" in r.output and expect in r.output and "Traceback" not in r.output
    assert _registered(home) == {}
    assert {p.name for p in tmp_path.iterdir()} - {"tiny.gguf", "afile", "home", "big.gguf"} == set()
    models = home / "models"
    assert not models.is_dir() or list(models.iterdir()) == []
