"""The HTTP side of `reverie serve`: routes, the bearer key, OpenAI-shaped errors, SSE.

Routes: GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions (streamed or not),
POST /v1/chat/completions/{id}/feedback (good | bad | fix), GET /health. A response starts only
once the model has started answering, so an error before the first token (unknown model, a model
that cannot load) is a plain JSON error with its status, never a broken stream.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import sys

from .feedback import add_feedback, parse_feedback
from .schema import ApiError, chunk, completion, error_body, model_object, now, parse_chat_request, usage
from .worker import Job, ModelWorker

POLL_S = 0.25  # how often a queued request checks that its client is still there


class _Gone(Exception):
    pass


def create_app(worker: ModelWorker, api_key: str | None = None):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def check_key(request) -> None:
        if not api_key:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "Incorrect API key provided: send the key `reverie serve --api-key` "
                                "was started with as `Authorization: Bearer KEY`.",
                           code="invalid_api_key")

    async def body_of(request):
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not valid JSON.") from None

    async def models(request):
        check_key(request)
        names = await run_in_threadpool(worker.models)
        return JSONResponse({"object": "list", "data": [model_object(n) for n in names]})

    async def model(request):
        check_key(request)
        name = request.path_params["name"]
        if name not in await run_in_threadpool(worker.models):
            raise ApiError(404, f"The model {name!r} does not exist; GET /v1/models lists them.",
                           "model", "model_not_found")
        return JSONResponse(model_object(name))

    async def health(request):
        return JSONResponse({"status": worker.status, "model": worker.default_model,
                             "busy": worker.busy, "queued": worker.queued,
                             "cancelled": worker.cancelled, "error": worker.load_error or None})

    async def chat_completions(request):
        from memory.ledger import random_token

        check_key(request)
        req = parse_chat_request(await body_of(request), worker.n_ctx)
        await run_in_threadpool(worker.check_model, req.model)
        cid, created = "chatcmpl-" + random_token(24), now()
        job = worker.submit(req, cid, asyncio.get_running_loop())
        waiting = _Waiter(job, request)
        try:
            kind, info = await waiting.next()  # queued until the model starts this answer
            if kind == "error":
                raise info
            headers = {"X-Reverie-Completion-Id": cid, "X-Reverie-Model": info["model"],
                       "X-Reverie-Adapter": info["adapter_version"]}
            if not req.stream:
                kind, done = await waiting.next()
                if kind == "error":
                    raise done
                return JSONResponse(completion(
                    cid, created, info["model"], done["answer"], done["finish_reason"],
                    usage(done["prompt_tokens"], done["completion_tokens"]), done["info"]),
                    headers=headers)
        except _Gone:
            return Response(status_code=499)  # nobody is there to read it
        except BaseException:
            job.cancel.set()
            raise
        finally:
            waiting.close()
        return StreamingResponse(_sse(job, req, cid, created, info["model"]),
                                 media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})

    async def feedback(request):
        check_key(request)
        kind, correction = parse_feedback(await body_of(request))
        ref = request.path_params["completion_id"]
        turn_id = worker.turn_for(ref) or (ref if ref.startswith("turn_") else None)
        if turn_id is None:
            raise ApiError(404, f"no completion {ref!r} recorded by this server: rate it by the "
                                "turn id in the answer's reverie.turn_id instead (completion ids "
                                "are kept in memory until the server stops).",
                           code="completion_not_found")
        res = await run_in_threadpool(add_feedback, worker.home, turn_id, kind, correction)
        return JSONResponse({**res, "completion_id": ref})

    async def api_error(request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    async def http_error(request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        msg = (f"no route {request.method} {request.url.path}; this server has /v1/models and "
               "/v1/chat/completions" if exc.status_code in (404, 405) else str(exc.detail))
        return JSONResponse(error_body(msg, "invalid_request_error", None, code),
                            status_code=exc.status_code)

    async def server_error(request, exc: Exception):
        print(f"reverie serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"),
                            status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await asyncio.wrap_future(worker.start())
        if worker.status == "error":
            print(f"reverie serve: {worker.load_error} (requests get 503 until it loads)",
                  file=sys.stderr)
        try:
            yield
        finally:
            await run_in_threadpool(worker.close)

    routes = [Route("/v1/models", models), Route("/v1/models/{name:path}", model),
              Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/chat/completions/{completion_id}/feedback", feedback, methods=["POST"]),
              Route("/health", health)]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={ApiError: api_error, HTTPException: http_error,
                                         Exception: server_error})


class _Waiter:
    """Next event of a job, checking meanwhile that the client has not gone away (before a
    response starts, Starlette does not notice a disconnect by itself)."""

    def __init__(self, job: Job, request):
        self.job, self.request = job, request
        self._get: asyncio.Task | None = None

    async def next(self):
        while True:
            if self._get is None:
                self._get = asyncio.ensure_future(self.job.events.get())
            done, _ = await asyncio.wait({self._get}, timeout=POLL_S)
            if done:
                event, self._get = self._get.result(), None
                return event
            if await self.request.is_disconnected():
                self.job.cancel.set()
                raise _Gone()

    def close(self) -> None:
        if self._get is not None:
            self._get.cancel()


def _sse_line(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(job: Job, req, cid: str, created: int, model: str):
    """The stream: a role chunk, content chunks (pieces that arrived together go as one), the
    finish chunk with reverie's extras, the usage chunk if asked for, then [DONE]. A client that
    disconnects cancels this generator, and the cancel flag stops the decode at the next token."""
    q = job.events
    try:
        yield _sse_line(chunk(cid, created, model, {"role": "assistant", "content": ""}))
        while True:
            kind, data = await q.get()
            while kind == "delta" and not q.empty():
                k2, d2 = q.get_nowait()
                if k2 != "delta":
                    yield _sse_line(chunk(cid, created, model, {"content": data}))
                    kind, data = k2, d2
                    break
                data += d2
            if kind == "delta":
                yield _sse_line(chunk(cid, created, model, {"content": data}))
            elif kind == "done":
                yield _sse_line(chunk(cid, created, model, {}, finish=data["finish_reason"],
                                      extra=data["info"]))
                if req.include_usage:
                    yield _sse_line(chunk(cid, created, model,
                                          use=usage(data["prompt_tokens"], data["completion_tokens"])))
                yield "data: [DONE]\n\n"
                return
            elif kind == "error":
                yield _sse_line(data.body())
                yield "data: [DONE]\n\n"
                return
    finally:
        job.cancel.set()
