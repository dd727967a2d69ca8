"""POST /v1/classify, for runs whose interface is `classify`: texts (JSON) or images (base64 in JSON, or a
multipart upload of files), batched across requests by the model worker."""

from __future__ import annotations

from tuneforge.serve.context import ServeContext
from tuneforge.serve.protocol import APIError, ClassifyRequest, _describe_validation, decode_base64_image

try:  # FastAPI resolves the endpoints' (string) annotations in this module's namespace
    from starlette.requests import Request
except ImportError:  # the `serve` extra is not installed: create_app says so
    Request = None


def add_image_classify_route(app, ctx: ServeContext) -> None:
    """Register /v1/classify on `app` for image classification runs."""
    limits = ctx.limits

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
        chosen = ctx.pick(model)
        results = await ctx.wait(ctx.worker.classify(images, chosen.classify))
        return {
            "model": chosen.name,
            "labels": chosen.labels,
            "results": [{**({"file": n} if n else {}), **r} for n, r in zip(names, results)],
        }


def add_text_classify_route(app, ctx: ServeContext) -> None:
    """Register /v1/classify on `app` for text classification runs."""
    limits = ctx.limits

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
            raise APIError(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}", "too_many_texts")
        for i, t in enumerate(texts):
            if len(t) > limits.max_input_chars:
                raise APIError(
                    413, f"text {i} has {len(t)} characters; the limit is {limits.max_input_chars}", "input_too_long"
                )
        chosen = ctx.pick(req.model)
        results = await ctx.wait(ctx.worker.classify(texts, chosen.classify))
        return {
            "model": chosen.name,
            "labels": chosen.labels,
            "results": [{"text": t, **r} for t, r in zip(texts, results)],
        }
