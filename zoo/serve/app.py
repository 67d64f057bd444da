"""The HTTP server: FastAPI routes over one `ModelWorker` per loaded model.

    GET  /                 the web page (zoo/serve/static: plain HTML + JS + CSS, nothing from the internet)
    GET  /v1/models        every loaded model in OpenAI's list shape, each entry with zoo's description: member,
                           codec, card metric, inputs and options with ranges
    POST /v1/generate      {"model": ..., "id": ..., "stream": false, <inputs>, <sampling options>}
    GET  /openapi.json     the OpenAPI description; /docs renders it with a Swagger UI served from the
                           package fastapi-offline (no CDN)
    GET  /healthz          {"status": "ok", "models": [...], "queued": {...}, "served": {name: {requests, batches}}}

Every error is `{"error": {"status", "message", "field", "accepted", "received"}}` with a 4xx status
(503 for a request cancelled at its time limit or refused by a full queue; 413 for a body past
`limits.max_body_bytes`, refused before it is read; 408 for a body not complete within `timeout_s`);
never a traceback.
The OpenAI-compatible routes (/v1/completions, /v1/chat/completions, /v1/images/generations) and their
errors in OpenAI's shape are zoo.serve.openai_api's. docs/serving.md is the user's guide.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from zoo.members.serving import Limits
from zoo.serve.body_limit import BodyLimit
from zoo.serve.errors import RequestError, bad_field
from zoo.serve.openai_api import OpenAIError, add_routes, from_zoo, is_openai
from zoo.serve.options import Adapter, adapter_for
from zoo.serve.worker import Job, ModelWorker

log = logging.getLogger(__name__)
STATIC = files("zoo.serve") / "static"
GRACE_S = 1.0  # past a deadline, how long the HTTP side waits for the worker's own cancellation


@dataclass(kw_only=True)
class ServeSettings:
    """Server-wide knobs (zoo-serve's config without host/port/models)."""

    timeout_s: float = 60.0  # per request, queueing included
    max_batch: int = 8  # requests per batched generate call
    max_queue: int = 64  # waiting requests per model; more get a 503
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {self.timeout_s}")
        if self.max_batch < 1 or self.max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1, got {self.max_batch} and {self.max_queue}")


class Server:
    """The loaded models, their adapters and workers; `close()` stops the worker threads."""

    def __init__(self, models: Mapping[str, Any], settings: ServeSettings) -> None:
        if not models:
            raise ValueError("zoo-serve needs at least one model")
        self.settings = settings
        self.adapters: dict[str, Adapter] = {name: adapter_for(m, settings.limits) for name, m in models.items()}
        self.workers = {name: ModelWorker(name, a, max_batch=settings.max_batch, max_queue=settings.max_queue)
                        for name, a in self.adapters.items()}

    def close(self) -> None:
        for w in self.workers.values():
            w.close()

    def prepare(self, body: Any) -> tuple[str, str, bool, ModelWorker, Job]:
        """Check a /v1/generate body; (request id, model name, stream, worker, job) or a RequestError."""
        if not isinstance(body, dict):
            raise bad_field("body", "expected a JSON object", "{\"model\": NAME, ...}", type(body).__name__)
        body = dict(body)
        name = body.pop("model", None)
        if name not in self.adapters:
            raise RequestError(404 if isinstance(name, str) else 422,
                               f"model: {name!r} is not served here; GET /v1/models lists them",
                               field="model", accepted=sorted(self.adapters), received=name)
        rid = body.pop("id", None)
        if rid is None:
            rid = uuid.uuid4().hex
        elif not isinstance(rid, str | int) or isinstance(rid, bool) or len(str(rid)) > 128:
            raise bad_field("id", "expected a string or integer of at most 128 characters",
                            "a string or integer", rid)
        stream = body.pop("stream", False)
        adapter = self.adapters[name]
        if not isinstance(stream, bool):
            raise bad_field("stream", "expected true or false", "true or false", stream)
        if stream and not adapter.streams:
            raise bad_field("stream", f"{name} is a {adapter.member.name} model; only text models stream", "false",
                            stream)
        opts = adapter.validate(body)
        if stream and opts.get("num_samples", 1) != 1:
            raise bad_field("num_samples", "a stream carries one sample", "1 with stream=true", opts["num_samples"])
        timeout = self.settings.timeout_s
        return str(rid), name, stream, self.workers[name], Job(opts, time.monotonic() + timeout, timeout)


def envelope(rid: str, name: str, adapter: Adapter, job: Job, started: float, result: dict[str, Any]) -> dict:
    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in job.opts.items() if k != "primer"}
    return {"id": rid, "model": name, "member": adapter.member.name, "seed": job.opts.get("seed"), "options": opts,
            "elapsed_s": round(time.monotonic() - started, 4), "result": result}


