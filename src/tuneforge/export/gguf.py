"""GGUF export of a chat run (`tuneforge export RUN --format gguf [--quant f16|bf16|q8_0|f32]`), for llama.cpp, Ollama
and LM Studio.

The run is merged first (export/merge.py: adapters folded in, checked against the trained model), then converted by
llama.cpp's own converter (`convert_hf_to_gguf.py` with the gguf-py it is written against, taken from the
llama-cpp-python source distribution at install time by requirements/fetch_llama_cpp.py), never by a tensor mapping
of our own: the converter knows every architecture llama.cpp runs. It embeds the chat template and the special
tokens from the merged tokenizer; the run's generation settings go into `general.sampling.*` through the converter's
metadata override. Beside the file:

- `Modelfile` for Ollama: `FROM`, a `TEMPLATE` translated from the run's chat template where it is a known family
  (ChatML, Llama 3) and renders exactly what the run's template renders (checked on a conversation; otherwise none,
  and Ollama reads the template embedded in the GGUF), a `PARAMETER stop` for each of the run's stop tokens, the
  run's system prompt (or the default one its template adds) and sampling settings, and the `ollama create` line in
  export.json.
- the checks of export.json: the GGUF's end-of-sequence / end-of-turn token ids hold the run's stop token (else the
  export fails: llama.cpp would not stop), and transformers' reading of the GGUF against the trained model on the
  held-out prompts (next-token agreement, largest logit difference: exporter.py).

The k-quants (q4_k_m, q5_k_m, q6_k) need llama.cpp's quantizer, a compiled llama.cpp: not built by this project yet,
so they are refused in one line. Unsloth's GGUF export breaks most often on a chat template or eos token lost on the
way (unslothai/unsloth #2399, #3504, #2984): both are checked here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tuneforge.errors import ConfigError, ModelError

#: what llama.cpp's converter writes itself
QUANTS = ("f16", "bf16", "q8_0", "f32")
#: what needs llama.cpp's quantizer (a compiled llama.cpp)
K_QUANTS = ("q4_k_m", "q5_k_m", "q6_k")
CONVERTER = "convert_hf_to_gguf.py"
MODELFILE = "Modelfile"


def check_quant(quant: str) -> None:
    if quant in K_QUANTS:
        raise ConfigError(
            f"--quant {quant}: the k-quants need llama.cpp's quantizer (a compiled llama.cpp), which this install does "
            f"not build yet; use one of {', '.join(QUANTS)} (q8_0 is the smallest), then llama.cpp's llama-quantize"
        )
    if quant not in QUANTS:
        raise ConfigError(f"--quant: unknown GGUF type '{quant}'; available: {', '.join(QUANTS)}")


def converter_dir() -> Path:
    """Where llama.cpp's converter is: $TUNEFORGE_LLAMA_CPP, else <prefix>/share/tuneforge/llama.cpp."""
    d = Path(os.environ.get("TUNEFORGE_LLAMA_CPP") or Path(sys.prefix) / "share" / "tuneforge" / "llama.cpp")
    if not (d / CONVERTER).is_file() or not (d / "gguf-py").is_dir():
        raise ModelError(
            f"GGUF export needs llama.cpp's converter in {d}: run `make install` (or python "
            f"requirements/fetch_llama_cpp.py), or point TUNEFORGE_LLAMA_CPP at a llama.cpp checkout"
        )
    return d


def gguf_name(quant: str) -> str:
    return f"model-{quant}.gguf"


