"""assistant.adapters_api opens the ledger for one call and closes it, on errors too."""
from __future__ import annotations

import pytest

from assistant import adapters_api
from memory.ledger import Ledger, LedgerError


def test_every_call_closes_the_ledger_it_opened(reverie_home, monkeypatch):
    opened, closed = [], []
    init, close = Ledger.__init__, Ledger.close
    monkeypatch.setattr(Ledger, "__init__", lambda self, home: (opened.append(self), init(self, home))[1])
    monkeypatch.setattr(Ledger, "close", lambda self: (closed.append(self), close(self))[1])
    assert adapters_api.feedback_list(reverie_home) == []
    assert adapters_api.adapters_list(reverie_home) == []
    for call in (lambda: adapters_api.adapter_get(reverie_home, "nope"),
                 lambda: adapters_api.feedback_remove(reverie_home, "nope"),
                 lambda: adapters_api.adapter_promote(reverie_home, "nope")):
        with pytest.raises(LedgerError):
            call()
    assert len(opened) == 5 and closed == opened
