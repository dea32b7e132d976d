"""Loop detection for streamed generation: notice when an answer starts repeating itself.

Owns: `LoopDetector`, fed one generated token's text at a time by `Runtime.stream` (every backend
goes through it), which says where the repeated tail begins once the text loops. Two rules:
- a finished sentence (or line) that already appeared in this answer, compared case-, punctuation-
  and list-marker-insensitively, when it (or the run of sentences it ends, repeated as a run)
  has at least `min_sentence_words` words ("I'm happy to help you ..." x7; "8. Monday" ...
  "12. Friday" after "1. Monday" ... "7. Sunday");
- the last `ngram` tokens already appeared, in the same order, earlier in this answer (loops
  with no sentence punctuation, or sentences too long for the first rule to see quickly).
Knows nothing about models, sampling or chat: it sees strings.

Cost per token: one dict lookup on a tuple of `ngram` strings, and a regex scan of the unfinished
sentence; nothing grows faster than the answer.
"""
from __future__ import annotations

import re

NGRAM = 20  # tokens; shorter repeats are common in legit lists ("2. Add the ...", "3. Add the ...")
MIN_SENTENCE_WORDS = 5  # "Stir well." or "Mix well." may honestly come twice in a recipe
SNAP_CHARS = 300  # a token-rule cut moves back to a sentence start at most this far

# A sentence ends after . ! ? (and closing quotes/brackets) before whitespace, or at a newline.
_END = re.compile(r"[.!?][\"')\]*]*(?=\s)|\n")
# What a list item or markdown line starts with: "1.", "2)", "-", "*", "•", "#", ">", "**".
_MARKER = re.compile(r"^(?:\s|[-*•#>]|\d+[.)])+")
_WORD = re.compile(r"\w+(?:['’]\w+)*")


def normalize_sentence(text: str) -> str:
    """Lower-case words of a sentence without its list marker, punctuation or markdown."""
    return " ".join(_WORD.findall(_MARKER.sub("", text).lower()))


class LoopDetector:
    """Feed it the text of each generated token in order; `feed` returns the character offset
    where the repeated part begins the first time the text loops (then `cut` keeps it), else None.
    Offsets index the concatenation of everything fed."""

    def __init__(self, ngram: int = NGRAM, min_sentence_words: int = MIN_SENTENCE_WORDS):
        if ngram < 2:
            raise ValueError(f"ngram must be at least 2 tokens, got {ngram}")
        if min_sentence_words < 1:
            raise ValueError(f"min_sentence_words must be at least 1, got {min_sentence_words}")
        self.ngram = ngram
        self.min_sentence_words = min_sentence_words
        self.text = ""
        self.cut: int | None = None
        self.rule = ""  # "sentence" | "ngram" once a loop is found
        self._tokens: list[str] = []
        self._starts: list[int] = []  # character offset where each token begins
        self._ngrams: dict[tuple[str, ...], int] = {}  # n-gram -> index of its first token
        self._keys: list[str] = []  # each finished sentence, normalized
        self._key_starts: list[int] = []  # where each of them begins
        self._seen: dict[str, list[int]] = {}  # sentence -> its indices in _keys
        self._sentence_start = 0  # where the unfinished sentence begins
        self._boundaries = [0]  # where each finished sentence ends, ascending

    def feed(self, piece: str) -> int | None:
        if self.cut is not None:
            return self.cut
        self._starts.append(len(self.text))
        self._tokens.append(piece)
        self.text += piece
        cut = self._sentence_rule()
        if cut is None:
            cut = self._ngram_rule()
        if cut is not None:
            self.cut = cut
        return self.cut

    def _sentence_rule(self) -> int | None:
        for m in _END.finditer(self.text, self._sentence_start):
            start, end = self._sentence_start, m.end() if m.group() != "\n" else m.start()
            if m.group() != "\n" and not _MARKER.sub("", self.text[start:end]).strip(" .)"):
                continue  # "2." opening a list item ends nothing
            self._sentence_start = max(end, m.end())
            self._boundaries.append(end)
            key = normalize_sentence(self.text[start:end])
            if key:  # blank lines are no sentence
                cut = self._repeated_run(key, start)
                if cut is not None:
                    self.rule = "sentence"
                    return cut
        return None

    def _repeated_run(self, key: str, start: int) -> int | None:
        """Does the run of sentences ending with this one repeat an earlier run, with at least
        min_sentence_words words in it? One long sentence is enough; short list items count
        together ("8. Monday" ... "12. Friday" after "1. Monday" ... "7. Sunday")."""
        keys, m = self._keys, len(self._keys)
        keys.append(key)
        self._key_starts.append(start)
        earlier = self._seen.setdefault(key, [])
        for e in reversed(earlier):
            words, t = 0, 0
            while t <= e and keys[m - t] == keys[e - t]:
                words += len(keys[m - t].split())
                if words >= self.min_sentence_words:
                    return self._key_starts[m - t]  # the repeat begins where this run begins
                t += 1
        earlier.append(m)
        return None

    def _ngram_rule(self) -> int | None:
        n = len(self._tokens)
        if n < self.ngram:
            return None
        i = n - self.ngram
        key = tuple(self._tokens[i:])
        j = self._ngrams.setdefault(key, i)
        if j == i:
            return None
        self.rule = "ngram"
        return self._snap(self._starts[i], self._starts[j])

    def _snap(self, cut: int, first: int) -> int:
        """Move a token-rule cut back to the nearest sentence start, so the kept answer does not
        end mid-sentence; never before the first copy begins, never more than SNAP_CHARS."""
        lo = max(first, cut - SNAP_CHARS)
        for b in reversed(self._boundaries):
            if b <= cut:
                return b if b >= lo else cut
        return cut

