"""OpenAI-compatible endpoints beside zoo's own API, for the tools that speak OpenAI's (the `openai` client,
editors, agents, benchmark scripts):

    GET  /v1/models                 {"object": "list", "data": [{"id", "object": "model", "created", "owned_by",
                                    <zoo's description of the model: member, codec, card, inputs, options...>}]}
    GET  /v1/models/{model}         one entry of that list
    POST /v1/completions            text models: prompt (a string or a list), max_tokens, temperature, top_p, n,
                                    stop, seed, echo, stream (server-sent chunks, then `data: [DONE]`)
    POST /v1/chat/completions       refused with a 400 naming the reason: no zoo model carries a chat template
    POST /v1/images/generations     image and text-to-image models: prompt (a class label or a caption), n,
                                    response_format=b64_json; one PNG per image, at the model's native size

A request becomes the same zoo options as POST /v1/generate (`Adapter.validate`) and runs as the same `Job` on
the model's worker, so queueing, batching, time limits and cancellation are the server's, and a seeded request
gives the text zoo's own API and `zoo.load(name).generate(...)` give. A parameter zoo cannot honour (logprobs,
best_of > 1, suffix, penalties other than 0, ...) and an unknown one get OpenAI's 400
`{"error": {"message", "type": "invalid_request_error", "param", "code"}}`, never silent ignoring;
docs/serving.md has the table.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from zoo.serve.errors import RequestError
from zoo.serve.options import Adapter
from zoo.serve.worker import Job

PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/images/generations", "/v1/models")
DEFAULT_MAX_TOKENS = 16  # OpenAI's documented default for /v1/completions
ZOO_EXTRAS = {"top_k", "min_p", "repetition_penalty", "guidance"}  # zoo's own sampling options, taken as extras
IGNORED = {"user", "safety_identifier", "moderation"}  # about the caller, not the output: accepted, no effect
# Parameters whose neutral value zoo honours by doing nothing; any other value is refused by name.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (None,), "suffix": (None, ""), "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
    "logit_bias": (None, {}), "best_of": (None, 1)}
IMAGE_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "quality": (None, "auto", "standard"), "style": (None,), "background": (None, "auto", "opaque"),
    "output_format": (None, "png"), "output_compression": (None,), "partial_images": (None, 0),
    "stream": (None, False)}
OPENAI_NAMES = {"max_new_tokens": "max_tokens", "num_samples": "n", "labels": "prompt", "caption": "prompt"}


class OpenAIError(Exception):
    """A refusal in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with `status`."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad(param: str, message: str, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, f"{param}: {message}", param=param, code=code)


def from_zoo(e: RequestError) -> OpenAIError:
    """zoo's refusal (422 naming a zoo field) as OpenAI's (400 naming the OpenAI parameter)."""
    param = OPENAI_NAMES.get(e.field, e.field) if e.field else None
    message = e.message
    if e.field and param != e.field and message.startswith(f"{e.field}:"):
        message = f"{param}:{message[len(e.field) + 1:]}"
    if e.accepted is not None and "accepted" not in message and "expected" not in message:
        message += f" (accepted: {e.accepted})"
    status = 400 if e.status == 422 else e.status
    return OpenAIError(status, message, param=param, code="model_not_found" if status == 404 else None)


def is_openai(path: str) -> bool:
    return path.startswith(PATHS)


def _kind(adapter: Adapter) -> str:
    outputs = adapter.member.outputs
    return "text" if "text" in outputs else "image" if "png" in outputs else "other"


WHERE = {"text": "POST /v1/completions", "image": "POST /v1/images/generations",
         "other": "zoo's own POST /v1/generate (docs/serving.md)"}


