import json
import os
import stat

import pytest

from assistant.config import Settings, data_dir
from assistant.errors import ReverieError


def test_data_dir_created_private(reverie_home):
    path = data_dir()
    assert path == reverie_home
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_settings_defaults_and_overrides(reverie_home):
    s = Settings.load(data_dir(), max_tokens=32)
    assert s.max_tokens == 32 and s.backend == "auto"
    s.save(data_dir())
    assert stat.S_IMODE(os.stat(reverie_home / "settings.json").st_mode) == 0o600
    assert Settings.load(data_dir()).max_tokens == 32


@pytest.mark.parametrize("kw, word", [({"backend": "cuda"}, "unknown backend"),
                                      ({"n_ctx": 10}, "n_ctx"), ({"max_tokens": 0}, "max_tokens"),
                                      ({"repeat_penalty": 0.9}, "repeat_penalty"),
                                      ({"repeat_penalty": 0}, "repeat_penalty"),
                                      ({"repeat_penalty": 2.5}, "repeat_penalty"),
                                      ({"repeat_penalty": "1.2"}, "repeat_penalty"),
                                      ({"repeat_penalty": True}, "repeat_penalty"),
                                      ({"loop_stop": "yes"}, "loop_stop")])
def test_settings_validation(kw, word):
    with pytest.raises(ReverieError, match=word):
        Settings(**kw)


def test_chat_generation_config_is_greedy_with_penalty_and_loop_stop(reverie_home):
    data_dir()
    cfg = Settings().generation_config()
    # greedy so runs stay comparable; the penalty and the loop stop keep answers from looping
    assert cfg.temperature == 0 and cfg.top_k == 1
    assert 1.0 < cfg.repeat_penalty <= 1.5 and cfg.loop_stop and cfg.max_tokens == Settings().max_tokens
    (reverie_home / "settings.json").write_text(json.dumps({"repeat_penalty": 1, "loop_stop": False}))
    cfg = Settings.load(data_dir(), max_tokens=64).generation_config()
    assert (cfg.repeat_penalty, cfg.loop_stop, cfg.max_tokens) == (1.0, False, 64)
    (reverie_home / "settings.json").write_text(json.dumps({"repeat_penalty": 0.5}))
    with pytest.raises(ReverieError, match="repeat_penalty must be a number from 1.0"):
        Settings.load(data_dir())


def test_settings_file_errors(reverie_home):
    home = data_dir()
    (home / "settings.json").write_text("{not json")
    with pytest.raises(ReverieError, match="not valid JSON"):
        Settings.load(home)
    (home / "settings.json").write_text(json.dumps({"colour": "blue"}))
    with pytest.raises(ReverieError, match="unknown settings: colour"):
        Settings.load(home)


def test_old_settings_with_merge_on_promote_under_extra_still_load(reverie_home):
    """Before merge_on_promote was a typed setting it lived in an untyped "extra" dict."""
    path = data_dir() / "settings.json"
    path.write_text(json.dumps({"max_tokens": 64, "extra": {"merge_on_promote": "F16", "x": 1}}))
    s = Settings.load(reverie_home)
    assert s.merge_on_promote == "F16" and s.max_tokens == 64
    s.save(reverie_home)
    saved = json.loads(path.read_text())
    assert "extra" not in saved and saved["merge_on_promote"] == "F16"
    assert Settings.load(reverie_home) == s
    for extra, want in (({}, "Q8_0"), ({"merge_on_promote": None}, ""), ({"merge_on_promote": "none"}, "none")):
        path.write_text(json.dumps({"extra": extra}))
        assert Settings.load(reverie_home).merge_on_promote == want
    path.write_text(json.dumps({"merge_on_promote": "F16", "extra": {"merge_on_promote": "Q8_0"}}))
    assert Settings.load(reverie_home).merge_on_promote == "F16"  # the typed setting wins
    with pytest.raises(ReverieError, match="merge_on_promote"):
        Settings(merge_on_promote=8)
