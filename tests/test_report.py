"""Report rendering: terminal table, markdown and PNG plots, written atomically."""
import json

import pytest

from assistant.errors import ReverieError
from assistant.report import render_markdown, render_table, write_report


def _results():
    arm = lambda p, g, pt: {"personal_acc": p, "personal_ci": [p - 0.1, min(1.0, p + 0.1)],
                            "general_acc": g, "general_ci": {"low": g - 0.05, "high": g + 0.05},
                            "prompt_tokens": pt, "ttft_s": 0.123, "tokens_per_s": 88.04}
    return {
        "arms": {"adapter+memory": arm(0.95, 0.58, 140), "base": arm(0.04, 0.6, 40),
                 "memory": arm(0.9, 0.6, 140), "adapter": arm(0.6, 0.59, 40)},
        "general_acc_delta": -0.01, "kl_drift": 0.01234, "ppl_ratio": 1.021, "bwt": -0.07,
        "R": [[0.75, None], [0.625, 0.5]], "n_facts": 12, "seconds": 181.5,
        "disk_bytes": 3 * 1024 * 1024,
        "gate": {"passed": False, "reasons": ["perplexity ratio 1.100 exceeds 1.05"]},
    }


def test_table_is_aligned_ordered_and_shows_the_numbers():
    text = render_table(_results())
    lines = text.splitlines()
    header, rule, *rows = lines[:6]
    assert [r.split()[0] for r in rows] == ["base", "memory", "adapter", "adapter+memory"]
    # every table line ends at the same column: right-aligned numbers
    assert len({len(l) for l in (header, rule, *rows)}) == 1
    assert "0.600" in rows[2] and "[0.50, 0.70]" in rows[2] and "88.0" in rows[2]
    assert "-1.0 points" in text and "0.0123" in text and "1.021" in text
    assert "-7.0 points" in text
    assert "3.0 MB" in text and "181.5 s" in text
    assert "REJECTED" in text and "perplexity ratio 1.100 exceeds 1.05" in text


def test_missing_values_render_as_dash():
    r = {"arms": {"base": {"personal_acc": 0.5}}}
    text = render_table(r)
    assert "0.500" in text and "—" in text
    md = render_markdown(r)
    assert "| base | 0.500 | — |" in md


def test_no_arms_is_a_clear_error(tmp_path):
    with pytest.raises(ReverieError, match="no 'arms'"):
        render_table({})
    with pytest.raises(ReverieError):
        write_report({"arms": {}}, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_write_report_markdown_pngs_and_json(tmp_path):
    out = write_report(_results(), tmp_path / "report")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["accuracy.png", "forgetting.png", "report.md", "results.json"]
    for png in ("accuracy.png", "forgetting.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    md = (out / "report.md").read_text()
    assert "![Accuracy per arm](accuracy.png)" in md and "(forgetting.png)" in md
    assert "| night 2 | 0.625 | 0.500 |" in md and "| night 1 | 0.750 | — |" in md
    assert "**rejected** because" in md
    assert json.loads((out / "results.json").read_text()) == _results()


def test_write_report_replaces_previous_and_leaves_no_temp(tmp_path):
    first = _results()
    write_report(first, tmp_path / "report")
    (tmp_path / "report" / "stale.txt").write_text("old")
    second = _results() | {"R": None, "n_facts": 3}
    out = write_report(second, tmp_path / "report")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["accuracy.png", "report.md", "results.json"]  # no R, no forgetting plot
    assert json.loads((out / "results.json").read_text())["n_facts"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_per_arm_r_matrices(tmp_path):
    r = _results() | {"R": {"adapter": [[1.0, None], [0.5, 1.0]],
                            "adapter+memory": [[1.0, None], [1.0, 1.0]]}}
    md = render_markdown(r)
    assert "R (adapter)" in md and "R (adapter+memory)" in md
    out = write_report(r, tmp_path / "x")
    assert (out / "forgetting.png").stat().st_size > 5000
