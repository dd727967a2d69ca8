"""Chat templates for SFT: choosing one, checking it against the tokenizer, and turning conversations into
token ids with labels on the assistant turns.

The template is a jinja chat template, the same kind transformers stores in `tokenizer.chat_template`, so
what we train with is saved with the tokenizer and `apply_chat_template` reproduces it in chat, serving and
export. Labels are found by rendering the conversation turn by turn: the text an assistant turn adds after
the generation prompt is what the model must learn to produce, up to and including its end-of-turn token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from tuneforge.errors import ConfigError, DataError, first_line
from tuneforge.registry import closest

log = logging.getLogger("tuneforge")
IGNORE = -100


@dataclass(frozen=True)
class NamedTemplate:
    name: str
    jinja: str
    #: special tokens the tokenizer must have as single tokens for this template to make sense
    needs_tokens: tuple[str, ...] = ()
    description: str = ""


_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# plain-text templates close the answer with the tokenizer's own eos token, so they work with any tokenizer
_ALPACA = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{{ 'Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n' }}"
    "{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}"
    "{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}"
    "{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)
_VICUNA = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + ' ' }}{% set loop_messages = messages[1:] %}"
    "{% else %}{{ 'A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user\\'s questions. ' }}"
    "{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

TEMPLATES: dict[str, NamedTemplate] = {
    t.name: t
    for t in [
        NamedTemplate("chatml", _CHATML, ("<|im_start|>", "<|im_end|>"), "ChatML (<|im_start|>role ... <|im_end|>)"),
        NamedTemplate("llama3", _LLAMA3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), "Llama 3 headers"),
        NamedTemplate("alpaca", _ALPACA, (), "### Instruction / ### Response, answer closed by eos"),
        NamedTemplate("vicuna", _VICUNA, (), "USER: / ASSISTANT:, answer closed by eos"),
    ]
}


class TemplateError(ConfigError):
    """The template does not fit the tokenizer (would teach a model that never stops, or cannot be rendered)."""


@dataclass
class ChatFormat:
    """A template checked against a tokenizer: what to render with and which tokens end a turn."""

    name: str  # `tokenizer` for the tokenizer's own, else the registry name
    jinja: str
    end_token: str | None  # the special token that closes an assistant turn
    end_token_id: int | None
    stop_token_ids: list[int] = field(default_factory=list)  # what generation must stop on
    problems: list[str] = field(default_factory=list)  # mismatches found by the check


def _is_single_token(tokenizer, text: str) -> bool:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return len(ids) == 1


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids or [])
    for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return ids


def render(tokenizer, jinja: str, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Render `messages` with `jinja` through the tokenizer (so bos/eos tokens are the tokenizer's).

    Raises DataError when the template rejects the conversation (for example alternation rules)."""
    try:
        return tokenizer.apply_chat_template(
            messages, chat_template=jinja, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:  # jinja's TemplateError / raise_exception, undefined variables
        raise DataError(f"the chat template cannot render this conversation: {first_line(exc)}") from None


def resolve_template(tokenizer, name: str = "auto", base_stop_ids: Iterable[int] = ()) -> ChatFormat:
    """Pick the chat template (`auto`: the tokenizer's own) and check it against the tokenizer.

    Args:
        tokenizer: the base model's tokenizer.
        name: `auto` or a name in TEMPLATES.
        base_stop_ids: eos ids the base model's generation config already stops on.

    Returns a ChatFormat; mismatches are listed in `problems` (the caller decides whether they are fatal).

    Raises ConfigError for an unknown name or when `auto` finds no template in the tokenizer."""
    if name == "auto":
        jinja = tokenizer.chat_template
        if isinstance(jinja, dict):
            jinja = jinja.get("default")
        if not jinja:
            raise ConfigError(
                "data.template: the model's tokenizer has no chat template; name one: "
                + ", ".join(f"{t.name} ({t.description})" for t in TEMPLATES.values())
            )
        label, needs = "tokenizer", ()
    else:
        if name not in TEMPLATES:
            raise ConfigError(
                f"data.template: unknown template '{name}'{closest(name, TEMPLATES)}; "
                f"available: auto, {', '.join(TEMPLATES)}"
            )
        t = TEMPLATES[name]
        jinja, label, needs = t.jinja, t.name, t.needs_tokens
    problems = [
        f"template '{label}' needs the special token {tok} but the tokenizer splits it into "
        f"{len(tokenizer.encode(tok, add_special_tokens=False))} pieces (use a template made for this model)"
        for tok in needs
        if not _is_single_token(tokenizer, tok)
    ]
    fmt = ChatFormat(label, jinja, None, None, problems=problems)
    _find_end_token(tokenizer, fmt, list(base_stop_ids))
    return fmt


_PROBE = "Zqx probe answer"


def _find_end_token(tokenizer, fmt: ChatFormat, base_stop_ids: list[int]) -> None:
    """Render a probe conversation and find the token the template closes an assistant turn with."""
    msgs = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = render(tokenizer, fmt.jinja, msgs)
        prompt = render(tokenizer, fmt.jinja, msgs[:1], add_generation_prompt=True)
    except DataError as exc:
        fmt.problems.append(str(exc))
        return
    if not text.startswith(prompt) or _PROBE not in text[len(prompt) :]:
        fmt.problems.append(
            "rendering a conversation with its answer does not start with the rendered prompt "
            "(add_generation_prompt), so answers cannot be told apart from prompts"
        )
        return
    tail = text[text.index(_PROBE, len(prompt)) + len(_PROBE) :]
    ids = tokenizer.encode(tail, add_special_tokens=False) if tail else []
    eos = tokenizer.eos_token_id
    if not ids or ids[0] not in _special_ids(tokenizer) | {eos}:
        fmt.problems.append(
            f"the template ends an assistant turn with {tail[:20]!r}, not with an end-of-turn "
            f"special token (eos is {tokenizer.eos_token!r}): a model tuned on it never learns "
            f"to stop"
        )
        return
    fmt.end_token_id = ids[0]
    fmt.end_token = tokenizer.convert_ids_to_tokens(ids[0])
    stops = [fmt.end_token_id] + [i for i in [eos, *base_stop_ids] if i is not None]
    fmt.stop_token_ids = list(dict.fromkeys(int(i) for i in stops))
    if fmt.end_token_id != eos and fmt.end_token_id not in base_stop_ids:
        log.info(
            "the template ends turns with %s, which is not the tokenizer's eos %s: generation will stop on "
            "both (saved in generation_config.json)",
            fmt.end_token,
            tokenizer.eos_token,
        )


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def with_system(messages: list[dict], system_prompt: str | None) -> list[dict]:
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}] + list(messages)
    return list(messages)