def _error(e: RequestError, request: Request | None = None) -> JSONResponse:
    return error_at(request.url.path if request is not None else "", e)


def error_at(path: str, e: RequestError) -> JSONResponse:
    if is_openai(path):  # an OpenAI client reads OpenAI's error shape
        return from_zoo(e).response()
    return JSONResponse(e.body(), status_code=e.status)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def request_schema(server: Server) -> dict[str, Any]:
    """The /v1/generate body for OpenAPI: the union of every loaded member's fields (GET /v1/models has
    each model's own, with its ranges)."""
    types = {"integer": {"type": "integer"}, "number": {"type": "number"}, "string": {"type": "string"},
             "boolean": {"type": "boolean"}, "strings": {"type": "array", "items": {"type": "string"}},
             "labels": {"oneOf": [{"type": "integer"}, {"type": "string"},
                                  {"type": "array", "items": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}]},
             "midi": {"type": "string", "format": "byte"}, "any": {}}
    props: dict[str, Any] = {
        "model": {"type": "string", "enum": sorted(server.adapters), "description": "which model"},
        "id": {"type": "string", "description": "echoed in the response (default: a new UUID)"},
        "stream": {"type": "boolean", "default": False, "description": "text only: server-sent events"}}
    for a in server.adapters.values():
        for o in a.options.values():
            if o.name not in props:
                props[o.name] = {**types[o.kind], "nullable": o.nullable,
                                 "description": f"{o.help} ({a.member.name}: {o.accepted()})"}
    examples = {name: {"value": {"model": name, **({"max_new_tokens": 16} if "max_new_tokens" in a.options else {}),
                                 **({"num_samples": 2} if _default(a, "num_samples", 1) > 2 else {})}}
                for name, a in server.adapters.items()}  # small requests: a few tokens, a small grid
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "required": ["model"], "properties": props}, "examples": examples}}},
        "responses": {"200": {"description": "`{id, model, member, seed, options, elapsed_s, result}`; "
                              "with stream=true, text/event-stream of `token` events then `done`"},
                      "4XX": {"description": "`{error: {status, message, field, accepted, received}}`"}}}


def _default(adapter: Adapter, name: str, otherwise: Any) -> Any:
    option = adapter.options.get(name)
    return otherwise if option is None else option.default


def load_models(specs: list[str] | None = None, *, device: str = "cpu", dtype: str | None = None,
                quantize: str | None = None) -> dict[str, Any]:
    """{name: Pretrained} for zoo-serve's `models`: registered names, exported folders or .ckpt files, or
    NAME=PATH (a registered name read from PATH, e.g. gpt2=~/models/gpt2; or PATH served as NAME).
    None: every registered model that loads without a path (gpt2 needs its weights: give gpt2=PATH).
    quantize: None, "int8" or "int4" for every model (zoo.load's quantize)."""
    import zoo

    if specs is None:
        specs = [n for n in zoo.list_models() if not n.startswith("gpt2")]
    models: dict[str, Any] = {}
    for spec in specs:
        name, _, path = str(spec).partition("=")
        if path and (name in zoo.list_models() or name.startswith("gpt2")):
            m = zoo.load(name, device=device, dtype=dtype, path=path, quantize=quantize)
        else:
            m = zoo.load(path or name, device=device, dtype=dtype, quantize=quantize)
        if name in models:
            raise ValueError(f"models: {name!r} is listed twice; give NAME=PATH to serve a second copy")
        models[name] = m
        log.info("loaded %s: %r", name, m)
    return models


