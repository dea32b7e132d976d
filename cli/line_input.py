"""Reading the chat's input lines: prompt_toolkit in a terminal (line editing, arrow-up history,
Ctrl-A/E, Ctrl-R search), plain lines from a pipe.

`read()` returns the line; raises EOFError at the end of input (Ctrl-D, or the pipe closed) and
KeyboardInterrupt when Ctrl-C is pressed at the prompt.
"""
from __future__ import annotations

import sys


class LineReader:
    def __init__(self, prompt: str = "you> ", history: list[str] | None = None):
        self.prompt = prompt
        self.interactive = sys.stdin.isatty()
        self._session = None
        if self.interactive and sys.stdout.isatty():
            try:
                from prompt_toolkit import PromptSession
                from prompt_toolkit.history import InMemoryHistory
            except ImportError:  # pragma: no cover - a dependency; input() below still edits lines
                PromptSession = None
            if PromptSession is not None:
                # history lives in memory, seeded from the ledger: no second file to forget or wipe
                hist = InMemoryHistory()
                for line in history or []:
                    hist.append_string(line)
                self._session = PromptSession(history=hist)
        if self.interactive and self._session is None:
            try:
                import readline  # noqa: F401 - gives input() line editing where it exists
            except ImportError:  # pragma: no cover - Windows
                pass

    def read(self) -> str:
        if self._session is not None:
            return self._session.prompt(self.prompt)
        if self.interactive:
            return input(self.prompt)
        line = sys.stdin.readline()
        if line == "":
            raise EOFError
        return line
