"""The HTTP API (FastAPI), by the interface of the run's task: OpenAI-compatible chat completions for `chat`
runs, /v1/classify for `classify` runs, /v1/models and /health for both. Errors are JSON in OpenAI's shape
({"error": {"message", "type", "code"}}) and never carry a traceback.

Several runs on one server (one base model, an adapter per run: `tuneforge serve RUN_A RUN_B`): the request's
`model` field (chat completions and /v1/classify) names the run that answers, /v1/models lists them, a request
without `model` gets the first; an unknown name is a 404 `model_not_found`. With one run the field is ignored, as
OpenAI clients send whatever model name they were configured with."""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import socket
import threading
import time
import uuid

from tuneforge.errors import ServeError, TuneforgeError, first_line
from tuneforge.serve.protocol import (
    APIError,
    ChatRequest,
    ClassifyRequest,
    ServeLimits,
    _BodyLimit,
    _describe_validation,
    _error_body,
    decode_base64_image,
)
from tuneforge.serve.worker import ModelWorker

try:  # FastAPI resolves the endpoints' (string) annotations in this module's namespace
    from starlette.requests import Request
except ImportError:  # the `serve` extra is not installed: create_app says so
    Request = None

log = logging.getLogger("tuneforge")


def create_app(backend, api_key: str | None = None, limits: ServeLimits | None = None):
    """Build the FastAPI application around a loaded backend (or several, of one interface).

    Args:
        backend: a ClassifierBackend or ChatBackend (tuneforge.serve.backends), or a list of them (one per run,
            from `load_backends`; the first answers requests that name no model); the interface picks the routes.
        api_key: when set, every request needs `Authorization: Bearer <api_key>`.
        limits: request size limits and timeouts.
    Returns the app; its model worker thread stops when the app shuts down."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or ServeLimits()
    backends = list(backend) if isinstance(backend, (list, tuple)) else [backend]
    if not backends or len({b.interface for b in backends}) != 1:
        raise ServeError("one server serves one or more models of one interface (classify or chat)")
    if len({b.name for b in backends}) != len(backends):
        raise ServeError(f"two models share a name: {', '.join(b.name for b in backends)}")
    backend = backends[0]
    by_name = {b.name: b for b in backends}
    classify_fn = backend.classify if backend.interface == "classify" else None
    worker = ModelWorker(classify_fn, max_batch=limits.max_batch)
    started = time.time()

    def pick(name: str | None):
        """The backend a request names in its `model` field; the first without one (or with one model)."""
        if name is None or len(backends) == 1:
            return backend
        if name not in by_name:
            raise APIError(
                404, f"the model '{name}' does not exist; available: {', '.join(by_name)}", "model_not_found"
            )
        return by_name[name]

    @asynccontextmanager
    async def lifespan(_app):
        yield
        worker.close()

    app = FastAPI(title="tuneforge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    app.state.backend = backend
    app.state.backends = backends
    # inside the auth check below (added later, so it runs first): unauthenticated bodies are not read
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key is not None:
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                msg = "missing API key: send 'Authorization: Bearer <key>'" if not given else "invalid API key"
                return JSONResponse(_error_body(msg, "invalid_api_key", "authentication_error"), status_code=401)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_request, exc: RequestValidationError):
        msg, code = _describe_validation(exc.errors())
        return JSONResponse(_error_body(msg, code), status_code=400)

    @app.exception_handler(APIError)
    async def on_api_error(_request, exc: APIError):
        return JSONResponse(_error_body(exc.message, exc.code, exc.kind), status_code=exc.status)

    @app.exception_handler(TuneforgeError)
    async def on_user_error(_request, exc: TuneforgeError):
        return JSONResponse(_error_body(str(exc), "invalid_request"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(_error_body(str(exc.detail), code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def on_unexpected(_request, exc: Exception):
        # logged for the operator; the client gets one line, never the traceback
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        return JSONResponse(
            _error_body(f"internal error: {first_line(exc, with_type=True)}", "internal_error", "server_error"),
            status_code=500,
        )

    async def wait(future):
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=limits.request_timeout_s)
        except asyncio.TimeoutError:
            raise APIError(
                504, f"the model did not answer within {limits.request_timeout_s:g} s", "timeout", "server_error"
            ) from None

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "task": backend.kind,
            "model": backend.name,
            "models": list(by_name),
            "uptime_s": round(time.time() - started, 1),
            "batches": worker.batches,
        }

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [
                {"id": b.name, "object": "model", "created": int(started), "owned_by": "tuneforge"} for b in backends
            ],
        }

    if backend.interface == "classify" and getattr(backend.task, "input_kind", "text") == "image":

        @app.post("/v1/classify")
        async def classify_images(request: Request):
            """JSON {"image": base64} / {"images": [base64, ...]}, or a multipart upload of image files (any
            field name; a `model` form field picks the run)."""
            from pydantic import ValidationError

            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                form = await request.form()
                uploads = [
                    (v.filename or f"upload {i}", await v.read())
                    for i, (k, v) in enumerate(form.multi_items())
                    if hasattr(v, "read")
                ]
                if not uploads:
                    raise APIError(400, "the multipart request holds no file; upload images as file fields")
                names, images = [n for n, _ in uploads], [b for _, b in uploads]
                model = form.get("model") if isinstance(form.get("model"), str) else None
            else:
                try:
                    req = ClassifyRequest.model_validate_json(await request.body())
                except ValidationError as exc:
                    msg, code = _describe_validation(exc.errors())
                    raise APIError(400, msg, code) from None
                if req.text is not None or req.texts is not None:
                    raise APIError(
                        400,
                        "this model classifies images: send 'image' or 'images' (base64), or "
                        "upload files as multipart/form-data",
                    )
                if (req.image is None) == (req.images is None):
                    raise APIError(400, "give exactly one of 'image' (base64) or 'images' (a list of base64 images)")
                encoded = [req.image] if req.image is not None else req.images
                images = [decode_base64_image(v, i) for i, v in enumerate(encoded)]
                names, model = [None] * len(images), req.model
            if not images:
                raise APIError(400, "'images' is empty")
            if len(images) > limits.max_texts:
                raise APIError(
                    413, f"{len(images)} images in one request; the limit is {limits.max_texts}", "too_many_inputs"
                )
            chosen = pick(model)
            results = await wait(worker.classify(images, chosen.classify))
            return {
                "model": chosen.name,
                "labels": chosen.labels,
                "results": [{**({"file": n} if n else {}), **r} for n, r in zip(names, results)],
            }

        return app

    if backend.interface == "classify":

        @app.post("/v1/classify")
        async def classify(req: ClassifyRequest):
            if req.image is not None or req.images is not None:
                raise APIError(400, "this model classifies texts: send 'text' or 'texts'")
            if (req.text is None) == (req.texts is None):
                raise APIError(400, "give exactly one of 'text' (a string) or 'texts' (a list of strings)")
            texts = [req.text] if req.text is not None else req.texts
            if not texts:
                raise APIError(400, "'texts' is empty")
            if len(texts) > limits.max_texts:
                raise APIError(
                    413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}", "too_many_texts"
                )
            for i, t in enumerate(texts):
                if len(t) > limits.max_input_chars:
                    raise APIError(
                        413,
                        f"text {i} has {len(t)} characters; the limit is {limits.max_input_chars}",
                        "input_too_long",
                    )
            chosen = pick(req.model)
            results = await wait(worker.classify(texts, chosen.classify))
            return {
                "model": chosen.name,
                "labels": chosen.labels,
                "results": [{"text": t, **r} for t, r in zip(texts, results)],
            }

        return app

    def parse_chat(req: ChatRequest, backend) -> tuple[list[dict], dict, list[str]]:
        messages = []
        for i, m in enumerate(req.messages):
            content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
            if len(content) > limits.max_input_chars:
                raise APIError(
                    413,
                    f"messages.{i}.content has {len(content)} characters; the limit is {limits.max_input_chars}",
                    "input_too_long",
                )
            messages.append({"role": m.role, "content": content})
        if messages[-1]["role"] == "assistant":
            raise APIError(400, "the last message must be from the user (or system), not the assistant")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stop) > 4 or any(not s for s in stop):
            raise APIError(400, "stop: at most 4 non-empty strings")
        settings = {
            "temperature": req.temperature,
            "top_p": req.top_p,
            "max_new_tokens": req.max_completion_tokens or req.max_tokens,
        }
        n_prompt = len(backend.prompt(messages))
        room = backend.context_length - n_prompt
        if room < 1 or (settings["max_new_tokens"] or 1) > room:
            raise APIError(
                400,
                f"the prompt has {n_prompt} tokens and max_tokens is {settings['max_new_tokens']}; "
                f"the model's context is {backend.context_length} tokens",
                "context_length_exceeded",
            )
        return messages, settings, stop

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):
        chosen = pick(req.model)
        messages, settings, stop = parse_chat(req, chosen)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not req.stream:
            r = await wait(worker.call(lambda: chosen.complete(messages, settings, stop, req.seed)))
            return {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": chosen.name,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": r.text}, "finish_reason": r.finish_reason}
                ],
                "usage": {
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                    "total_tokens": r.prompt_tokens + r.completion_tokens,
                },
            }

        streamer = chosen.make_streamer(timeout=limits.request_timeout_s)
        cancel = threading.Event()  # set when the client disconnects: its generation stops or never starts

        def job():
            try:
                if cancel.is_set():
                    streamer.end()
                    return None
                return chosen.complete(messages, settings, stop, req.seed, streamer=streamer, cancel=cancel)
            except BaseException:
                streamer.end()  # else the reader would wait for tokens that never come
                raise

        future = worker.call(job)
        include_usage = bool((req.stream_options or {}).get("include_usage"))

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            body = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": chosen.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        async def events():
            from starlette.concurrency import iterate_in_threadpool

            try:
                yield chunk({"role": "assistant", "content": ""})
                text, emitted, hold = "", "", max((len(s) for s in stop), default=1) - 1
                try:
                    async for piece in iterate_in_threadpool(iter(streamer)):
                        text += piece
                        hit = [text.index(s) for s in stop if s in text]
                        # hold back a tail that could be the start of a stop string
                        safe = text[: min(hit) if hit else len(text) - hold].lstrip()
                        if safe.startswith(emitted) and len(safe) > len(emitted):
                            yield chunk({"content": safe[len(emitted) :]})
                            emitted = safe
                    r = await wait(future)
                    # the final answer (cut at a stop string, stripped) is authoritative for what is held back
                    if r.text.startswith(emitted) and len(r.text) > len(emitted):
                        yield chunk({"content": r.text[len(emitted) :]})
                    usage = {
                        "prompt_tokens": r.prompt_tokens,
                        "completion_tokens": r.completion_tokens,
                        "total_tokens": r.prompt_tokens + r.completion_tokens,
                    }
                    yield chunk({}, r.finish_reason)
                    if include_usage:
                        body = {
                            "id": cid,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": chosen.name,
                            "choices": [],
                            "usage": usage,
                        }
                        yield f"data: {json.dumps(body)}\n\n"
                except (APIError, TuneforgeError, Exception) as exc:  # headers are sent: report in the stream
                    msg = getattr(exc, "message", None) or first_line(exc)
                    yield f"data: {json.dumps(_error_body(msg, 'stream_error', 'server_error'))}\n\n"
                yield "data: [DONE]\n\n"
            finally:  # done, or the client disconnected (the generator is closed): stop generating
                cancel.set()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    return app


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one), for uvicorn to listen on.

    Raises ServeError, in one line, when the address cannot be bound (port in use, no such local address,
    a privileged port, an unresolvable host name)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ServeError(f"cannot resolve --host {host}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # like uvicorn: a port left in TIME_WAIT by a previous server can be reused; one with a live listener not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is already in use (another server is listening there): "
                f"stop it or pass another --port"
            ) from None
        if exc.errno == errno.EACCES:
            raise ServeError(
                f"no permission to bind port {port} on {host} (ports below 1024 need privileges): pass another --port"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ServeError(f"cannot bind {host}: not an address of this machine (--host)") from None
        raise ServeError(f"cannot bind port {port} on {host}: {exc.strerror or exc}") from None
    return sock


def serve(
    target: str | list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    insecure: bool = False,
    limits: ServeLimits | None = None,
    log_level: str = "info",
) -> None:
    """Load a run (or export), or several runs of one base model and task, and serve them with uvicorn until
    interrupted.

    Args:
        target: run directory or exported directory, or a list of them (several: one shared base model with an
            adapter per run where the methods allow; the request's `model` field picks the run, the first by
            default).
        host, port: where to listen (loopback by default).
        api_key: require `Authorization: Bearer <api_key>` on every request.
        insecure: allow a non-loopback host without an API key.
        limits: request limits.
    Raises ConfigError for a non-loopback host without an API key and ServeError when host:port cannot be bound
    (both checked before the model loads); ModelError when a target cannot be served, or for runs of different
    base models or task types (checked before the port is bound)."""
    from pathlib import Path

    import uvicorn

    from tuneforge.errors import ModelError
    from tuneforge.serve.backends import check_bind, load_backends

    targets = [target] if isinstance(target, str) else list(target)
    check_bind(host, api_key, insecure)
    for t in targets:
        if not Path(t).exists():  # before binding: a typo in the path is the likelier mistake
            raise ModelError(f"run directory not found: {t}")
    if len(targets) > 1:  # runs that cannot be served together: one line before anything loads
        from tuneforge.inference.adapters import read_metas

        read_metas(targets)
    # bound before the (slow) model load, and handed to uvicorn, so a busy port is one line at once rather than
    # uvicorn's log and exit code after the load
    sock = bind_listener(host, port)
    try:
        backends = load_backends(targets)
        backend = backends[0]
        app = create_app(backends, api_key=api_key, limits=limits)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        if len(backends) == 1:
            what = f"{backend.kind} model '{backend.name}'"
        else:
            what = (
                f"{len(backends)} {backend.kind} models ({', '.join(b.name for b in backends)}; default "
                f"'{backend.name}')"
            )
        print(
            f"tuneforge: serving {what} on http://{shown}:{bound}{' (API key required)' if api_key else ''}", flush=True
        )
        server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False))
        try:
            server.run(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits with its own code (3) when startup fails: not a data error
            raise ServeError(
                f"the server on port {bound} could not start (uvicorn exit status {exc.code}; see the log above)"
            ) from None
        if not server.started and not server.should_exit:
            raise ServeError(f"the server on port {bound} could not start (see the log above)")
    finally:
        sock.close()
