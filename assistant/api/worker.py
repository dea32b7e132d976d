"""The one model behind `reverie serve`: a single thread that owns the ChatSession.

Owns: the queue of requests (one answer at a time, in arrival order — two clients streaming at
once both complete, one after the other), loading the requested model (one loaded at a time;
a model that cannot load is a 503 and the previous one stays), putting a request's messages into
the session (history, system prompt, memory and recording switches, answer length), stopping an
answer whose client went away, and which conversation a chat UI's growing message list continues.

Every answer goes through `ChatSession.send`, the path `reverie chat` takes: memory recall, the
promoted adapter (re-read from the ledger each turn, so a promotion or rollback is picked up
without a restart) and the turn recorded in the ledger. Knows nothing about HTTP: events go back
to the web layer through a per-request asyncio queue.
"""
from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
import traceback
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from assistant.errors import domain_errors

from .schema import ApiError, ChatRequest

REMEMBERED = 4096  # conversations and completion ids kept for continuation and feedback
# Streamed text goes to the web side at most this often (the first piece at once): waking the
# event loop and writing a chunk per token took CPU from the decode threads — on 2 cores,
# per-token chunks streamed at 0.6x the in-process chat (bench/serve_bench.py).
FLUSH_S = 0.05


class _ClientGone(Exception):
    """Raised inside the decode loop when the request was cancelled: frees the model at once."""


class Job:
    """One request on its way through the worker. Events: ("start", info), ("delta", text),
    ("done", result) or ("error", ApiError)."""

    def __init__(self, req: ChatRequest, completion_id: str, loop):
        import asyncio

        self.req = req
        self.completion_id = completion_id
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()
        self._loop = loop
        self._text: list[str] = []
        self._flushed_at: float | None = None

    def text(self, piece: str) -> None:
        """Buffer streamed text; hand it over when FLUSH_S has passed since the last hand-over."""
        self._text.append(piece)
        now = time.monotonic()
        if self._flushed_at is None or now - self._flushed_at >= FLUSH_S:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self._text:
            self.emit("delta", "".join(self._text))
            self._text = []
            self._flushed_at = now or time.monotonic()

    def emit(self, kind: str, data=None) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, (kind, data))
        except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
            self.cancel.set()


