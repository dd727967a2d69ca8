"""What goes over the wire: request models (strict where a mistake must be reported, lenient where OpenAI
clients send extra fields), request limits, OpenAI-shaped error bodies, and the body-size middleware."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class ServeLimits(BaseModel):
    max_texts: int = 256  # texts in one /v1/classify request
    max_input_chars: int = 20_000  # characters in one text or one chat message
    max_body_bytes: int = 4_000_000
    request_timeout_s: float = 300.0
    max_batch: int = 64  # texts in one batched classification pass


def _valid_unicode(value: str) -> str:
    """JSON may spell a lone UTF-16 surrogate (\\ud800): Python keeps it in the str, but it is not text, so the
    tokenizer and the UTF-8 response encoder would fail on it. Refused (400) rather than silently replaced, so
    the client learns that its encoder is broken instead of getting an answer about different text."""
    for i, ch in enumerate(value):
        if "\ud800" <= ch <= "\udfff":
            raise ValueError(
                f"contains a lone UTF-16 surrogate (\\u{ord(ch):04x}) at character {i}: not valid "
                f"Unicode text; send UTF-8 text (JSON escapes must pair surrogates)"
            )
    return value


# every string a client sends
Text = Annotated[str, AfterValidator(_valid_unicode)]


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text | None = None
    texts: list[Text] | None = None
    #: image runs: base64 image files (a `data:image/...;base64,` prefix is allowed)
    image: Text | None = None
    images: list[Text] | None = None
    model: Text | None = None


def decode_base64_image(value: str, i: int) -> bytes:
    """The bytes of a base64 image (with or without a data-URL prefix); APIError 400 naming the item if it is not
    base64."""
    import base64
    import binascii

    data = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"image {i} is not base64 (send the image file's bytes base64-encoded)") from None


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Text | list[TextPart]


class ChatRequest(BaseModel):
    # clients send fields this server does not use (user, presence_penalty, ...): ignored, not refused
    model_config = ConfigDict(extra="ignore")
    messages: list[Message] = Field(min_length=1)
    model: Text | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Text | list[Text] | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int = Field(1, ge=1, le=1)
    seed: int | None = None


class APIError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request", kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind


def _printable(text: str) -> str:
    """`text` with anything UTF-8 cannot encode (lone surrogates from a client's JSON) escaped, so that echoing a
    client's field name or value in an error message cannot itself fail."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_body(message: str, code: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": _printable(message), "type": kind, "code": code}}


class _BodyLimit:
    """ASGI middleware: reads the request body up to `limit` bytes before the app sees it, whatever its framing
    (Content-Length or chunked), and answers 413 JSON as soon as the body is over the limit; the app gets the
    buffered body. Memory per request is bounded by the limit plus one network read."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def _too_large(self, send, size: str | None = None) -> None:
        from starlette.responses import JSONResponse

        what = f"request body of {size} bytes" if size else "request body"
        response = JSONResponse(
            _error_body(f"{what} is over the limit of {self.limit} bytes", "body_too_large"), status_code=413
        )
        await response({"type": "http"}, None, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await self._too_large(send, value.decode())
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                # the rest of the body is read and discarded by the server, so the client gets this answer
                return await self._too_large(send)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: http.disconnect, for streaming responses

        return await self.app(scope, replay, send)


def _describe_validation(errors: list[dict]) -> tuple[str, str]:
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return f"malformed JSON body: {first.get('ctx', {}).get('error', first.get('msg', ''))}", "invalid_json"
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        msg = {"missing": "field required", "string_unicode": "not valid Unicode text (a lone UTF-16 surrogate?)"}.get(
            e.get("type"), e.get("msg", "invalid")
        )
        parts.append(f"{loc}: {msg}")
    return "invalid request: " + "; ".join(parts), "invalid_request"