def fill_variables(text: str, variables: dict[str, str], where: str) -> str:
    """Replace `{{name}}` placeholders; an unknown placeholder is a DataError naming `where`."""

    def sub(m):
        key = m.group(1)
        if key not in variables:
            known = (
                f"data.variables sets only {', '.join(sorted(variables))}" if variables else "data.variables is empty"
            )
            raise DataError(
                f"{where}: placeholder {{{{{key}}}}} has no value; set data.variables.{key} ({known}; "
                f"an unfilled placeholder would be trained as literal text)"
            )
        return variables[key]

    return _PLACEHOLDER.sub(sub, text)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    #: index of the last token of every assistant turn (where the end-of-turn token must be)
    target_ends: list[int] = field(default_factory=list)


def conversation_segments(tokenizer, fmt: ChatFormat, messages: list[dict]) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, is_target) pieces: each assistant turn's text up to and
    including the end-of-turn token is a target; everything else (system, user turns, role headers, the
    whitespace after the end token) is prompt.

    Raises DataError when the template renders a turn differently once later turns follow (then the answer
    spans cannot be located), or when an assistant turn is not closed by the end-of-turn token."""
    full = render(tokenizer, fmt.jinja, messages)
    segs: list[tuple[str, bool]] = []
    pos = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tokenizer, fmt.jinja, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, fmt.jinja, messages[: i + 1])
        if not (full.startswith(upto) and upto.startswith(prompt) and len(prompt) >= pos):
            raise DataError(
                "the chat template renders earlier turns differently when later turns follow, so "
                "assistant turns cannot be located; choose another data.template"
            )
        answer = upto[len(prompt) :]
        if fmt.end_token is None:  # the check already failed and the user forced training: train what renders
            cut = len(answer)
        else:
            end = answer.rfind(fmt.end_token)
            if end < 0:
                raise DataError(f"assistant turn {i + 1} is not closed by the end-of-turn token {fmt.end_token!r}")
            cut = end + len(fmt.end_token)
        segs.append((full[pos : len(prompt)], False))
        segs.append((answer[:cut], True))
        pos = len(prompt) + cut
    segs.append((full[pos:], False))
    return [(t, target) for t, target in segs if t]


def encode_segments(tokenizer, segments_list: list[list[tuple[str, bool]]], train_on_prompt: bool) -> list[Encoded]:
    """Tokenize many segmented conversations in one batched call (fast tokenizers parallelise it).

    Pieces are tokenized separately, as in generation, where the prompt is tokenized alone and the answer
    is produced token by token after it."""
    flat = [t for segs in segments_list for t, _ in segs]
    ids_flat = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    out, k = [], 0
    for segs in segments_list:
        ids, labels, ends = [], [], []
        for _, target in segs:
            piece = ids_flat[k]
            k += 1
            ids += piece
            labels += piece if (target or train_on_prompt) else [IGNORE] * len(piece)
            if target and piece:
                ends.append(len(ids) - 1)
        out.append(Encoded(ids, labels, target_ends=ends))
    return out


def label_view(tokenizer, enc: Encoded) -> str:
    """The example as text with the trained tokens in [[...]] (for the log and the report)."""
    out, cur, in_target = [], [], False
    for tid, lab in zip(enc.input_ids, enc.labels):
        t = lab != IGNORE
        if t != in_target and cur:
            txt = tokenizer.decode(cur)
            out.append(f"[[{txt}]]" if in_target else txt)
            cur = []
        in_target = t
        cur.append(tid)
    if cur:
        txt = tokenizer.decode(cur)
        out.append(f"[[{txt}]]" if in_target else txt)
    return "".join(out)
