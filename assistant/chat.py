"""A chat session: the model's chat template, a system prompt, memory recall, the context window,
the ledger, and slash commands.

Owns: turning a user line into a prompt that fits the context window (old turns trimmed, an
over-long message shortened — never a crash), streaming the answer, recording both turns, and the
slash commands. Knows nothing about terminals: the CLI passes an `on_text` callback and prints.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import ReverieError
from .prompting import lead_messages
from .runtime_api import open_runtime

HELP = """Commands:
  /help              this help
  /new               start a new conversation (history cleared; memories kept)
  /history           show this conversation's turns
  /why               which memories the last answer used
  /remember <fact>   store a fact about you
  /good | /bad       rate the last answer
  /fix <answer>      give a better answer to the last question
  /forget <text>     forget every memory, turn and feedback that states <text>
  /memory on|off     switch memory recall for this chat
  /quit              leave (also /exit, Ctrl-D)"""

# Room kept free in the context window beyond the answer budget: template tokens, rounding.
CONTEXT_MARGIN = 32
MAX_USER_CHARS = 100_000


class _Background:
    """A function run on a thread; result() waits for it and raises what it raised."""

    def __init__(self, fn: Callable):
        self._out = self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name="reverie-load")
        self._thread.start()

    def _run(self, fn: Callable) -> None:
        try:
            self._out = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller by result()
            self._error = e

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out

    def discard(self) -> None:
        """Wait for it and close what it made (the caller failed before using it)."""
        try:
            self.result().close()
        except BaseException:  # noqa: BLE001 - the caller's own error is the one to report
            pass


@dataclass
class TurnResult:
    answer: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    tokens_per_s: float
    total_s: float
    recalled: list = field(default_factory=list)
    trimmed_turns: int = 0
    truncated_input: bool = False
    conversation_id: str = ""
    turn_id: str = ""
    notes: list = field(default_factory=list)  # "remembered: you live in York", shown after the answer

    def to_dict(self) -> dict:
        return {
            "answer": self.answer, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "ttft_s": round(self.ttft_s, 4),
            "tokens_per_s": round(self.tokens_per_s, 2), "total_s": round(self.total_s, 4),
            "recalled": [getattr(r, "id", r) for r in self.recalled],
            "trimmed_turns": self.trimmed_turns, "truncated_input": self.truncated_input,
            "conversation_id": self.conversation_id, "notes": list(self.notes),
        }


@dataclass
class CommandResult:
    output: str = ""
    quit: bool = False
    data: dict = field(default_factory=dict)


class ChatSession:
    """One conversation with one loaded model. Memory and feedback hooks are optional services."""

    memory_example = True  # the worked example in front of recalled memories (assistant.prompting)

    def __init__(self, home: Path, model: str | None = None, backend: str = "auto",
                 use_memory: bool | None = None, use_adapter: bool = True,
                 system_prompt: str | None = None, max_tokens: int | None = None,
                 n_ctx: int | None = None, threads: int | None = None, runtime=None,
                 services=None, record: bool = True):
        from .config import Settings
        from memory.ledger import Ledger

        self.home = Path(home)
        self.settings = Settings.load(self.home, backend=None if backend == "auto" else backend,
                                      n_ctx=n_ctx, max_tokens=max_tokens, threads=threads)
        self.backend = backend if backend != "auto" else self.settings.backend
        self.system_prompt = system_prompt or self.settings.system_prompt
        self.use_memory = self.settings.memory if use_memory is None else use_memory
        self.use_adapter = use_adapter
        # record=False: answer without leaving a trace (no turns, memories or facts stored)
        self.record = record
        self.ledger = Ledger(self.home)
        from .services import Services

        self.services = services or Services(self.home, self.ledger)
        self.served = None  # the adapter version being served, in which form (assistant.served)
        self.base_info = runtime.model if runtime is not None else None
        try:
            self.runtime = runtime or self._load_runtime(model)
        except BaseException:
            self.ledger.close()
            raise
        self.history: list[dict] = []
        self.conversation_id = self._new_conversation()
        self.last: TurnResult | None = None
        self.last_question: str = ""
        self._sync_adapter()

    def _load_runtime(self, model: str | None):
        """Load the model (with the promoted adapter, if any) on a thread while the memory store
        opens here, then start evaluating the prompt's fixed head (system prompt, worked example)
        while the first turn recalls. llama.cpp holds no GIL while it loads and evaluates, and
        opening the memory is mostly importing chromadb (~0.5 s of Python): in a cold `reverie ask`
        the two used to run one after the other (bench/startup_bench.py)."""
        from quant.errors import QuantError

        from .runtime_api import find_model, prepare_runtime

        info = find_model(self.home, model)
        self.base_info = info
        # what a promoted adapter is served as (assistant.served): the base + its runtime LoRA,
        # or the merged file the gate measured, loaded instead of the base
        want = self.services.served(info) if self.use_adapter else None
        target = want.model_info(info) if want else info
        adapter = want.adapter if want else None
        # the imports happen here, and the head is rendered here: the thread below imports nothing
        fmt = prepare_runtime(target, self.backend, adapter)
        head = fmt.render(lead_messages(self.system_prompt, self.use_memory and self.memory_example))
        opts = dict(n_ctx=self.settings.n_ctx, threads=self.settings.threads)

        def load_and_prefill():
            try:
                rt = open_runtime(self.home, target, self.backend, adapter=adapter, **opts)
                self.served = want
            except QuantError:
                if want is None:
                    raise
                # as when the adapter was applied after the load: the base loads, and
                # _sync_adapter says what is wrong with the adapter (rollback, --no-adapter)
                rt = open_runtime(self.home, info, self.backend, **opts)
            if hasattr(rt, "prefill") and rt.chat_format == fmt:  # only llama.cpp offers it
                rt.prefill(head)
            return rt

        loading = _Background(load_and_prefill)
        try:
            if self.use_memory or self.record:
                self.services.memory  # noqa: B018 - opens the store and its index meanwhile
        except BaseException:
            loading.discard()
            raise
        return loading.result()

    # --- conversation -----------------------------------------------------------------------
    def _new_conversation(self) -> str:
        if not self.record:
            return ""
        return self.ledger.new_conversation(
            model=self.runtime.model.name,
            meta=json.dumps({"backend": self.runtime.backend, "memory": self.use_memory}))

    def new(self) -> None:
        self.history = []
        self.last = None
        self.conversation_id = self._new_conversation()

    def _sync_adapter(self) -> None:
        """Pick up a newly promoted adapter (or a rollback, or a forget) between turns, without
        a restart: the served form is read from the ledger every turn."""
        from quant.errors import QuantError

        want = self.services.served(self.base_info) if self.use_adapter else None
        try:
            self._serve(want)
        except QuantError as e:
            raise ReverieError(f"{e} The promoted adapter cannot be used: go back to the previous "
                               "one with `reverie adapters rollback`, or chat without it (--no-adapter).") from e

    def _serve(self, want) -> None:
        """Switch the runtime to a served form (None: the bare base). A runtime LoRA is swapped
        in place; a merged file is another model file, so the runtime is reopened on it."""
        path = want.model_path if want else self.base_info.path
        adapter = want.adapter if want else None
        if path != self.runtime.model.path:
            target = want.model_info(self.base_info) if want else self.base_info
            new = open_runtime(self.home, target, self.runtime.backend, adapter=adapter,
                               n_ctx=self.settings.n_ctx, threads=self.settings.threads)
            self.runtime.close()
            self.runtime = new
        elif adapter != self.runtime.adapter_path:
            self.runtime.set_adapter(adapter)
        self.served = want

    # --- prompt building --------------------------------------------------------------------
    def build_messages(self, user_text: str, recalled_block: str = "") -> tuple[list[dict], int, bool]:
        """Messages that fit in n_ctx − max_tokens: oldest turns dropped first, then the worked
        example, then the memories, then the user text shortened (its head kept). Layout in
        assistant.prompting. Returns (messages, turns dropped, input truncated)."""
        from .prompting import messages_for

        rt = self.runtime
        budget = rt.n_ctx - self.settings.max_tokens - CONTEXT_MARGIN
        history = list(self.history)
        dropped = 0

        def build(hist, block=recalled_block, example=self.memory_example):
            return messages_for(self.system_prompt, user_text, block, hist, example=example)

        def size(msgs):
            return rt.count_tokens(rt.format_chat(msgs))

        while history and size(build(history)) > budget:
            history = history[2:] if len(history) >= 2 else []
            dropped += 2
        msgs = build(history)
        if size(msgs) > budget and recalled_block:
            msgs = build([], example=False)
        if size(msgs) > budget:
            msgs = build([], block="")
        truncated = False
        over = size(msgs) - budget
        if over > 0:
            ids = rt.tokenize(msgs[-1]["content"], add_bos=False)
            keep = max(1, len(ids) - over - 8)
            msgs[-1] = {"role": "user", "content": rt.detokenize(ids[:keep])}
            truncated = True
        return msgs, dropped, truncated

    # --- a turn ------------------------------------------------------------------------------
    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> TurnResult:
        text = (text or "").strip()
        if not text:
            raise ReverieError("empty message; type something, or /help for commands.")
        if len(text) > MAX_USER_CHARS:
            text = text[:MAX_USER_CHARS]
        self._sync_adapter()
        recalled, block = [], ""
        notes = []
        if self.use_memory:
            recalled, block = self.services.recall(text, self.runtime)
            if self.served and self.services.newer_than_adapter(recalled, self.runtime):
                # The adapter learned an older value of something memory now holds newer: until
                # the next sleep retrains, this turn is answered without it (the next turn's
                # _sync_adapter puts it back).
                self._serve(None)
                notes.append("answered without the adapter: a newer memory replaces what it learned")
        messages, dropped, truncated = self.build_messages(text, block)
        prompt = self.runtime.format_chat(messages)
        cfg = self.settings.generation_config()
        pieces = []
        for piece in self.runtime.stream(prompt, cfg):
            pieces.append(piece)
            if on_text:
                on_text(piece)
        answer = self.runtime.last_stats.trimmed("".join(pieces)).strip()
        st = self.runtime.last_stats
        meta = {"recalled": [getattr(r, "id", r) for r in recalled], "backend": self.runtime.backend,
                "model": self.runtime.model.name,
                "adapter": self.served.adapter_id if self.served else None,
                "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens}
        asst_id = ""
        if self.record:
            _, asst_turn, stored = self.services.record_exchange(self.conversation_id, text, answer,
                                                                 json.dumps(meta))
            asst_id = asst_turn.id
            notes += stored
        # history keeps what the user said; recalled memories are fetched afresh each turn
        self.history += [{"role": "user", "content": text},
                         {"role": "assistant", "content": answer}]
        self.last_question = text
        self.last = TurnResult(answer, st.prompt_tokens, st.completion_tokens, st.ttft_s,
                               st.tokens_per_s, st.total_s, recalled, dropped, truncated,
                               self.conversation_id, asst_id, notes)
        return self.last

    # --- slash commands ----------------------------------------------------------------------
    def command(self, line: str) -> CommandResult:
        name, _, arg = line.strip().partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("/quit", "/exit", "/q"):
            return CommandResult(quit=True)
        if name in ("/help", "/?"):
            return CommandResult(HELP)
        if name == "/new":
            self.new()
            return CommandResult(f"new conversation {self.conversation_id}")
        if name == "/history":
            turns = self.ledger.turns(self.conversation_id)
            if not turns:
                return CommandResult("(no turns yet)")
            return CommandResult("\n".join(f"{t.role}: {t.content}" for t in turns))
        if name == "/memory":
            if arg not in ("on", "off"):
                return CommandResult(f"memory recall is {'on' if self.use_memory else 'off'}; "
                                     "use /memory on or /memory off")
            self.use_memory = arg == "on"
            return CommandResult(f"memory recall {arg}")
        if name == "/why":
            if self.last is None:
                return CommandResult("no answer yet.")
            if not self.last.recalled:
                return CommandResult("the last answer used no memories"
                                     + ("" if self.use_memory else " (memory recall is off)") + ".")
            return CommandResult("\n".join(self.services.describe(r) for r in self.last.recalled))
        handler = self.services.command_handler(name)
        if handler is None:
            return CommandResult(f"unknown command {name}; /help lists them.")
        return CommandResult(handler(self, arg))

    def close(self) -> None:
        self.runtime.close()
        self.ledger.close()