def convert(merged_dir: Path, out_file: Path, quant: str, meta: dict) -> None:
    """llama.cpp's converter on the merged checkpoint, the run's sampling settings as metadata. ModelError with the
    converter's own last error line when it fails."""
    d = converter_dir()
    gen = meta.get("generation") or {}
    override = {"general.name": Path(str(meta.get("base_model") or "model")).name + " (tuneforge)"}
    if gen.get("temperature") is not None:
        override["general.sampling.temp"] = float(gen["temperature"])
    if gen.get("top_p") is not None:
        override["general.sampling.top_p"] = float(gen["top_p"])
    if gen.get("repetition_penalty") is not None:
        override["general.sampling.penalty_repeat"] = float(gen["repetition_penalty"])
    meta_file = out_file.parent / ".gguf-metadata.json"
    meta_file.write_text(json.dumps(override))
    path = os.pathsep.join(filter(None, [str(d / "gguf-py"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}  # the converter's own gguf-py, ahead of the installed gguf
    cmd = [sys.executable, str(d / CONVERTER), str(merged_dir), "--outfile", str(out_file), "--outtype", quant]
    cmd += ["--metadata", str(meta_file)]
    print(f"tuneforge: converting to GGUF {quant} with llama.cpp's {CONVERTER}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    meta_file.unlink(missing_ok=True)
    if proc.returncode != 0 or not out_file.is_file():
        lines = [l.strip() for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
        said = next((l for l in reversed(lines) if "Error" in l or "error" in l), lines[-1] if lines else "no output")
        raise ModelError(f"llama.cpp's converter failed on this model: {said[:300]}")


def read_fields(path: Path) -> dict:
    """The GGUF metadata this export checks: architecture, chat template, eos / eot token ids, sampling settings."""
    from gguf import GGUFReader

    from tuneforge.models.gguf_in import read_field

    fields = GGUFReader(str(path)).fields
    keys = {
        "architecture": "general.architecture",
        "chat_template": "tokenizer.chat_template",
        "eos_token_id": "tokenizer.ggml.eos_token_id",
        "eot_token_id": "tokenizer.ggml.eot_token_id",
        "temperature": "general.sampling.temp",
        "top_p": "general.sampling.top_p",
    }
    return {name: read_field(fields, key) for name, key in keys.items()}


def check_stops(fields: dict, meta: dict) -> None:
    """ModelError when none of the run's stop tokens is the GGUF's end-of-sequence or end-of-turn token."""
    stops = [int(i) for i in meta.get("stop_token_ids") or []]
    ends = {fields.get("eos_token_id"), fields.get("eot_token_id")} - {None}
    if stops and not ends & set(stops):
        raise ModelError(
            f"the GGUF's end tokens ({sorted(ends)}) are not the run's stop tokens ({stops}): llama.cpp would not stop "
            f"at the end of an answer"
        )
    if not fields.get("chat_template"):
        raise ModelError("the GGUF holds no chat template (tokenizer.chat_template): the run's template was lost")


#: Ollama Go templates of the chat-template families recognised by their markers, and the same rendering in Python
#: (used to check the translation against the run's own template before it is written)
_FAMILIES = {"chatml": "<|im_start|>", "llama3": "<|start_header_id|>"}
_GO = {
    "chatml": (
        "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
        "<|im_start|>assistant\n"
    ),
    "llama3": (
        "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
        "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
}


def _render(family: str, system: str | None, messages: list[dict]) -> str:
    """What Ollama renders from _GO[family] (its prompt for the next assistant turn), without a BOS token."""
    if family == "chatml":
        head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
        body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return head + body + "<|im_start|>assistant\n"
    head = f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>" if system else ""
    body = "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in messages)
    return head + body + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def ollama_template(tokenizer, jinja: str | None, system: str | None) -> tuple[str | None, str | None, str]:
    """(Go TEMPLATE, SYSTEM, why) for Ollama: the family's template when, for a conversation with and without the
    run's system prompt, it renders exactly what the run's chat template renders (tokenizer.apply_chat_template); a
    system message the template adds by itself (SmolLM2's default one) becomes SYSTEM, so Ollama prompts the model as
    it was trained. (None, system, why) when the template is of no known family or renders differently: Ollama then
    reads the template embedded in the GGUF."""
    family = next((f for f, marker in _FAMILIES.items() if marker in (jinja or "")), None)
    if family is None:
        return None, system, "not a known template family (ChatML, Llama 3)"
    turns = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    try:
        wanted = tokenizer.apply_chat_template(
            ([{"role": "system", "content": system}] if system else []) + turns,
            tokenize=False,
            add_generation_prompt=True,
        )
    except Exception as exc:  # a template that cannot render this conversation
        return None, system, f"the chat template does not render a plain conversation ({type(exc).__name__})"
    # a template that writes the BOS token itself (Llama 3's <|begin_of_text|>): llama.cpp adds that token on its own
    bos = tokenizer.bos_token or ""
    unprefixed = wanted[len(bos) :] if bos and wanted.startswith(bos) else None
    if not system:  # the template's own default system message, if it adds one
        plain = _render(family, None, turns)
        start = {"chatml": "<|im_start|>system\n", "llama3": "<|start_header_id|>system<|end_header_id|>\n\n"}
        end = {"chatml": "<|im_end|>\n", "llama3": "<|eot_id|>"}
        for text in filter(None, (wanted, unprefixed)):
            head = text[: -len(plain)] if text != plain and text.endswith(plain) else ""
            if head.startswith(start[family]) and head.endswith(end[family]):
                system = head[len(start[family]) : -len(end[family])]
                break
    if _render(family, system, turns) not in (wanted, unprefixed):
        return None, system, f"the {family} translation does not render what the run's template renders"
    return _GO[family], system, f"{family}, checked against the run's template"


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(gguf_file: str, template: str | None, system: str | None, stop_tokens: list[str], meta: dict) -> str:
    """An Ollama Modelfile for the exported file (see the module docstring)."""
    lines = [f"FROM ./{gguf_file}", ""]
    if template is not None:
        lines += [f"TEMPLATE {_quoted(template)}", ""]
    else:
        lines += ["# no TEMPLATE: Ollama uses the chat template embedded in the GGUF (tokenizer.chat_template)", ""]
    if system:
        lines += [f"SYSTEM {_quoted(system)}", ""]
    for stop in stop_tokens:
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    gen = meta.get("generation") or {}
    for key, name in (("temperature", "temperature"), ("top_p", "top_p"), ("repetition_penalty", "repeat_penalty")):
        if gen.get(key) is not None:
            lines.append(f"PARAMETER {name} {gen[key]}")
    if gen.get("max_new_tokens"):
        lines.append(f"PARAMETER num_predict {int(gen['max_new_tokens'])}")
    return "\n".join(lines) + "\n"


def write_export(merged_dir: Path, work: Path, quant: str, meta: dict, tokenizer) -> dict:
    """The GGUF file and the Modelfile in `work`; returns the report's gguf part."""
    name = gguf_name(quant)
    convert(merged_dir, work / name, quant, meta)
    fields = read_fields(work / name)
    check_stops(fields, meta)
    stops = [tokenizer.convert_ids_to_tokens(int(i)) for i in meta.get("stop_token_ids") or []]
    if meta.get("end_of_turn_token") and meta["end_of_turn_token"] not in stops:
        stops.append(meta["end_of_turn_token"])
    template, system, why = ollama_template(tokenizer, fields.get("chat_template"), meta.get("system_prompt"))
    (work / MODELFILE).write_text(modelfile(name, template, system, stops, meta))
    tag = ollama_tag(meta.get("base_model"))
    return {
        "file": name,
        "quant": quant,
        "architecture": fields.get("architecture"),
        "chat_template_embedded": bool(fields.get("chat_template")),
        "eos_token_id": fields.get("eos_token_id"),
        "eot_token_id": fields.get("eot_token_id"),
        "stop_tokens": stops,
        "sampling": {"temp": fields.get("temperature"), "top_p": fields.get("top_p")},
        "ollama_template": why if template is not None else f"none: {why}",
        "ollama_system": system,
        "ollama": f"ollama create {tag}-tuned -f {MODELFILE}",
        "converter": f"llama.cpp {CONVERTER} (llama-cpp-python {_converter_version()})",
    }


def ollama_tag(base_model: str | None) -> str:
    """The model name suggested for `ollama create`: the base model's last path part, in the characters Ollama
    accepts in a name (lowercase letters, digits, `.`, `_`, `-`), with `-tuned` added by the caller."""
    import re

    name = Path(str(base_model or "model")).name.replace("builtin:", "").lower()
    return re.sub(r"[^a-z0-9._-]+", "-", name).strip("-._") or "model"


def _converter_version() -> str:
    try:
        return (converter_dir() / "VERSION").read_text().strip()
    except (OSError, ModelError):
        return "unknown"
