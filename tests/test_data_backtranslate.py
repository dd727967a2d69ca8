"""Back-translation plumbing with a tiny random seq2seq model saved to disk (what it outputs is noise; the test
checks batching, order, determinism, and the clear errors)."""

import pytest

from tuneforge.data.augment import Augmenter, augment_dataset
from tuneforge.data.backtranslate import BackTranslator
from tuneforge.errors import ConfigError, ModelError

pytestmark = pytest.mark.unit

WORDS = "the a film movie good bad plot story was is very dull great der ein gut schlecht sehr".split()


@pytest.fixture(scope="module")
def tiny_seq2seq(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bart")
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *WORDS])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    cfg = BartConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=None,
        forced_bos_token_id=None,
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


TEXTS = ["the film was very good", "bad plot", "a dull movie is a dull movie", "great story"]


def test_round_trip_is_batched_ordered_and_deterministic(tiny_seq2seq):
    bt = BackTranslator(tiny_seq2seq, tiny_seq2seq, batch_size=3, max_length=8)
    out = bt(TEXTS)
    assert len(out) == len(TEXTS) and all(isinstance(t, str) for t in out)
    assert out == bt(TEXTS)
    # batching and the longest-first order inside it do not change what each text gets
    one_by_one = BackTranslator(tiny_seq2seq, tiny_seq2seq, batch_size=1, max_length=8)
    assert one_by_one(TEXTS) == out
    assert bt([]) == []


def test_back_translation_as_an_augmentation_op(tiny_seq2seq):
    bt = BackTranslator(tiny_seq2seq, tiny_seq2seq, batch_size=4, max_length=8)
    made = augment_dataset(TEXTS, [1, 1, 0, 1], Augmenter(ops=["back_translation"]), seed=0, back_translator=bt)
    assert all(op == "back_translation" for _, _, op in made)
    assert {i for i, _, _ in made} <= {0, 1, 3}  # row 2 asked for no copy
    assert all(t != TEXTS[i] and t.strip() for i, t, _ in made)


def test_errors(tiny_seq2seq, tmp_path):
    with pytest.raises(ConfigError, match="no model is configured"):
        BackTranslator(None, tiny_seq2seq)
    with pytest.raises(ModelError, match="back_translation.back_model: '.*' is not a local transformers model"):
        BackTranslator(tiny_seq2seq, str(tmp_path / "nope"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="to_model: cannot load"):
        BackTranslator(str(tmp_path / "broken"), tiny_seq2seq)
