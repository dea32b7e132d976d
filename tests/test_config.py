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
                                      ({"n_ctx": 10}, "n_ctx"), ({"max_tokens": 0}, "max_tokens")])
def test_settings_validation(kw, word):
    with pytest.raises(ReverieError, match=word):
        Settings(**kw)


def test_settings_file_errors(reverie_home):
    home = data_dir()
    (home / "settings.json").write_text("{not json")
    with pytest.raises(ReverieError, match="not valid JSON"):
        Settings.load(home)
    (home / "settings.json").write_text(json.dumps({"colour": "blue"}))
    with pytest.raises(ReverieError, match="unknown settings: colour"):
        Settings.load(home)