def create_app(models: Mapping[str, Any], settings: ServeSettings | None = None) -> FastAPI:
    """The app serving `models` ({name: zoo.load(...) result}). Its lifespan stops the workers; without a
    lifespan (a test app never started) call `app.state.server.close()`."""
    server = Server(models, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            server.close()

    app = FastAPIOffline(title="zoo-serve", version="1", lifespan=lifespan, redoc_url=None,  # ReDoc fetches fonts
                         description="Every zoo member behind one HTTP API. Guide: docs/serving.md.")
    app.state.server = server
    app.add_middleware(BodyLimit, max_bytes=server.settings.limits.body_bytes(), timeout_s=server.settings.timeout_s,
                       render=error_at)  # a 413 before an oversized body is read (zoo/serve/body_limit.py)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError) -> JSONResponse:
        return _error(e, request)

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, e: OpenAIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return _error(bad_field(where, first.get("msg", "invalid"), received=first.get("input")), request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return _error(RequestError(e.status_code, str(e.detail)), request)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, e: ClientDisconnect) -> Response:
        log.debug("client left %s before sending the whole body", request.url.path)  # not the server's error
        return Response(status_code=499)  # nobody reads it; nginx's code for "client closed request"

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error(RequestError(500, f"internal error ({type(e).__name__}); see the server log"), request)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/healthz", summary="liveness, loaded models and queue lengths")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(server.adapters),
                "queued": {n: w.queued() for n, w in server.workers.items()},
                "served": {n: {"requests": w.requests, "batches": w.batches} for n, w in server.workers.items()}}

    @app.post("/v1/generate", summary="generate from one model", openapi_extra=request_schema(server))
    async def generate(request: Request) -> Any:
        started = time.monotonic()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad_field("body", f"not valid JSON ({e})", "a JSON object") from None
        rid, name, stream, worker, job = server.prepare(body)
        adapter = server.adapters[name]
        if stream:
            return _stream(rid, name, adapter, worker, job, started)
        future = asyncio.wrap_future(worker.submit(job))
        try:
            result = await asyncio.wait_for(future, timeout=job.timeout_s + GRACE_S)
        except TimeoutError:  # the worker is stuck in a step without a hook (rendering): give up waiting
            job.abandoned.set()
            raise job.timeout_error() from None
        except asyncio.CancelledError:  # the client went away
            job.abandoned.set()
            raise
        return envelope(rid, name, adapter, job, started, result)

    add_routes(app, server, GRACE_S)  # GET /v1/models and the OpenAI-compatible routes

    def _stream(rid: str, name: str, adapter: Adapter, worker: ModelWorker, job: Job,
                started: float) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        job.on_text = lambda s: loop.call_soon_threadsafe(pieces.put_nowait, s) if s else None
        future = worker.submit(job)  # a full queue raises here, before the stream starts: a plain 503
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))

        async def events() -> AsyncIterator[str]:
            try:
                yield _sse("start", {"id": rid, "model": name, "seed": job.opts.get("seed")})
                while True:
                    try:
                        piece = await asyncio.wait_for(pieces.get(), timeout=job.deadline - time.monotonic() + GRACE_S)
                    except TimeoutError:
                        yield _sse("error", job.timeout_error().body())
                        return
                    if piece is None:
                        break
                    yield _sse("token", {"id": rid, "text": piece})
                e = future.exception()
                if e is not None:
                    err = e if isinstance(e, RequestError) else RequestError(500, f"internal error ({e!r:.80})")
                    yield _sse("error", err.body())
                else:
                    yield _sse("done", envelope(rid, name, adapter, job, started, future.result()))
            finally:
                job.abandoned.set()  # stops the generation if the client left early; harmless after the end

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app
