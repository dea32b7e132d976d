"""The CLI through typer's runner: exit codes and messages for good and bad input."""
import json

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("chat", "ask", "doctor", "models", "bench", "memory"):
        assert cmd in r.output


def test_models_list_json():
    r = runner.invoke(app, ["models", "list", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["default"] == "smollm2-135m"
    assert {m["name"] for m in d["models"]} >= {"smollm2-135m", "gemma3-270m"}


def test_doctor_json(reverie_home):
    r = runner.invoke(app, ["doctor", "--json"])
    d = json.loads(r.output)
    assert r.exit_code == (0 if d["ok"] else 1)
    assert d["runtimes"]["llama.cpp"]["available"] is True
    assert d["accelerator"]["kind"] in ("CPU", "CUDA", "Metal")
    assert d["data_dir"]["permissions"] == "0o700"


@pytest.mark.parametrize("args, msg", [
    (["ask", "   "], "empty question"),
    (["ask", "hi", "--model", "nope"], "unknown model"),
    (["ask", "hi", "--backend", "tpu"], "unknown backend"),
    (["models", "info", "nope"], "unknown model"),
    (["models", "rm", "nope"], "not a user-added model"),
])
def test_bad_input_exit_1(args, msg):
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    assert msg in r.output
    assert "Traceback" not in r.output


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 100)
    r = runner.invoke(app, ["models", "add", "bad", str(bad)])
    assert r.exit_code == 1 and "truncated or corrupt" in r.output
    r = runner.invoke(app, ["ask", "hi", "--model", str(bad)])
    assert r.exit_code == 1 and "error:" in r.output


@pytest.mark.slow
def test_ask_json_real_model():
    r = runner.invoke(app, ["ask", "What is 2+2?", "--json", "--no-memory", "--max-tokens", "24"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    for k in ("answer", "backend", "model", "prompt_tokens", "completion_tokens", "ttft_s", "tokens_per_s"):
        assert k in d
    assert d["backend"] == "llama.cpp" and d["model"] == "smollm2-135m"
    assert d["answer"] and d["completion_tokens"] > 0
