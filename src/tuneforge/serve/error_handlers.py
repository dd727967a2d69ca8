"""How failures reach the client: every error is JSON in OpenAI's shape ({"error": {"message", "type", "code"}})
with a fitting status, and never carries a traceback (an unexpected one is logged for the operator)."""

from __future__ import annotations

import logging

from tuneforge.errors import TuneforgeError, first_line
from tuneforge.serve.protocol import APIError, _describe_validation, _error_body

log = logging.getLogger("tuneforge")


def add_error_handlers(app) -> None:
    """Register the exception handlers of `app` (a FastAPI application)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

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
