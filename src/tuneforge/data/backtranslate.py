"""Back-translation: translate each text into a pivot language and back with two local seq2seq models
(for example Marian en->de and de->en), in batches, to get paraphrases that keep the label."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tuneforge.errors import ConfigError, ModelError, first_line

log = logging.getLogger("tuneforge")


def _load(path: str, key: str):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    p = Path(path).expanduser()
    if not p.is_dir() or not (p / "config.json").is_file():
        raise ModelError(
            f"data.augment.back_translation.{key}: '{path}' is not a local transformers model "
            f"directory (no config.json); back-translation needs local seq2seq translation models"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(p))
        model = AutoModelForSeq2SeqLM.from_pretrained(str(p)).eval()
    except Exception as exc:
        first = first_line(exc, 160)
        raise ModelError(
            f"data.augment.back_translation.{key}: cannot load '{path}' as a seq2seq model with a tokenizer: {first}"
        ) from None
    return tok, model


class BackTranslator:
    """Callable: a list of texts -> their round-trip translations (same order).

    Args:
        to_model: local directory of the source -> pivot model.
        back_model: local directory of the pivot -> source model.
        batch_size: texts per generation batch.
        max_length: longest generated sequence, in tokens.
        num_beams: beam width; 1 is greedy.
        sample: sample (top-k 50) instead of searching, for more varied paraphrases.
        seed: generation seed (sampling).

    Raises:
        ConfigError: a model is not configured.
        ModelError: a directory is not a loadable seq2seq model.
    """

    def __init__(
        self,
        to_model: str | None,
        back_model: str | None,
        batch_size: int = 16,
        max_length: int = 256,
        num_beams: int = 1,
        sample: bool = False,
        seed: int = 0,
    ):
        if not to_model or not back_model:
            raise ConfigError(
                "back-translation needs two local translation models: set "
                "data.augment.back_translation.to_model and back_model (no model is configured)"
            )
        if batch_size < 1 or max_length < 1 or num_beams < 1:
            raise ConfigError("data.augment.back_translation: batch_size, max_length and num_beams must be >= 1")
        self.to = _load(to_model, "to_model")
        self.back = _load(back_model, "back_model")
        self.batch_size, self.max_length, self.num_beams, self.sample, self.seed = (
            batch_size,
            max_length,
            num_beams,
            sample,
            seed,
        )

    @classmethod
    def from_config(cls, bt, seed: int = 0) -> BackTranslator:
        """Build from a `data.augment.back_translation` section."""
        return cls(bt.to_model, bt.back_model, bt.batch_size, bt.max_length, bt.num_beams, bt.sample, seed)

    def _translate(self, texts: list[str], pair) -> list[str]:
        import torch

        tok, model = pair
        out: list[str] = []
        # longest first keeps padding low inside each batch; the original order is restored below
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        result: list[str] = [""] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = tok(
                [texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
            )
            with torch.inference_mode():
                gen = model.generate(
                    **enc,
                    max_new_tokens=self.max_length,
                    num_beams=self.num_beams,
                    do_sample=self.sample,
                    top_k=50 if self.sample else None,
                )
            for i, text in zip(idx, tok.batch_decode(gen, skip_special_tokens=True)):
                result[i] = text.strip()
        out.extend(result)
        return out

    def __call__(self, texts: Sequence[str]) -> list[str]:
        from transformers import set_seed

        set_seed(self.seed)
        texts = [str(t) for t in texts]
        if not texts:
            return []
        pivot = self._translate(texts, self.to)
        log.info("back-translation: %d texts translated there and back", len(texts))
        return self._translate(pivot, self.back)