class ModelWorker:
    def __init__(self, home: Path, model: str | None = None, backend: str = "auto",
                 threads: int | None = None):
        from assistant.config import Settings
        from quant.registry import Registry

        self.home = Path(home)
        self.backend = backend
        self.threads = threads
        self.settings = Settings.load(self.home, threads=threads)
        self.n_ctx = self.settings.n_ctx
        # resolved now: an unknown --model is an error before the server starts
        self.default_model = Registry(self.home).get(model).name
        self._default_spec = model or self.default_model  # --model may be a .gguf path
        self.status = "starting"  # starting | ready | error
        self.load_error = ""
        self.busy = False
        self.queued = 0
        self.cancelled = 0
        self.stopping = False
        self._session = None
        self._jobs: set[Job] = set()
        self._conversations: OrderedDict[str, str] = OrderedDict()
        self._turns: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reverie-model")

    # --- models ---------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Loadable registered models, the served default first."""
        from quant.registry import Registry

        names = [m.name for m in Registry(self.home).list() if m.present]
        return [self.default_model] + [n for n in names if n != self.default_model]

    def check_model(self, name: str | None) -> None:
        """404 for a name that is not registered. Paths are never taken from a request."""
        from quant.registry import Registry

        if name is None or name == self.default_model:
            return
        known = Registry(self.home).names()
        if name not in known:
            raise ApiError(404, f"The model {name!r} does not exist; GET /v1/models lists the "
                                f"models this server has: {', '.join(self.models())}.",
                           "model", "model_not_found")

    def start(self) -> Future:
        """Load the default model and warm memory recall, on the model thread."""
        return self._pool.submit(self._start)

    def _start(self) -> None:
        try:
            s = self._session_for(self.default_model)
        except ApiError as e:
            self.status, self.load_error = "error", e.message
            return
        except Exception as e:  # noqa: BLE001 - the server still starts; requests get the error
            traceback.print_exc(file=sys.stderr)
            self.status, self.load_error = "error", f"{type(e).__name__}: {e}"
            return
        try:  # the embedder's first load takes seconds: pay it before the first request
            from memory.embedder import embed

            s.services.memory  # noqa: B018 - opens (and heals) the store
            embed(["warm up"])
        except Exception as e:  # noqa: BLE001 - recall reports its own errors per request
            print(f"reverie serve: memory recall is not ready: {e}", file=sys.stderr)
        self.status = "ready"

    def _session_for(self, name: str):
        from assistant.chat import ChatSession

        if self._session is not None and self._session.runtime.model.name == name:
            return self._session
        try:
            # record=False while idle: a conversation row is made per request that records
            spec = self._default_spec if name == self.default_model else name
            new = ChatSession(self.home, model=spec, backend=self.backend, threads=self.threads,
                              record=False)
        except domain_errors() as e:
            raise ApiError(503, f"model {name!r} cannot be loaded: {e}", "model",
                           "model_unavailable") from e
        if self._session is not None:
            self._session.close()
        self._session = new
        if self.status == "error" and name == self.default_model:  # loads now
            self.status, self.load_error = "ready", ""
        return new

    # --- requests -------------------------------------------------------------------------
    def submit(self, req: ChatRequest, completion_id: str, loop) -> Job:
        if self.stopping:
            raise ApiError(503, "the server is shutting down; send the request again when it is "
                                "back.", code="shutting_down")
        job = Job(req, completion_id, loop)
        with self._lock:
            self._jobs.add(job)
            self.queued += 1
        self._pool.submit(self._run, job)
        return job

    def turn_for(self, completion_id: str) -> str | None:
        with self._lock:
            return self._turns.get(completion_id)

    def _run(self, job: Job) -> None:
        with self._lock:
            self.queued -= 1
        try:
            if job.cancel.is_set():  # the client left while queued, or the server is stopping
                raise _ClientGone()
            self.busy = True
            self._answer(job)
        except _ClientGone:
            self.cancelled += 1
            # the client is gone (nobody reads this), or the server is stopping (the stream ends
            # with this error instead of hanging until the shutdown timeout)
            job.emit("error", ApiError(503, "the server is shutting down; send the request again "
                                            "when it is back.", code="shutting_down"))
        except ApiError as e:
            job.emit("error", e)
        except domain_errors() as e:
            job.emit("error", ApiError(503, str(e), code="assistant_error"))
        except Exception as e:  # noqa: BLE001 - reported to the client, traceback to the log
            traceback.print_exc(file=sys.stderr)
            job.emit("error", ApiError(500, f"internal error: {type(e).__name__}: {e}"))
        finally:
            self.busy = False
            with self._lock:
                self._jobs.discard(job)

    def _answer(self, job: Job) -> None:
        req = job.req
        s = self._session_for(req.model or self.default_model)
        defaults = (s.settings.max_tokens, s.system_prompt)
        key = _conversation_key(s.runtime.model.name, req.system, req.history)
        try:
            s.record = req.record
            s.use_memory = s.settings.memory if req.memory is None else req.memory
            s.system_prompt = req.system or defaults[1]
            s.settings.max_tokens = req.max_tokens or defaults[0]
            if req.record:
                with self._lock:
                    conv = self._conversations.get(key)
                if conv is None:
                    s.new()  # a new conversation row in the ledger
                else:
                    s.conversation_id = conv
            else:
                s.conversation_id = ""
            s.history = list(req.history)
            started = False

            def on_text(piece: str) -> None:
                nonlocal started
                if job.cancel.is_set():
                    raise _ClientGone()
                if not started:
                    started = True
                    job.emit("start", self._info(s))
                if req.stream:
                    job.text(piece)

            turn = s.send(req.question, on_text=on_text)
            job.flush()
            if not started:  # an empty answer streams nothing
                job.emit("start", self._info(s))
            info = self._info(s)
            if turn.turn_id:
                after = _conversation_key(s.runtime.model.name, req.system, req.history + [
                    {"role": "user", "content": req.question},
                    {"role": "assistant", "content": turn.answer}])
                with self._lock:
                    _put(self._conversations, after, turn.conversation_id)
                    _put(self._turns, job.completion_id, turn.turn_id)
            info.update(turn_id=turn.turn_id or None, conversation_id=turn.conversation_id or None,
                        recalled=[getattr(r, "id", r) for r in turn.recalled], notes=turn.notes,
                        memory=s.use_memory, recorded=bool(turn.turn_id),
                        ttft_s=round(turn.ttft_s, 4), tokens_per_s=round(turn.tokens_per_s, 2))
            job.emit("done", {"answer": turn.answer, "prompt_tokens": turn.prompt_tokens,
                              "completion_tokens": turn.completion_tokens,
                              "finish_reason": s.runtime.last_stats.finish_reason, "info": info})
        finally:
            s.settings.max_tokens, s.system_prompt = defaults
            s.history, s.record, s.conversation_id, s.last = [], False, "", None
            s.use_memory = s.settings.memory

    @staticmethod
    def _info(s) -> dict:
        served = s.served  # the promoted adapter, as a runtime LoRA or merged (assistant.served)
        return {"model": s.runtime.model.name, "backend": s.runtime.backend,
                "adapter": served.file if served else None,
                "adapter_version": served.adapter_id if served else "none",
                "adapter_form": served.to_dict()["form"] if served else None}

    # --- shutdown -------------------------------------------------------------------------
    def stop_all(self) -> None:
        """Stop whatever is decoding and everything queued (at the next token)."""
        with self._lock:
            self.stopping = True
            for job in self._jobs:
                job.cancel.set()

    def close(self) -> None:
        """Stop everything, free the model."""
        self.stop_all()
        self._pool.submit(self._close_session)
        self._pool.shutdown(wait=True, cancel_futures=False)

    def _close_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _put(d: OrderedDict, key: str, value: str) -> None:
    d[key] = value
    d.move_to_end(key)
    while len(d) > REMEMBERED:
        d.popitem(last=False)


def _conversation_key(model: str, system: str | None, turns: list[dict]) -> str:
    """A chat UI resends the whole conversation each time: the messages before the new question
    identify the conversation its earlier answers were recorded in."""
    data = json.dumps([model, system or "", [(t["role"], t["content"].strip()) for t in turns]])
    return hashlib.sha256(data.encode()).hexdigest()