def _example(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI request body (an example to try in /docs); the parameters are docs/serving.md's table."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "required": ["model", "prompt"]}, "example": body}}}}


def add_routes(app: FastAPI, server: Any, grace_s: float) -> None:
    """Register the OpenAI routes on `app` over `server` (zoo.serve.app.Server)."""
    created = int(time.time())

    def entry(name: str, a: Adapter) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "zoo", "name": name, **a.describe()}

    def model(body: dict[str, Any], endpoint: str, kind: str) -> tuple[str, Adapter]:
        name = body.pop("model", None)
        if not isinstance(name, str):
            raise bad("model", f"expected the name of a served model, got {name!r}; GET /v1/models lists them")
        if name not in server.adapters:
            raise OpenAIError(404, f"The model `{name}` is not served here; served: {sorted(server.adapters)}",
                              param="model", code="model_not_found")
        adapter = server.adapters[name]
        if _kind(adapter) != kind:
            raise bad("model", f"{name} is not a {kind} model (its member: {adapter.member.name}); {endpoint} "
                               f"serves {kind} models; use {WHERE[_kind(adapter)]}", code="wrong_endpoint")
        return name, adapter

    async def read(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise OpenAIError(400, f"the body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise OpenAIError(400, f"the body must be a JSON object, got {type(body).__name__}")
        return body

    def refuse_unknown(body: dict[str, Any], known: set[str], neutral: dict[str, tuple[Any, ...]]) -> None:
        for k, v in body.items():
            if k in neutral and not any(_same(v, ok) for ok in neutral[k]):
                raise bad(k, f"{json.dumps(v)} is not supported by zoo-serve; accepted: "
                             f"{', '.join(map(json.dumps, neutral[k]))} or leaving it out",
                          code="unsupported_parameter")
            if k not in known | set(neutral) | IGNORED:
                raise bad(k, f"unrecognized request argument; accepted: {sorted(known | set(neutral) | IGNORED)}",
                          code="unknown_parameter")

    def validate(adapter: Adapter, opts: dict[str, Any]) -> dict[str, Any]:
        try:
            return adapter.validate(opts)
        except RequestError as e:
            raise from_zoo(e) from None

    def submit(name: str, jobs: list[Job]) -> None:
        try:
            for job in jobs:
                server.workers[name].submit(job)
        except RequestError as e:  # a full queue: drop what was queued already
            for job in jobs:
                job.abandoned.set()
            raise from_zoo(e) from None

    async def results(name: str, jobs: list[Job]) -> list[dict[str, Any]]:
        submit(name, jobs)
        try:
            return await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(j.future) for j in jobs)),
                                          timeout=jobs[0].timeout_s + grace_s)
        except TimeoutError:
            raise from_zoo(jobs[0].timeout_error()) from None
        except RequestError as e:
            raise from_zoo(e) from None
        finally:  # stops what is still running when the client left, a sibling failed or time ran out
            for job in jobs:
                job.abandoned.set()

    def job(opts: dict[str, Any]) -> Job:
        return Job(opts, time.monotonic() + server.settings.timeout_s, server.settings.timeout_s)

    @app.get("/v1/models", summary="the loaded models (OpenAI's list), each with zoo's inputs and options")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [entry(n, a) for n, a in server.adapters.items()]}

    @app.get("/v1/models/{name}", summary="one loaded model (OpenAI's model object)")
    async def get_model(name: str) -> Any:
        if name not in server.adapters:
            return OpenAIError(404, f"The model `{name}` is not served here; served: {sorted(server.adapters)}",
                               param="model", code="model_not_found").response()
        return entry(name, server.adapters[name])

    @app.post("/v1/chat/completions", summary="OpenAI chat completions: refused, no zoo model has a chat template")
    async def chat(request: Request) -> Any:
        name, adapter = model(await read(request), "/v1/chat/completions", "text")
        raise bad("messages", f"{name} has no chat template (no zoo model ships one), so it cannot read chat "
                              "messages; send the text to continue to POST /v1/completions", code="no_chat_template")

    text = next((n for n, a in server.adapters.items() if _kind(a) == "text"), "gpt-pydoc")
    image = next((n for n, a in server.adapters.items() if _kind(a) == "image"), "image-gpt-digits")

    @app.post("/v1/completions", summary="OpenAI text completions (text models)", openapi_extra=_example(
        {"model": text, "prompt": "The with statement", "max_tokens": 16, "seed": 0}))
    async def completions(request: Request) -> Any:
        body = await read(request)
        name, adapter = model(body, "/v1/completions", "text")
        known = {"prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "stream_options",
                 "echo"} | (ZOO_EXTRAS & set(adapter.options))
        refuse_unknown(body, known, NEUTRAL)
        prompts = body.get("prompt", "")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise bad("prompt", "expected a string or a non-empty list of strings (token-id prompts are not "
                                "supported: send text)")
        if len(prompts) > server.settings.max_queue:
            raise bad("prompt", f"{len(prompts)} prompts is more than the {server.settings.max_queue} this "
                                "server queues per model (max_queue)")
        stop = body.get("stop")
        stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
        stream, echo = body.get("stream") or False, body.get("echo") or False
        for k, v in (("stream", stream), ("echo", echo)):
            if not isinstance(v, bool):
                raise bad(k, f"expected true or false, got {v!r}")
        options = body.get("stream_options")
        if options is not None and (not stream or not isinstance(options, dict) or set(options) - {"include_usage"}):
            raise bad("stream_options", f"{options!r}: accepted only with stream=true, as {{\"include_usage\": bool}}")
        zoo = zoo_options(body)
        n = 1 if body.get("n") is None else body["n"]
        if stream and n != 1:
            raise bad("n", f"{n}: a stream carries one choice per prompt here; stream with n=1 (or leave it out)")
        max_tokens = DEFAULT_MAX_TOKENS if body.get("max_tokens") is None else body["max_tokens"]
        zoo.update(max_new_tokens=max_tokens, num_samples=n, stop=stop)
        jobs = [job(validate(adapter, {**zoo, "prompt": p})) for p in prompts]
        rid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        codec = adapter.m.codec

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {"id": rid, "object": "text_completion", "created": now, "model": name, "choices": choices,
                    **extra}

        def choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
            return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}

        def finish(text: str) -> str:  # fewer tokens than asked: a stop string or the end-of-text token ended it
            return "length" if len(codec.encode(text)) >= max_tokens else "stop"

        def usage(completions: list[str]) -> dict[str, int]:
            p = sum(len(codec.encode(x)) for x in prompts)
            c = sum(len(codec.encode(x)) for x in completions)
            return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

        if stream:
            return stream_chunks(name, jobs, prompts, stop, echo, chunk, choice, finish,
                                 usage if options and options.get("include_usage") else None)
        done = await results(name, jobs)
        texts = [c for r in done for c in r["completions"]]  # prompt-major: index = prompt * n + sample
        return chunk([choice(i, (prompts[i // n] if echo else "") + t, finish(t)) for i, t in enumerate(texts)],
                     usage=usage(texts))

    def stream_chunks(name: str, jobs: list[Job], prompts: list[str], stop: list[str], echo: bool,
                      chunk: Callable, choice: Callable, finish: Callable, usage: Callable | None) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        queues: list[asyncio.Queue[str | None]] = []
        for j in jobs:
            q: asyncio.Queue[str | None] = asyncio.Queue()
            j.on_text = lambda s, q=q: loop.call_soon_threadsafe(q.put_nowait, s) if s else None
            j.future.add_done_callback(lambda _, q=q: loop.call_soon_threadsafe(q.put_nowait, None))
            queues.append(q)
        submit(name, jobs)  # a full queue raises here, before the stream starts: a plain 503
        hold = max((len(s) for s in stop), default=1) - 1  # text that may be the start of a stop string

        def data(obj: dict[str, Any] | str) -> str:
            return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"

        async def events() -> AsyncIterator[str]:
            texts = []
            try:
                for i, (j, q) in enumerate(zip(jobs, queues)):
                    if echo:
                        yield data(chunk([choice(i, prompts[i], None)]))
                    seen = sent = ""
                    while True:
                        try:
                            piece = await asyncio.wait_for(q.get(), timeout=j.deadline - time.monotonic() + grace_s)
                        except TimeoutError:
                            yield data(from_zoo(j.timeout_error()).body())
                            return
                        if piece is None:
                            break
                        seen += piece  # send what can no longer become part of a stop string
                        cut = min([seen.find(s) for s in stop if s in seen] + [len(seen) - hold])
                        if cut > len(sent):
                            yield data(chunk([choice(i, seen[len(sent):cut], None)]))
                            sent = seen[:cut]
                    e = j.future.exception()
                    if e is not None:
                        err = e if isinstance(e, RequestError) else RequestError(500, f"internal error ({e!r:.80})")
                        yield data(from_zoo(err).body())
                        return
                    text = j.future.result()["completions"][0]  # the final text, cut at a stop string
                    texts.append(text)
                    yield data(chunk([choice(i, text[len(sent):] if text.startswith(sent) else "", finish(text))]))
                if usage is not None:
                    yield data(chunk([], usage=usage(texts)))
                yield data("[DONE]")
            finally:
                for j in jobs:
                    j.abandoned.set()  # stops the generation if the client left early; harmless after the end

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/images/generations", summary="OpenAI image generation (image and text-to-image models)",
              openapi_extra=_example({"model": image, "prompt": "3", "n": 2, "response_format": "b64_json"}))
    async def images(request: Request) -> Any:
        body = await read(request)
        name, adapter = model(body, "/v1/images/generations", "image")
        known = {"prompt", "n", "size", "response_format", "seed", "temperature", "top_p"} | (
            ZOO_EXTRAS & set(adapter.options))
        refuse_unknown(body, known, IMAGE_NEUTRAL)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise bad("prompt", f"expected a string (a caption, or a class label for a class-conditional model), "
                                f"got {prompt!r}")
        fmt = body.get("response_format")
        if fmt not in (None, "b64_json"):
            raise bad("response_format", f"{fmt!r}: zoo-serve keeps no files to link to; accepted: \"b64_json\"",
                      code="unsupported_parameter")
        width, height = native_size(adapter)
        size = body.get("size")
        if size not in (None, "auto", f"{width}x{height}"):
            raise bad("size", f"{size!r}: {name} draws {width}x{height} images only; accepted: \"{width}x{height}\", "
                              "\"auto\" or leave it out", code="unsupported_parameter")
        zoo = zoo_options(body)
        field = next(o for o in adapter.options.values() if not o.sampling and o.kind in ("labels", "string"))
        if field.kind == "labels":  # a class-conditional model: the prompt names one class
            labels = class_labels(adapter)
            if labels and not prompt.strip():
                raise bad("prompt", f"{name} draws the class the prompt names; accepted labels: {labels}")
            zoo[field.name] = prompt.strip() if labels else None
        else:
            zoo[field.name] = prompt
        zoo["num_samples"] = 1 if body.get("n") is None else body["n"]
        (result,) = await results(name, [job(validate(adapter, zoo))])
        return {"created": int(time.time()), "data": [{"b64_json": png, "revised_prompt": None}
                                                      for png in split_grid(result["png"], result["shape"])]}


def _same(value: Any, neutral: Any) -> bool:
    """`value` is the neutral value (0.0 is 0; true is not 1; null is only null)."""
    if neutral is None or value is None:
        return value is neutral
    return isinstance(value, bool) == isinstance(neutral, bool) and value == neutral


def zoo_options(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling options zoo reads under its own names: OpenAI's (null = the model's default) and zoo's extras."""
    return {k: v for k, v in body.items() if k in ZOO_EXTRAS or k in ("temperature", "top_p", "seed") and v is not None}


def class_labels(adapter: Adapter) -> list[Any]:
    """The class names (or ids) a class-conditional image model draws; [] for an unconditional one."""
    codec = adapter.m.codec
    return list(getattr(codec, "class_names", None) or range(getattr(codec, "num_classes", 0)))


def native_size(adapter: Adapter) -> tuple[int, int]:
    """(width, height) in pixels of one image the model draws (a text-to-image codec holds an image codec)."""
    codec = getattr(adapter.m.codec, "image", adapter.m.codec)
    return codec.width, codec.height


def split_grid(png: str, shape: list[int]) -> list[str]:
    """A member's one-row grid PNG (base64) of `shape` (n, C, H, W) images -> n base64 PNGs at native size.

    The grid is zoo.members.image_io's: each image enlarged `auto_upscale(H, W)` times by nearest neighbour,
    `padding` pixels around every cell; the layout is checked against the PNG's size, then each cell is cut
    out and sampled back to H x W (exact: nearest-neighbour enlargement repeats every pixel)."""
    from PIL import Image

    from zoo.members.image_io import auto_upscale

    n, _, h, w = shape
    grid = Image.open(io.BytesIO(base64.b64decode(png)))
    scale = auto_upscale(h, w)
    pad, odd = divmod(grid.height - h * scale, 2)
    if odd or pad < 0 or grid.width != n * w * scale + (n + 1) * pad:
        raise OpenAIError(500, f"cannot split a {grid.width}x{grid.height} grid into {n} images of {w}x{h}")
    out = []
    for i in range(n):
        left = pad + i * (w * scale + pad)
        cell = grid.crop((left, pad, left + w * scale, pad + h * scale)).resize((w, h), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        cell.save(buf, format="PNG")
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out
