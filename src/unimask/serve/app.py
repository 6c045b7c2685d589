"""The OpenAI-compatible HTTP server: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Any ``Backbone`` (AR, diffusion, local Hugging Face) is served the same way. Chat messages are
rendered with unimask's chat template (``unimask.tokenizer.chat``); ``tools`` are described in
the system turn with the agent protocol, and a generated ``<tool_call>`` becomes an OpenAI
``tool_calls`` entry. Streaming uses server-sent events: an AR backbone streams per token, a
diffusion backbone per committed block. Malformed requests get a 4xx with a clear message.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from unimask.sampling.backbone import Backbone, Generation
from unimask.serve.batching import GenerationBatcher
from unimask.serve.chat import ChatRendering, render_chat
from unimask.serve.schemas import ChatRequest, CompletionRequest, _Request


@dataclass
class ServeConfig:
    model_name: str = "unimask"
    api_key: str | None = None  # bearer token; None disables auth
    max_body_bytes: int = 1_000_000
    max_tokens_limit: int = 512  # largest max_tokens a request may ask for
    default_max_tokens: int = 64
    max_batch: int = 8
    batch_window_ms: float = 10.0


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


def create_app(backbone: Backbone, config: ServeConfig | None = None) -> FastAPI:
    cfg = config or ServeConfig()
    batcher = GenerationBatcher(backbone, max_batch=cfg.max_batch, window_s=cfg.batch_window_ms / 1000)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="unimask", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.config = cfg

    # ------------------------------------------------------------------ errors and limits
    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return _error(e.status, e.message, e.param, e.kind)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"invalid request: {loc or 'body'}: {first.get('msg')}", loc or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        if cfg.api_key is not None:
            auth = request.headers.get("authorization", "")
            if not hmac.compare_digest(auth.encode(), f"Bearer {cfg.api_key}".encode()):
                return _error(401, "missing or wrong bearer token: send 'Authorization: Bearer <key>'",
                              kind="authentication_error")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cfg.max_body_bytes):
            return _error(413, f"request body larger than {cfg.max_body_bytes} bytes")
        if request.method == "POST":
            body = await request.body()
            if len(body) > cfg.max_body_bytes:
                return _error(413, f"request body larger than {cfg.max_body_bytes} bytes")
            try:
                json.loads(body or b"null")
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                return _error(400, f"request body is not valid JSON: {e}")
        return await call_next(request)

    # ------------------------------------------------------------------ helpers
    def settings_for(req: _Request, max_tokens: int | None) -> dict[str, Any]:
        if req.model != cfg.model_name:
            raise APIError(404, f"model {req.model!r} not found; this server serves {cfg.model_name!r}", "model")
        n = max_tokens or cfg.default_max_tokens
        if n > cfg.max_tokens_limit:
            raise APIError(400, f"max_tokens {n} exceeds this server's limit of {cfg.max_tokens_limit}", "max_tokens")
        try:
            stops = req.stop_list()
        except ValueError as e:
            raise APIError(400, str(e), "stop") from None
        settings: dict[str, Any] = {"max_new_tokens": n, "stop": tuple(stops), "temperature": req.temperature,
                                    "top_p": req.top_p}
        if req.seed is not None:
            settings["seed"] = req.seed
        return settings

    def usage(prompt: str, gen: Generation) -> dict[str, int]:
        p = len(backbone.tokenizer.encode_prompt(prompt))
        return {"prompt_tokens": p, "completion_tokens": len(gen.token_ids), "total_tokens": p + len(gen.token_ids)}

    def finish(gen: Generation) -> str:
        return "length" if gen.stop_reason == "length" else "stop"

    # ------------------------------------------------------------------ routes
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": 0,
                                            "owned_by": "unimask", "backbone": backbone.kind}]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        settings = settings_for(req, req.max_tokens)
        try:
            prompts = req.prompts()
        except ValueError as e:
            raise APIError(400, str(e), "prompt") from None
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            if len(prompts) != 1:
                raise APIError(400, "streaming supports a single prompt", "prompt")

            def chunk(text: str, reason: str | None) -> dict[str, Any]:
                return {"id": rid, "object": "text_completion", "created": created, "model": cfg.model_name,
                        "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}]}

            return _sse(batcher, prompts[0], settings, lambda d: chunk(d, None),
                        lambda g: chunk("", finish(g)))
        gens = await asyncio.gather(*(batcher.submit(p, settings) for p in prompts))
        choices = [{"index": i, "text": g.text, "finish_reason": finish(g), "logprobs": None}
                   for i, g in enumerate(gens)]
        tot = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for p, g in zip(prompts, gens, strict=True):
            for k, v in usage(p, g).items():
                tot[k] += v
        return {"id": rid, "object": "text_completion", "created": created, "model": cfg.model_name,
                "choices": choices, "usage": tot}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        settings = settings_for(req, req.max_completion_tokens or req.max_tokens)
        try:
            rendering: ChatRendering = render_chat(req)
        except ValueError as e:
            raise APIError(400, str(e), "messages") from None
        settings["stop"] = tuple(settings["stop"]) + rendering.stop
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def message_of(gen: Generation) -> tuple[dict[str, Any], str]:
            content, calls = rendering.parse(gen.text)
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                msg["tool_calls"] = calls
                return msg, "tool_calls"
            return msg, finish(gen)

        if req.stream:
            def chunk(delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
                return {"id": rid, "object": "chat.completion.chunk", "created": created,
                        "model": cfg.model_name, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}

            def last(gen: Generation) -> list[dict[str, Any]]:
                msg, reason = message_of(gen)
                out = []
                if msg.get("tool_calls"):
                    calls = [{"index": i, **c} for i, c in enumerate(msg["tool_calls"])]
                    out.append(chunk({"tool_calls": calls}, None))
                out.append(chunk({}, reason))
                return out

            return _sse(batcher, rendering.prompt, settings, lambda d: chunk({"content": d}, None), last,
                        first=chunk({"role": "assistant", "content": ""}, None), hold=rendering.hold_marker)
        gen = await batcher.submit(rendering.prompt, settings)
        msg, reason = message_of(gen)
        return {"id": rid, "object": "chat.completion", "created": created, "model": cfg.model_name,
                "choices": [{"index": 0, "message": msg, "finish_reason": reason}],
                "usage": usage(rendering.prompt, gen)}

    return app


def _sse(batcher: GenerationBatcher, prompt: str, settings: dict[str, Any], delta_chunk, final_chunks,
         first: dict[str, Any] | None = None, hold: str | None = None) -> StreamingResponse:
    """Stream ``delta_chunk(text)`` per update, then ``final_chunks(gen)`` and ``[DONE]``.

    ``hold``: once this marker appears in the text (a tool call starting), stop streaming
    content; the parsed call arrives in the final chunks instead.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def on_text(text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, text)

    async def events() -> AsyncIterator[str]:
        if first is not None:
            yield f"data: {json.dumps(first)}\n\n"
        task = asyncio.ensure_future(batcher.submit(prompt, settings, on_text))
        task.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, None))
        sent = ""
        while True:
            text = await queue.get()
            if text is None:
                break
            visible = text.split(hold, 1)[0] if hold else text
            if visible.startswith(sent) and len(visible) > len(sent):
                yield f"data: {json.dumps(delta_chunk(visible[len(sent):]))}\n\n"
                sent = visible
        try:
            gen = task.result()
        except Exception as e:  # headers are sent already: report in-band, as OpenAI does
            yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
            yield "data: [DONE]\n\n"
            return
        final_text = gen.text.split(hold, 1)[0] if hold else gen.text
        if final_text.startswith(sent) and len(final_text) > len(sent):
            yield f"data: {json.dumps(delta_chunk(final_text[len(sent):]))}\n\n"
        finals = final_chunks(gen)
        for c in finals if isinstance(finals, list) else [finals]:
            yield f"data: {json.dumps(c)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
