"""Training data from what the ledger holds: facts, corrections, good answers, anchors, replay.

Owns: the input dataclasses the caller fills from the ledger, turning them into chat-format
examples (each fact through several generated phrasings), keeping evaluation probes and
tombstoned facts out, mixing replay and anchors, the held-out split for early stopping, preference
pairs saved for later, the dataset hash used for provenance, and the `--dry-run` summary.
Does not read the ledger and does not know the model: plain dataclasses in, plain data out.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from .config import TrainConfig
from .errors import LoraError
from common.files import atomic_write_text
from .phrasings import is_near, normalize, phrase


@dataclass(frozen=True)
class Fact:
    id: str
    text: str
    subject: str = ""
    created: str = ""


@dataclass(frozen=True)
class Correction:
    id: str
    prompt: str
    bad_answer: str
    better_answer: str


@dataclass(frozen=True)
class GoodAnswer:
    id: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class Anchor:
    prompt: str
    answer: str


@dataclass
class Example:
    messages: list[dict]
    kind: str  # fact | correction | good | anchor | replay
    source_id: str = ""

    def to_dict(self) -> dict:
        return {"messages": self.messages, "kind": self.kind, "source_id": self.source_id}

    @classmethod
    def from_dict(cls, d: dict) -> "Example":
        return cls(messages=list(d["messages"]), kind=d.get("kind", "replay"),
                   source_id=d.get("source_id", ""))

    def text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)


@dataclass(frozen=True)
class PreferencePair:
    """A (preferred, rejected) answer to one prompt, from a /fix: trained with the odds-ratio
    term of the objective (lora.loop.odds_ratio_loss). `system` is the prompt it was asked under."""
    id: str
    prompt: str
    chosen: str
    rejected: str
    system: str = ""

    def examples(self) -> tuple["Example", "Example"]:
        return (Example(_msgs(self.system, self.prompt, self.chosen), "chosen", self.id),
                Example(_msgs(self.system, self.prompt, self.rejected), "rejected", self.id))


@dataclass
class Dataset:
    train: list[Example]
    holdout: list[Example]
    pairs: list[PreferencePair]
    fact_ids: list[str]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count

    @property
    def hash(self) -> str:
        payload = {"train": [e.to_dict() for e in self.train],
                   "holdout": [e.to_dict() for e in self.holdout],
                   "pairs": [asdict(p) for p in self.pairs]}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.train:
            out[e.kind] = out.get(e.kind, 0) + 1
        return out

    @property
    def new_examples(self) -> int:
        """Examples carrying new knowledge (not replay or anchors): zero means nothing to train."""
        c = self.counts()
        return c.get("fact", 0) + c.get("correction", 0) + c.get("good", 0)

    def dry_run_summary(self, config: TrainConfig | None = None, limit: int = 5) -> str:
        c = self.counts()
        lines = [f"dataset {self.hash[:12]}: {len(self.train)} training examples "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(c.items())) or 'none'}), "
                 f"{len(self.holdout)} held out for early stopping, {len(self.pairs)} preference pairs",
                 f"facts: {len(self.fact_ids)} ({', '.join(self.fact_ids[:10])}"
                 f"{', ...' if len(self.fact_ids) > 10 else ''})"]
        if self.dropped:
            lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())))
        if config is not None:
            lines.append(f"would train {config.total_steps(len(self.train))} steps, batch "
                         f"{config.batch_size}, rank {config.rank}, lr {config.learning_rate}")
        for e in self.train[:limit]:
            user = next((m["content"] for m in e.messages if m["role"] == "user"), "")
            bot = next((m["content"] for m in e.messages if m["role"] == "assistant"), "")
            lines.append(f"  [{e.kind}] {user!r} -> {bot!r}")
        if self.new_examples == 0:
            lines.append("nothing new to learn: no facts, corrections or good answers.")
        return "\n".join(lines)

    def save(self, directory: Path) -> Path:
        """train.jsonl, holdout.jsonl, preferences.jsonl and dataset.json, each written atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        dump = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # noqa: E731
        atomic_write_text(d / "train.jsonl", dump(e.to_dict() for e in self.train))
        atomic_write_text(d / "holdout.jsonl", dump(e.to_dict() for e in self.holdout))
        atomic_write_text(d / "preferences.jsonl", dump(asdict(p) for p in self.pairs))
        atomic_write_text(d / "dataset.json", json.dumps(
            {"hash": self.hash, "fact_ids": self.fact_ids, "counts": self.counts(),
             "dropped": self.dropped}, indent=2, ensure_ascii=False) + "\n")
        return d


