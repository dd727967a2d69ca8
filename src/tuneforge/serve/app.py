"""The HTTP API (FastAPI), by the interface of the run's task: OpenAI-compatible chat completions for `chat`
runs (chat_routes.py), /v1/classify for `classify` runs (classify_routes.py), /v1/models and /health for both.
Errors are JSON in OpenAI's shape ({"error": {"message", "type", "code"}}) and never carry a traceback
(error_handlers.py).

Several runs on one server (one base model, an adapter per run: `tuneforge serve RUN_A RUN_B`): the request's
`model` field (chat completions and /v1/classify) names the run that answers, /v1/models lists them, a request
without `model` gets the first; an unknown name is a 404 `model_not_found`. With one run the field is ignored, as
OpenAI clients send whatever model name they were configured with."""

from __future__ import annotations

import errno
import hmac
import socket
import time

from tuneforge.errors import ServeError
from tuneforge.serve.chat_routes import add_chat_route
from tuneforge.serve.classify_routes import add_image_classify_route, add_text_classify_route
from tuneforge.serve.context import ServeContext
from tuneforge.serve.error_handlers import add_error_handlers
from tuneforge.serve.protocol import ServeLimits, _BodyLimit, _error_body
from tuneforge.serve.worker import ModelWorker

try:  # FastAPI resolves the endpoints' (string) annotations in this module's namespace
    from starlette.requests import Request
except ImportError:  # the `serve` extra is not installed: create_app says so
    Request = None


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
    from fastapi.responses import JSONResponse

    limits = limits or ServeLimits()
    backends = list(backend) if isinstance(backend, (list, tuple)) else [backend]
    if not backends or len({b.interface for b in backends}) != 1:
        raise ServeError("one server serves one or more models of one interface (classify or chat)")
    if len({b.name for b in backends}) != len(backends):
        raise ServeError(f"two models share a name: {', '.join(b.name for b in backends)}")
    backend = backends[0]
    classify_fn = backend.classify if backend.interface == "classify" else None
    worker = ModelWorker(classify_fn, max_batch=limits.max_batch)
    ctx = ServeContext(backends, worker, limits)

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

    add_error_handlers(app)

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "task": backend.kind,
            "model": backend.name,
            "models": list(ctx.by_name),
            "uptime_s": round(time.time() - ctx.started, 1),
            "batches": worker.batches,
        }

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [
                {"id": b.name, "object": "model", "created": int(ctx.started), "owned_by": "tuneforge"}
                for b in backends
            ],
        }

    if backend.interface == "classify" and backend.task.inference.input_kind == "image":
        add_image_classify_route(app, ctx)
    elif backend.interface == "classify":
        add_text_classify_route(app, ctx)
    else:
        add_chat_route(app, ctx)
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
