"""The OpenAI chat-completions wire format, as `reverie serve` speaks it.

Owns: validating a request body into a `ChatRequest` (400s name the offending field), and the
JSON shapes going back — completion, stream chunk, usage, model list, error. Pure functions:
no model, no ledger, no web framework.

Decoding stays reverie's own (greedy, with the chat's repetition penalty and loop stop) so a
served answer is the answer `reverie chat` gives; sampling fields (temperature, top_p, seed, …)
are accepted and ignored, as llama.cpp's server does for fields it does not implement.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

# Room kept in the context window for the prompt when a request asks for a long answer.
MIN_PROMPT_ROOM = 64


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type_: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or ("server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass
class ChatRequest:
    model: str | None  # None: the model the server was started with
    question: str  # the last user message
    history: list[dict] = field(default_factory=list)  # earlier user/assistant turns
    system: str | None = None  # the request's system message(s); None keeps reverie's
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False
    memory: bool | None = None  # recall memories into the prompt; None: as the settings say
    record: bool = True  # store the exchange in the ledger like a chat turn


def _text(content, where: str) -> str:
    """A message's text: a string, or a list of text parts (images are not understood)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(400, f"{where}.content[{i}] is of type {kind!r}; this model reads "
                                    "text only: send {\"type\": \"text\", \"text\": ...} parts or a string.",
                               f"{where}.content")
            out.append(part["text"])
        return "\n".join(out)
    raise ApiError(400, f"{where}.content must be a string or a list of text parts.", f"{where}.content")


def _positive_int(body: dict, name: str) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ApiError(400, f"{name} must be a positive integer, got {v!r}.", name)
    return v


def parse_chat_request(body, n_ctx: int) -> ChatRequest:
    """Validate a /v1/chat/completions body. The last message must be the user's question."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object.")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ApiError(400, f"model must be a model name from GET /v1/models, got {model!r}.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {\"role\", \"content\"} objects.",
                       "messages")
    n = body.get("n")
    if n is not None and n != 1:
        raise ApiError(400, f"n must be 1 (one answer per request), got {n!r}.", "n")
    if body.get("tools") and body.get("tool_choice") not in (None, "none"):
        raise ApiError(400, "tools are not supported by this server; send the request without "
                            "tools (or with tool_choice \"none\").", "tools")
    system, turns = [], []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"{where} must be an object with role and content.", where)
        role = m.get("role")
        text = _text(m.get("content"), where)
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": text.strip()})
        else:
            raise ApiError(400, f"{where}.role {role!r} is not supported; use system, user or "
                                "assistant.", f"{where}.role")
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's (role \"user\"): it is what "
                            "gets answered.", "messages")
    question = turns[-1]["content"]
    if not question:
        raise ApiError(400, "the last user message is empty; send some text to answer.", "messages")
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    if max_tokens is not None and max_tokens > n_ctx - MIN_PROMPT_ROOM:
        raise ApiError(400, f"max_tokens {max_tokens} leaves no room for the prompt in this model's "
                            f"{n_ctx}-token context; ask for at most {n_ctx - MIN_PROMPT_ROOM}.",
                       "max_tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"stream must be true or false, got {stream!r}.", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise ApiError(400, "stream_options must be an object.", "stream_options")
    ext = body.get("reverie") or {}
    if not isinstance(ext, dict) or set(ext) - {"memory", "record"}:
        raise ApiError(400, "reverie must be an object with optional booleans \"memory\" (recall "
                            "memories) and \"record\" (store the exchange), e.g. "
                            "{\"memory\": false, \"record\": false}.", "reverie")
    for k in ("memory", "record"):
        if k in ext and not isinstance(ext[k], bool):
            raise ApiError(400, f"reverie.{k} must be true or false, got {ext[k]!r}.", f"reverie.{k}")
    return ChatRequest(model=model.strip() if model else None, question=question,
                       history=turns[:-1], system="\n\n".join(system) if system else None,
                       max_tokens=max_tokens, stream=stream,
                       include_usage=bool(opts.get("include_usage")),
                       memory=ext.get("memory"), record=ext.get("record", True))


FINISH = {"stop": "stop", "length": "length", "loop": "stop"}  # the loop stop is a stop


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(cid: str, created: int, model: str, answer: str, finish: str, use: dict,
               extra: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "logprobs": None, "finish_reason": FINISH.get(finish, "stop")}],
            "usage": use, "system_fingerprint": None, "reverie": extra}


def chunk(cid: str, created: int, model: str, delta: dict | None = None,
          finish: str | None = None, use: dict | None = None, extra: dict | None = None) -> dict:
    """One streamed chunk; the usage-only chunk (stream_options.include_usage) has no choices."""
    d = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
         "system_fingerprint": None}
    if use is not None:
        d["choices"], d["usage"] = [], use
        return d
    d["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None,
                     "finish_reason": FINISH.get(finish, "stop") if finish else None}]
    if extra is not None:
        d["reverie"] = extra
    return d


def model_object(name: str, created: int = 0) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "reverie"}


def now() -> int:
    return int(time.time())
