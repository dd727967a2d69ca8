"""How a finished image classification run is used: `ImageInference` (image files, raw bytes or PIL images in;
label and per-class probabilities out; `tuneforge eval` on labelled images) and `ImageExports` (pixel values as
the ONNX graph's input, fixed images for the merge check, weight-only int8)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuneforge.errors import ConfigError, DataError, first_line
from tuneforge.tasks.classification_hooks import ClassifierExports, ClassifierInference

if TYPE_CHECKING:
    from tuneforge.data.images import Preprocessing
    from tuneforge.tasks.image_classification import ImageRows


def decode(item, i: int):
    """An input to predict: a path, raw image bytes, or a PIL image -> (PIL RGB image, its name)."""
    from PIL import Image, UnidentifiedImageError

    from tuneforge.data.images import open_image

    if isinstance(item, Image.Image):
        return item.convert("RGB"), f"image {i}"
    if isinstance(item, (bytes, bytearray)):
        try:
            img = Image.open(io.BytesIO(item))
            img.load()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"image {i} ({len(item)} bytes) is not a readable image: {first_line(exc, 160)}") from None
        return img.convert("RGB"), f"image {i}"
    return open_image(str(item)), str(item)


class ImageInference(ClassifierInference):
    """Image files, raw bytes or PIL images in; label and per-class probabilities out."""

    input_kind = "image"

    def load_processor(self, path: str, trust_remote_code: bool = False) -> Preprocessing:
        """The model's image preprocessing (size, resize/crop, normalisation) from its preprocessor_config.json."""
        from tuneforge.data.images import Preprocessing

        return Preprocessing.from_dir(path)

    def head_kwargs(self, meta: dict) -> dict:
        # the base's own head (ImageNet's 1000 classes) gives way to one sized to the run's labels
        kwargs = super().head_kwargs(meta)
        return {**kwargs, "ignore_mismatched_sizes": True} if kwargs else kwargs

    def logits(self, run: Any, images: list, pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Logits for `images` (paths, bytes or PIL images) in input order."""
        import torch

        from tuneforge.data.images import eval_transform

        transform = eval_transform(run.tokenizer)
        width = len(run.meta["labels"])
        out = np.zeros((len(images), width), dtype=np.float32)
        first = next(run.model.parameters())
        device, dtype = first.device, (first.dtype if first.is_floating_point() else torch.float32)
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                chunk = [transform(decode(x, s + k)[0]) for k, x in enumerate(images[s : s + batch_size])]
                out[s : s + len(chunk)] = (
                    run.model(pixel_values=torch.stack(chunk).to(device, dtype)).logits.float().cpu().numpy()
                )
        return out

    def predict(self, run: Any, images: list, batch_size: int = 64) -> list[dict]:
        """Label and per-class probabilities for each image (a path, raw bytes or a PIL image)."""
        from tuneforge.evaluation.classification import softmax

        if not images:
            raise DataError("no images to predict")
        probs = softmax(self.logits(run, list(images), batch_size=batch_size))
        names = run.meta["labels"]
        return [
            {
                "image": x if isinstance(x, str) else f"image {i}",
                "label": names[int(p.argmax())],
                "probabilities": {n: round(float(v), 6) for n, v in zip(names, p)},
            }
            for i, (x, p) in enumerate(zip(images, probs))
        ]

    def evaluate(
        self, run: Any, source: str, out_dir, text_column: str | None = None, label_column: str | None = None
    ) -> dict:
        """Metrics, per-class report, confusion matrix and misclassified grid on labelled images (`source`: a
        folder of class folders, a table or a builtin set; `text_column` names the image column of a table)."""
        from tuneforge.data.images import check_images, read_image_records
        from tuneforge.evaluation.classification import write_classification_report
        from tuneforge.tasks.image_report import misclassified_section

        meta = run.meta
        df = read_image_records(
            source,
            "--data",
            text_column or meta.get("image_column", "image"),
            label_column or meta.get("label_column", "label"),
        )
        if len(df) == 0:
            raise DataError(f"{source}: no images found")
        check_images(df["image"].tolist())
        names = meta["labels"]
        ids = []
        for s in df["label"].astype(str):
            if s not in names:
                raise DataError(f"{source}: label '{s}' was never seen in training (known labels: {', '.join(names)})")
            ids.append(names.index(s))
        logits = self.logits(run, df["image"].tolist())
        result = write_classification_report(
            logits, np.asarray(ids), names, out_dir, title=f"{source} ({len(df)} images)"
        )
        misclassified_section(df["image"].tolist(), logits, np.asarray(ids), names, Path(out_dir))
        return result


class ImageExports(ClassifierExports):
    """Pixel values in (one dynamic batch axis), fixed images for the merge check, weight-only int8."""

    parity_batch_size = 16
    # convolution weights are quantized too (per output channel); activations stay fp32
    int8_scheme = "weight-only"

    def check_inputs(self, processor: Preprocessing, meta: dict, texts: list[str] | None = None) -> list[dict]:
        """Four fixed images (gradients and seeded noise) for the merge equivalence check."""
        import torch

        if texts:
            raise ConfigError("--text does not apply to an image model (its merge check uses fixed images)")
        g = torch.Generator().manual_seed(0)
        h, w = processor.height, processor.width
        ramp = torch.linspace(-2, 2, w).expand(3, h, w)
        images = [
            ramp,
            ramp.transpose(1, 2) if h == w else -ramp,
            torch.randn(3, h, w, generator=g),
            torch.rand(3, h, w, generator=g) * 4 - 2,
        ]
        return [{"pixel_values": x.unsqueeze(0).contiguous()} for x in images]

    def held_out_rows(self, split: ImageRows, n: int) -> list[dict]:
        rows = []
        for i in range(n):
            r = split[i]
            rows.append({"pixel_values": r["pixel_values"], "label": r["labels"]})
        return rows

    def batch(self, rows: list[dict], processor: Preprocessing) -> dict:
        import torch

        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}

    def output_rows(self, logits: np.ndarray, batch: dict, rows: list[dict]) -> list:
        return [logits[k] for k in range(len(rows))]

    def onnx_inputs(self, processor: Preprocessing) -> tuple[list[str], tuple, tuple]:
        import torch
        from torch.export import Dim

        example = torch.randn(2, 3, processor.height, processor.width)
        return ["pixel_values"], (example,), ({0: Dim("batch", min=1, max=1024)},)
