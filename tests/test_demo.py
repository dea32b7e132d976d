"""`reverie demo` works in its own data dir without touching the caller's environment."""
import os

import pytest

pytestmark = pytest.mark.slow


def test_quick_demo_keeps_to_its_own_data_dir(reverie_home, tmp_path):
    from assistant.demo import run_demo

    lines = []
    before = os.environ["REVERIE_HOME"]
    out = run_demo(quick=True, echo=lines.append, home=tmp_path / "demo")
    assert os.environ["REVERIE_HOME"] == before == str(reverie_home)  # not pointed elsewhere
    assert out["home"] == str(tmp_path / "demo") and out["median_tokens_per_s"] > 0
    assert (tmp_path / "demo" / "ledger.db").exists() and not (reverie_home / "ledger.db").exists()
    assert any(line.startswith("reverie> ") and len(line) > 10 for line in lines)
