"""Vocabulary expansion (tuneforge.models.vocabulary): new tokens learnt from a Chinese + English corpus, added to a
byte-level BPE and a WordPiece tokenizer (old ids kept, decoding exact), the embeddings grown with each new row the mean
of its old pieces' rows, and the new rows trained alone through PEFT's trainable_token_indices, saved and reloaded."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from sft_common import make_tiny_llama, make_tokenizer
from tuneforge.data.text import count_han
from tuneforge.errors import ConfigError
from tuneforge.models.vocabulary import (
    VocabularyExtension,
    chars_per_token,
    extend_tokenizer,
    resize_and_init,
    tokenizer_kind,
    train_new_tokens,
)

from conftest import _vocab, wordpiece_tokenizer

pytestmark = pytest.mark.unit

SUBJECTS = ["我们", "他们", "研究人员", "工程师"]
ACTIONS = ["用中文数据训练模型", "在中文数据上训练模型", "收集更多数据来训练模型", "评估中文模型的训练效果"]
ENGLISH = ["The model is training on Chinese data", "Training data matters for the model"]
CORPUS = [s + a + "。" for s in SUBJECTS for a in ACTIONS] * 2 + ENGLISH * 4
WORDS = ["模型", "训练", "数据", "中文"]
PROBE = ["研究人员在中文数据上训练模型。The model", "工程师评估中文模型的训练效果"]
MIXED = ["我们用中文数据训练模型。", "研究人员评估中文模型的训练效果", "The model is training on 中文数据 data"]


def _extended_bpe(new_tokens: int = 64):
    tok = make_tokenizer()
    old = dict(tok.get_vocab())
    ext = extend_tokenizer(tok, train_new_tokens(tok, CORPUS, new_tokens))
    return tok, old, ext


def _bert_tokenizer():
    """The tiny BERT tokenizer of conftest.py over its vocabulary without the duplicate 'a' (a duplicate leaves a gap
    in the ids: tokenizers would hand the last old id to the first added token; extend_tokenizer refuses that)."""
    return wordpiece_tokenizer(list(dict.fromkeys(_vocab())))


def _extended_wordpiece():
    from tokenizers import decoders

    tok = _bert_tokenizer()
    tok.backend_tokenizer.decoder = decoders.WordPiece()  # as a real BERT tokenizer has (the test helper has none)
    old = dict(tok.get_vocab())
    ext = extend_tokenizer(tok, [*train_new_tokens(tok, CORPUS, 200), "模型"])
    return tok, old, ext


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False).input_ids


def test_byte_level_bpe_learns_words_keeps_old_ids_and_decodes_exactly(tmp_path):
    from transformers import AutoTokenizer

    tok, old, ext = _extended_bpe()
    assert tokenizer_kind(tok) == "byte-level-bpe"
    assert set(WORDS) <= set(ext.tokens) and all(len(_ids(tok, w)) == 1 for w in WORDS)
    assert old.items() <= tok.get_vocab().items()
    assert ext.ids == list(range(len(old), len(old) + len(ext.tokens))) == tok.convert_tokens_to_ids(ext.tokens)
    assert all(len(ext.pieces[t]) >= 2 and max(ext.pieces[t]) < len(old) for t in ext.tokens)
    for text in [*CORPUS, *MIXED]:
        assert tok.decode(_ids(tok, text)) == text
    assert _ids(tok, "pretraining") == _ids(make_tokenizer(), "pretraining")  # no new token inside other words
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert all(_ids(again, t) == _ids(tok, t) and again.decode(_ids(again, t)) == t for t in MIXED)


def test_byte_level_decoder_mangles_plain_added_tokens_and_extend_keeps_them_exact(tmp_path):
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    text = "a café, naïve ĀĀ 模型 here"
    plain = make_tokenizer()
    plain.add_tokens([AddedToken(t, normalized=False) for t in ("café", "naïve", "ĀĀ")])
    assert plain.decode(_ids(plain, text)) != text  # the ByteLevel decoder reads 'é' as the byte 0xE9
    tok = make_tokenizer()
    ext = extend_tokenizer(tok, ["café", "naïve", "ĀĀ", "Ā", "模型", "café"])
    assert ext.tokens == ["café", "naïve", "ĀĀ", "模型"]  # "Ā" is the raw byte token 0x00: skipped
    assert tok.decode(_ids(tok, text)) == text and len(_ids(tok, "café")) == 1
    assert tok.convert_tokens_to_string(tok.convert_ids_to_tokens(_ids(tok, text))) == text
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.decode(_ids(again, text)) == text
    assert extend_tokenizer(tok, ["café", "hello", "模型"]).tokens == []  # already there: skipped, not an error


def test_wordpiece_learns_words_keeps_old_ids_and_decodes_to_the_normalised_text():
    tok, old, ext = _extended_wordpiece()
    assert tokenizer_kind(tok) == "wordpiece"
    for word in ["training", "model", "data", "模", "型", "模型"]:
        assert word in ext.tokens and len(_ids(tok, word)) == 1
    assert _ids(tok, "Training") == _ids(tok, "training")  # the uncased tokenizer's lowercasing still applies
    assert old.items() <= tok.get_vocab().items()
    assert ext.ids == list(range(len(old), len(old) + len(ext.tokens)))
    norm = tok.backend_tokenizer.normalizer
    for text in [*CORPUS, *MIXED]:
        ids = _ids(tok, text)
        assert tok.unk_token_id not in ids
        # WordPiece does not keep whitespace (BERT spaces out every CJK character): compare without it
        assert re.sub(r"\s", "", tok.decode(ids)) == re.sub(r"\s", "", norm.normalize_str(text))
        assert _ids(tok, tok.decode(ids)) == ids


@pytest.mark.parametrize("tie", [True, False])
def test_resize_and_init_a_causal_lm(tmp_path, tie):
    from transformers import LlamaForCausalLM

    tok, old, ext = _extended_bpe()
    model = LlamaForCausalLM.from_pretrained(make_tiny_llama(tmp_path, make_tokenizer(), tie=tie))
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()
    resize_and_init(model, ext)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == head.shape[0] == model.config.vocab_size == len(tok)
    assert (head.data_ptr() == emb.data_ptr()) is tie
    for w, before in ((emb, before_in), (head, before_out)):
        assert torch.equal(w[: len(old)], before)
        for token, i in zip(ext.tokens, ext.ids):
            assert torch.allclose(w[i], before[ext.pieces[token]].mean(0), atol=1e-6)
    batch = tok(MIXED, padding=True, return_tensors="pt")
    assert max(batch.input_ids.flatten().tolist()) >= len(old)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()


def test_resize_and_init_never_shrinks_a_padded_vocabulary(tmp_path):
    from transformers import LlamaForCausalLM

    tok, old, ext = _extended_bpe(8)
    rows = len(old) + 64
    model = LlamaForCausalLM.from_pretrained(make_tiny_llama(tmp_path, make_tokenizer(), vocab_size=rows))
    before = model.get_input_embeddings().weight.detach().clone()
    resize_and_init(model, ext)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == model.config.vocab_size == rows > len(tok)
    untouched = [i for i in range(rows) if i not in set(ext.ids)]
    assert torch.equal(emb[untouched], before[untouched])
    assert all(torch.allclose(emb[i], before[ext.pieces[t]].mean(0), atol=1e-6) for t, i in zip(ext.tokens, ext.ids))


@pytest.mark.parametrize("cls", ["BertModel", "BertForSequenceClassification", "BertForMaskedLM"])
def test_resize_and_init_an_encoder(cls):
    import transformers

    tok, old, ext = _extended_wordpiece()
    config = transformers.BertConfig(
        vocab_size=len(old), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    model = getattr(transformers, cls)(config).eval()
    before = model.get_input_embeddings().weight.detach().clone()
    head = model.get_output_embeddings()
    bias = head.bias.detach().clone() if head is not None else None
    resize_and_init(model, ext)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == model.config.vocab_size == len(tok) and torch.equal(emb[: len(old)], before)
    for token, i in zip(ext.tokens, ext.ids):
        assert torch.allclose(emb[i], before[ext.pieces[token]].mean(0), atol=1e-6)
        if bias is not None:  # BertForMaskedLM: the head's weight is tied, its bias is not
            assert torch.allclose(model.get_output_embeddings().bias[i], bias[ext.pieces[token]].mean(), atol=1e-6)
    batch = tok(MIXED, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out[0]).all()


@pytest.mark.parametrize("tie", [True, False])
def test_trainable_token_indices_train_only_the_new_rows_and_reload(tmp_path, tie):
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok, old, ext = _extended_bpe()
    base_dir = make_tiny_llama(tmp_path / "base", make_tokenizer(), tie=tie)
    model = LlamaForCausalLM.from_pretrained(base_dir)
    resize_and_init(model, ext)
    start_in = model.get_input_embeddings().weight.detach().clone()
    start_out = model.get_output_embeddings().weight.detach().clone()
    targets = {"embed_tokens": ext.ids} if tie else {"embed_tokens": ext.ids, "lm_head": ext.ids}
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], trainable_token_indices=targets)
    peft_model = get_peft_model(model, config)
    batch = tok(MIXED, padding=True, return_tensors="pt")
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    peft_model(**batch, labels=labels).loss.backward()
    optimizer.step()
    peft_model.eval()
    probe = tok(PROBE, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = peft_model(**probe).logits
    merged = copy.deepcopy(peft_model).merge_and_unload()
    emb, head = merged.get_input_embeddings().weight, merged.get_output_embeddings().weight
    for w, start in ((emb, start_in), (head, start_out)):
        assert torch.equal(w[: len(old)], start[: len(old)])  # every old row of the effective weight untouched
        assert not torch.isclose(w[ext.ids], start[ext.ids]).all(dim=1).any()  # every new row moved
    assert (head.data_ptr() == emb.data_ptr()) is tie
    with torch.no_grad():
        assert torch.allclose(merged(**probe).logits, logits, atol=1e-5)

    # PEFT's default (save_embedding_layers="auto") sees the resized embedding and saves the whole matrix (and the
    # head's) into the adapter; False keeps only the new rows (trainable_tokens_delta), which is enough: they hold
    # the trained values of every new id, whatever the freshly resized base has in those rows
    for full in ("auto", False):
        out = tmp_path / f"adapter-{full}"
        peft_model.save_pretrained(out, save_embedding_layers=full)
        tok.save_pretrained(out)
        saved = load_file(out / "adapter_model.safetensors")
        assert any(k.endswith("base_layer.weight") for k in saved) is bool(full)
        assert saved["base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"].shape[0] == len(
            ext.ids
        )
        tok2 = AutoTokenizer.from_pretrained(out)
        base = LlamaForCausalLM.from_pretrained(base_dir)
        base.resize_token_embeddings(len(tok2))  # its new rows (mean-resized) are not the trained model's
        reloaded = PeftModel.from_pretrained(base, out).eval()
        probe2 = tok2(PROBE, padding=True, return_tensors="pt")
        assert torch.equal(probe2.input_ids, probe.input_ids)
        with torch.no_grad():
            assert torch.allclose(reloaded(**probe2).logits, logits, atol=1e-5)
            assert torch.allclose(reloaded.merge_and_unload()(**probe2).logits, logits, atol=1e-5)


def _saved(tok, token: str, corpus: str) -> int:
    """The documented ranking key: occurrences x tokens saved per occurrence."""
    ids = _ids(tok, token)
    if token.isascii() and token.isalnum():  # single-word token: whole words, measured after a space
        count = re.findall(r"\w+", corpus).count(token)
        per = min(len(ids), len(_ids(tok, " " + token)) - len(_ids(tok, " "))) - 1
    else:
        count, per = corpus.count(token), len(ids) - 1
    return count * (max(per, 0) + ids.count(tok.unk_token_id))


def test_train_new_tokens_filters_and_ranks():
    tok = make_tokenizer()
    vocab = tok.get_vocab()
    as_text = {tok.convert_tokens_to_string([p]) for p in vocab}
    new = train_new_tokens(tok, CORPUS, 10)
    assert 0 < len(new) <= 10 and len(set(new)) == len(new)
    assert not set(new) & (set(vocab) | as_text)
    assert all(len(_ids(tok, t)) >= 2 and t.strip() == t and t for t in new)
    keys = [_saved(tok, t, "\n".join(CORPUS)) for t in new]
    assert keys == sorted(keys, reverse=True) and keys[-1] > 0
    many = train_new_tokens(tok, CORPUS, 5000)
    assert many[:10] == new and set(WORDS) <= set(many) and len(many) < 5000

    bert = _bert_tokenizer()
    found = train_new_tokens(bert, CORPUS, 30)
    assert not set(found) & set(bert.get_vocab())
    # a single piece only when that piece is [UNK]: a character the base cannot encode at all is worth adding
    assert all(len(_ids(bert, t)) >= 2 or _ids(bert, t) == [bert.unk_token_id] for t in found)
    assert not any(t.startswith("##") for t in found)
    norm = bert.backend_tokenizer.normalizer.normalize_str("\n".join(CORPUS))
    keys = [_saved(bert, t, norm) for t in found]
    assert keys == sorted(keys, reverse=True)

    with pytest.raises(ConfigError, match="at least 1"):
        train_new_tokens(tok, CORPUS, 0)
    with pytest.raises(ConfigError, match="empty"):
        train_new_tokens(tok, [], 5)
    with pytest.raises(ConfigError, match="empty"):
        train_new_tokens(tok, iter(["", "  "]), 5)


def test_train_new_tokens_is_fast_on_a_larger_corpus():
    import time

    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 400)]
    texts = ["".join(chars[(i * 7 + j * j) % 400] for j in range(60)) for i in range(5000)]  # 300,000 characters
    tok = make_tokenizer()
    start = time.perf_counter()
    new = train_new_tokens(tok, texts, 1250)
    assert len(new) == 1250 and time.perf_counter() - start < 10


def test_other_kinds_and_unsupported_tokenizers():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    def fast(model, pre=None):
        backend = Tokenizer(model)
        backend.pre_tokenizer = pre
        return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")

    metaspace = pre_tokenizers.Metaspace(prepend_scheme="first")
    bpe = fast(models.BPE({"<unk>": 0, "a": 1, "b": 2}, [], unk_token="<unk>"), metaspace)
    unigram = fast(models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -1.0)], unk_id=0), metaspace)
    assert (tokenizer_kind(bpe), tokenizer_kind(unigram)) == ("bpe", "unigram")
    for tok in (bpe, unigram):
        new = train_new_tokens(tok, CORPUS, 40)
        assert new and not any(t.startswith("▁") or " " in t for t in new)
    with pytest.raises(ConfigError, match="WordLevel"):
        tokenizer_kind(fast(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
    with pytest.raises(ConfigError, match="fast tokenizer"):
        tokenizer_kind(object())
    with pytest.raises(ConfigError, match="gaps"):  # conftest's vocabulary lists 'a' twice: ids 0..99 for 99 tokens
        extend_tokenizer(wordpiece_tokenizer(_vocab()), ["模型"])


def test_chars_per_token_and_count_han():
    tok, _, ext = _extended_bpe()
    before = chars_per_token(make_tokenizer(), CORPUS)
    assert chars_per_token(tok, CORPUS) > 1.5 * before > 0
    assert chars_per_token(tok, []) == 0.0 and chars_per_token(tok, [""]) == 0.0
    assert count_han("模型 ab 训练") == 4
    assert count_han("㐀 豈 𠀀 a，。") == 3  # extension A, compatibility, extension B; not CJK punctuation
    assert VocabularyExtension.from_json(json.loads(json.dumps(ext.to_json()))) == ext
