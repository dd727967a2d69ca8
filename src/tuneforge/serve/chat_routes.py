"""POST /v1/chat/completions, for runs whose interface is `chat`: OpenAI-compatible chat completions, answered
whole or streamed as server-sent events (generation stops when the client disconnects)."""

from __future__ import annotations

import json
import threading
import time
import uuid

from tuneforge.errors import TuneforgeError, first_line
from tuneforge.serve.context import ServeContext
from tuneforge.serve.protocol import APIError, ChatRequest, ServeLimits, _error_body


def parse_chat(req: ChatRequest, backend, limits: ServeLimits) -> tuple[list[dict], dict, list[str]]:
    """(messages, generation settings, stop strings) of a request to `backend`; APIError (400/413) when a message
    is too long, the last one is the assistant's, the stop strings are invalid or the prompt leaves no room."""
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


def add_chat_route(app, ctx: ServeContext) -> None:
    """Register /v1/chat/completions on `app`."""

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):
        chosen = ctx.pick(req.model)
        messages, settings, stop = parse_chat(req, chosen, ctx.limits)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not req.stream:
            r = await ctx.wait(ctx.worker.call(lambda: chosen.complete(messages, settings, stop, req.seed)))
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
        return _stream(ctx, chosen, req, messages, settings, stop, cid, created)


def _stream(
    ctx: ServeContext,
    chosen,
    req: ChatRequest,
    messages: list[dict],
    settings: dict,
    stop: list[str],
    cid: str,
    created: int,
):
    """The streamed answer (a StreamingResponse of chat.completion.chunk events, then `[DONE]`)."""
    from fastapi.responses import StreamingResponse

    streamer = chosen.make_streamer(timeout=ctx.limits.request_timeout_s)
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

    future = ctx.worker.call(job)
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
                r = await ctx.wait(future)
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
