"""Chat templates and label masks, checked token by token on a tiny tokenizer."""

import pytest

from sft_common import make_tokenizer
from tuneforge.data.templates import (
    IGNORE,
    conversation_segments,
    encode_segments,
    fill_variables,
    label_view,
    resolve_template,
)
from tuneforge.errors import ConfigError, DataError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_tokenizer_template_end_token_and_stop_ids(tok):
    fmt = resolve_template(tok, "auto", base_stop_ids=[])
    assert fmt.problems == []
    assert fmt.end_token == "<|im_end|>" and fmt.end_token_id == tok.eos_token_id
    assert fmt.stop_token_ids == [tok.eos_token_id]


def test_labels_cover_exactly_the_assistant_turns_token_by_token(tok):
    fmt = resolve_template(tok, "auto")
    msgs = [
        {"role": "user", "content": "who are you"},
        {"role": "assistant", "content": "i am a tiny model"},
        {"role": "user", "content": "two plus three"},
        {"role": "assistant", "content": "five"},
    ]
    segs = conversation_segments(tok, fmt, msgs)
    enc = encode_segments(tok, [segs], train_on_prompt=False)[0]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    # expected, built piece by piece from the template's own text
    p1 = (
        "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n"
        "<|im_start|>user\nwho are you<|im_end|>\n<|im_start|>assistant\n"
    )
    a1 = "i am a tiny model<|im_end|>"
    p2 = "\n<|im_start|>user\ntwo plus three<|im_end|>\n<|im_start|>assistant\n"
    a2 = "five<|im_end|>"
    tail = "\n"
    exp_ids = ids(tok, p1) + ids(tok, a1) + ids(tok, p2) + ids(tok, a2) + ids(tok, tail)
    exp_labels = (
        [IGNORE] * len(ids(tok, p1))
        + ids(tok, a1)
        + [IGNORE] * len(ids(tok, p2))
        + ids(tok, a2)
        + [IGNORE] * len(ids(tok, tail))
    )
    assert enc.input_ids == exp_ids
    assert enc.labels == exp_labels
    # both assistant turns end with the end-of-turn token, which is trained
    assert [enc.input_ids[i] for i in enc.target_ends] == [end, end]
    assert all(enc.labels[i] == end for i in enc.target_ends)
    # the rendered text is exactly the template's rendering (nothing added or lost)
    assert tok.decode(enc.input_ids) == tok.apply_chat_template(msgs, tokenize=False)
    view = label_view(tok, enc)
    assert "[[i am a tiny model<|im_end|>]]" in view and "[[five<|im_end|>]]" in view
    assert "[[" not in view.split("[[")[0]  # the prompt is not trained


def test_train_on_prompt_labels_everything(tok):
    fmt = resolve_template(tok, "auto")
    msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "good morning"}]
    enc = encode_segments(tok, [conversation_segments(tok, fmt, msgs)], train_on_prompt=True)[0]
    assert enc.labels == enc.input_ids


def test_system_message_replaces_the_templates_default(tok):
    fmt = resolve_template(tok, "auto")
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    text = "".join(t for t, _ in conversation_segments(tok, fmt, msgs))
    assert "tiny test model" not in text and text.startswith("<|im_start|>system\nbe brief<|im_end|>")


@pytest.mark.parametrize("name", ["chatml", "alpaca", "vicuna"])
def test_named_templates_fit_the_tokenizer(tok, name):
    fmt = resolve_template(tok, name)
    assert fmt.problems == [], fmt.problems
    assert fmt.end_token_id == tok.eos_token_id  # alpaca/vicuna close answers with eos
    msgs = [{"role": "user", "content": "who are you"}, {"role": "assistant", "content": "i am a tiny model"}]
    enc = encode_segments(tok, [conversation_segments(tok, fmt, msgs)], False)[0]
    trained = [t for t, l in zip(enc.input_ids, enc.labels) if l != IGNORE]
    # vicuna's generation prompt ends with "ASSISTANT:", so its answers start with the space
    assert tok.decode(trained).strip() == "i am a tiny model<|im_end|>" and trained[-1] == tok.eos_token_id


def test_llama3_template_needs_its_special_tokens(tok):
    fmt = resolve_template(tok, "llama3")
    assert any("<|eot_id|>" in p or "<|start_header_id|>" in p for p in fmt.problems)


def test_chatml_on_a_tokenizer_without_chatml_tokens_is_a_mismatch():
    plain = make_tokenizer(chat_template=None, special=["<|endoftext|>", "<pad>"], eos="<|endoftext|>")
    fmt = resolve_template(plain, "chatml")
    assert fmt.problems and "<|im_end|>" in " ".join(fmt.problems)


def test_template_that_never_closes_the_answer_is_reported():
    bad = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    tok = make_tokenizer(chat_template=bad)
    fmt = resolve_template(tok, "auto")
    assert fmt.problems and "never learns to stop" in fmt.problems[0]


def test_no_template_and_auto_is_a_config_error():
    tok = make_tokenizer(chat_template=None)
    with pytest.raises(ConfigError, match="no chat template"):
        resolve_template(tok, "auto")
    with pytest.raises(ConfigError, match="did you mean 'chatml'"):
        resolve_template(tok, "chatm")


def test_end_token_added_to_stop_ids_when_not_eos():
    tok = make_tokenizer(eos="<|endoftext|>")  # ChatML turns, but eos is another token
    fmt = resolve_template(tok, "auto", base_stop_ids=[tok.eos_token_id])
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert fmt.problems == [] and fmt.end_token_id == im_end
    assert fmt.stop_token_ids[0] == im_end and tok.eos_token_id in fmt.stop_token_ids


def test_variables():
    assert fill_variables("I am {{name}} by {{ author }}", {"name": "Forge", "author": "us"}, "x") == "I am Forge by us"
    with pytest.raises(DataError, match=r"record 3: placeholder \{\{name\}\} has no value; set data.variables.name"):
        fill_variables("I am {{name}}", {}, "record 3")