def _msgs(system: str, user: str, assistant: str) -> list[dict]:
    out = [{"role": "system", "content": system}] if system else []
    return out + [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _excluded(question: str, exclude: list[str]) -> bool:
    return any(is_near(question, q) for q in exclude)


def build_dataset(facts: Iterable[Fact] = (), corrections: Iterable[Correction] = (),
                  good_answers: Iterable[GoodAnswer] = (), anchors: Iterable[Anchor] = (),
                  replay: Iterable[Example | dict] = (), *, system_prompt: str = "",
                  exclude_questions: Iterable[str] = (), tombstoned_ids: Iterable[str] = (),
                  tombstoned_texts: Iterable[str] = (), config: TrainConfig | None = None,
                  phrasings_per_fact: int = 6, style=None) -> Dataset:
    """Build the training set. Deterministic: the same inputs and config.seed give the same hash.

    `style` (lora.style.Style): the user's answering habits. Every answer trained on follows
    them, and the anchors — the base model's own answers — are restyled and trained as "habit"
    examples instead of held to the base's distribution, so the adapter keeps the habits on any
    question, not only on the ones the user corrected."""
    from .style import apply_style

    styled = (lambda text: apply_style(style, text)) if style is not None and not style.empty \
        else (lambda text: text)
    config = config or TrainConfig()
    if phrasings_per_fact < 1:
        raise LoraError(f"phrasings_per_fact must be >= 1 (got {phrasings_per_fact}).")
    rng = random.Random(config.seed)
    exclude = [q for q in exclude_questions if q and q.strip()]
    dead_ids = set(tombstoned_ids)
    dead_texts = {normalize(t) for t in tombstoned_texts if t.strip()}
    dropped: dict[str, int] = {}

    def drop(reason: str, n: int = 1):
        dropped[reason] = dropped.get(reason, 0) + n

    facts = list(facts)
    dead_values = set()  # values of forgotten facts: nothing that says them may be trained on
    live: list[Fact] = []
    seen = set()
    for f in facts:
        if not isinstance(f, Fact):
            raise LoraError(f"facts must be lora.Fact objects, got {type(f).__name__}.")
        if f.id in dead_ids or normalize(f.text) in dead_texts:
            v = phrase(f.text, f.subject).value
            if len(v) >= 3:
                dead_values.add(v.lower())
            drop("tombstoned fact")
            continue
        if normalize(f.text) in seen:
            drop("duplicate fact")
            continue
        seen.add(normalize(f.text))
        live.append(f)
    for t in tombstoned_texts:  # a tombstone may name a fact the caller no longer passes in
        v = phrase(t).value
        if len(v) >= 3:
            dead_values.add(v.lower())

    def mentions_dead(text: str) -> bool:
        low = text.lower()
        return any(v in low for v in dead_values)

    new: list[Example] = []
    holdout: list[Example] = []
    for f in sorted(live, key=lambda f: f.id):
        p = phrase(f.text, f.subject)
        qs = [q for q in p.questions if not _excluded(q, exclude)]
        drop("probe-like phrasing", len(p.questions) - len(qs))
        qs = qs[:phrasings_per_fact]
        if not qs:
            # every generated phrasing is a probe: teach the statement itself instead
            qs = ["Remember this about me: " + f.text.strip()]
        exs = [Example(_msgs(system_prompt, q, styled(p.answer)), "fact", f.id) for q in qs]
        # hold one phrasing of some facts back: early stopping watches recall on unseen wording
        if len(exs) >= 3 and config.holdout_fraction > 0 and rng.random() < config.holdout_fraction * 3:
            holdout.append(exs.pop(rng.randrange(len(exs))))
        new.extend(exs)

    pairs: list[PreferencePair] = []
    for c in corrections:
        if mentions_dead(c.prompt + " " + c.better_answer):
            drop("mentions a tombstoned fact")
            continue
        if _excluded(c.prompt, exclude):
            drop("probe-like prompt")
            continue
        new.append(Example(_msgs(system_prompt, c.prompt, styled(c.better_answer)), "correction",
                           c.id))
        better = styled(c.better_answer)
        if c.bad_answer.strip() and normalize(c.bad_answer) != normalize(better):
            pairs.append(PreferencePair(c.id, c.prompt, better, c.bad_answer, system_prompt))
    for g in good_answers:
        if mentions_dead(g.prompt + " " + g.answer):
            drop("mentions a tombstoned fact")
            continue
        if _excluded(g.prompt, exclude):
            drop("probe-like prompt")
            continue
        new.append(Example(_msgs(system_prompt, g.prompt, styled(g.answer)), "good", g.id))

    n_new = len(new)
    old = []
    for r in replay:
        e = r if isinstance(r, Example) else Example.from_dict(r)
        if e.source_id in dead_ids or mentions_dead(e.text()):
            drop("replay of a tombstoned fact")
            continue
        if any(_excluded(m["content"], exclude) for m in e.messages if m["role"] == "user"):
            drop("probe-like replay")
            continue
        old.append(Example(list(e.messages), "replay", e.source_id))
    k = min(len(old), round(config.replay_ratio * n_new))
    mixed = new + rng.sample(old, k)
    anchors = list(anchors)
    k = min(len(anchors), round(config.anchor_ratio * n_new))
    chosen = rng.sample(anchors, k)
    habits = []
    if style is not None and not style.empty:
        # With a style, the rest of the base model's answers are restyled into "habit" examples
        # (the habit on any question), while the chosen anchors still hold the base's whole
        # distribution (KL) on their own prompts: every answer in the user's style cost 6.7
        # general points and a 1.58x perplexity on the dev preferences without them.
        rest = [a for a in anchors if a not in chosen]
        habits = [Example(_msgs(system_prompt, a.prompt, styled(a.answer)), "habit")
                  for a in rest[: max(round(config.habit_ratio * n_new), 1)]]
    for a in chosen:
        mixed.append(Example(_msgs(system_prompt, a.prompt, a.answer), "anchor"))
    mixed.extend(habits)
    rng.shuffle(mixed)
    return Dataset(train=mixed, holdout=holdout, pairs=pairs,
                   fact_ids=sorted(f.id for f in live), dropped=dropped)
