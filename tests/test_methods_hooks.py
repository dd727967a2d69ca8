"""The method hooks the engine and the tasks call without knowing the method: `speed_levers` (LoRA's fused layer
is the LoRA method's lever, every other method offers no fused path), `disabled_adapters` (the base model for
comparisons: adapters switched off for PEFT methods, None where the caller must load the base itself), and
`load_kwargs(ctx)` (the quantized base keeps the task's full-precision modules), and the hooks the memory estimate
asks instead of method names (`lighter_variants`, `config_for_switch`, `adapter_module_names`)."""

from __future__ import annotations

import pytest
import torch

from methods_helpers import FULL_PRECISION, batch, build, logits, make_method, train_steps
from tuneforge.config.schema import TrainSection
from tuneforge.errors import MethodError
from tuneforge.kernels.levers import Lever
from tuneforge.methods import MethodContext
from tuneforge.models.loader import load_model
from tuneforge.tasks.causal_lm import CausalLMTask
from tuneforge.training import speed
from tuneforge.training.speed import apply_speedups

pytestmark = pytest.mark.unit


def fused_layers(model) -> int:
    return sum("_tf_peft_forward" in m.__dict__ for m in model.modules())


def causal_task():
    return CausalLMTask.__new__(CausalLMTask)


# ---- speed levers --------------------------------------------------------------------------------------------
def test_speed_levers_are_reexported_from_the_kernels_layer():
    from tuneforge.kernels import levers

    assert speed.Lever is levers.Lever and speed.wanted is levers.wanted


@pytest.mark.parametrize(
    "name, cfg",
    [
        ("full", {}),
        ("freeze", {"trainable_layers": 1}),
        ("ia3", {}),
        ("adapter", {"bottleneck_size": 8}),
        ("prompt", {"num_virtual_tokens": 4}),
    ],
)
def test_a_non_lora_method_offers_no_fused_path(name, cfg, tiny_wordpiece_llama):
    method = make_method(name, **cfg)
    model, _ = build("llama", tiny_wordpiece_llama, method)
    # explicit true: not an error (as before the hook), off with the reason; auto: off without CUDA, and also with
    # CUDA; false: off
    assert method.speed_levers(model, TrainSection(fused_lora=True), cuda=False) == [
        Lever("fused_lora", False, "off: the model has no LoRA layers")
    ]
    assert method.speed_levers(model, TrainSection(), cuda=True) == [
        Lever("fused_lora", False, "off: the model has no LoRA layers")
    ]
    assert method.speed_levers(model, TrainSection(), cuda=False) == [
        Lever("fused_lora", False, "off: no CUDA device (it pays off on GPUs)")
    ]
    assert method.speed_levers(model, TrainSection(fused_lora=False), cuda=True) == [
        Lever("fused_lora", False, "off (train.fused_lora=false)")
    ]
    assert fused_layers(model) == 0


def test_a_non_lora_method_does_not_fuse_lora_layers_it_does_not_own(tiny_wordpiece_llama):
    # the fused path belongs to the LoRA method: asked through another method, LoRA layers keep PEFT's forward
    model, _ = build("llama", tiny_wordpiece_llama, make_method("lora", dropout=0.0))
    levers = apply_speedups(
        model,
        TrainSection(fused_lora=True, compile=False, liger=False, chunked_loss=False),
        causal_task(),
        make_method("full"),
    )
    assert [lv.key for lv in levers] == ["liger", "chunked_loss", "fused_lora", "compile"]
    assert not levers[2].on and fused_layers(model) == 0


def test_the_lora_lever_through_the_hook(tiny_wordpiece_llama, capfd):
    method = make_method("lora", dropout=0.0)
    model, _ = build("llama", tiny_wordpiece_llama, method)
    b = batch("llama")
    train_steps(model, method, b, steps=2)  # B != 0, so the LoRA update shows in the outputs
    ref = logits(model, b)
    capfd.readouterr()
    levers = apply_speedups(
        model, TrainSection(fused_lora=True, compile=False, liger=False, chunked_loss=False), causal_task(), method
    )
    # same place in the line and the returned order as before the hook
    assert [lv.key for lv in levers] == ["liger", "chunked_loss", "fused_lora", "compile"]
    assert levers[2] == Lever("fused_lora", True, "on: 14 of 14 LoRA layers")
    err = capfd.readouterr().err
    assert err == (
        "tuneforge: speed levers: liger off (train.liger=false); chunked_loss off (train.chunked_loss=false); "
        "fused_lora on: 14 of 14 LoRA layers; compile off (train.compile=false)\n"
    )
    assert fused_layers(model) == 14
    torch.testing.assert_close(logits(model, b), ref, rtol=1e-5, atol=1e-5)


def test_the_lora_lever_resolution(tiny_wordpiece_llama):
    method = make_method("lora", dropout=0.0)
    model, _ = build("llama", tiny_wordpiece_llama, method)
    assert method.speed_levers(model, TrainSection(), cuda=False) == [
        Lever("fused_lora", False, "off: no CUDA device (it pays off on GPUs)")
    ]
    assert method.speed_levers(model, TrainSection(fused_lora=False), cuda=True) == [
        Lever("fused_lora", False, "off (train.fused_lora=false)")
    ]
    assert fused_layers(model) == 0
    assert method.speed_levers(model, TrainSection(), cuda=True) == [
        Lever("fused_lora", True, "on (auto): 14 of 14 LoRA layers")
    ]
    assert fused_layers(model) == 14

    dropout = make_method("lora")  # dropout 0.05: no layer can fuse, `auto` notes it instead of failing
    model, _ = build("llama", tiny_wordpiece_llama, dropout)
    (lever,) = dropout.speed_levers(model, TrainSection(), cuda=True)
    assert not lever.on and "0 of 14 LoRA layers (others have dropout > 0" in lever.note


def test_apply_speedups_without_a_method_has_no_method_levers(tiny_wordpiece_llama):
    model, _ = build("llama", tiny_wordpiece_llama, make_method("lora", dropout=0.0))
    levers = apply_speedups(model, TrainSection(fused_lora=True, compile=False), causal_task())
    assert [lv.key for lv in levers] == ["liger", "chunked_loss", "compile"] and fused_layers(model) == 0


# ---- adapters off: the base model for comparisons ---------------------------------------------------------------
@pytest.mark.parametrize(
    "name, cfg",
    [
        ("lora", {}),
        ("lora", {"dropout": 0.0, "fused": True}),
        ("qlora", {}),
        ("ia3", {}),
        ("prompt", {"num_virtual_tokens": 4}),
        ("prefix", {"num_virtual_tokens": 4}),
    ],
    ids=["lora", "lora-fused", "qlora", "ia3", "prompt", "prefix"],
)
def test_disabled_adapters_give_the_base_model(name, cfg, tiny_wordpiece_llama):
    cfg = dict(cfg)
    fused = cfg.pop("fused", False)
    method = make_method(name, **cfg)
    model, ctx = build("llama", tiny_wordpiece_llama, method)
    b = batch("llama")
    train_steps(model, method, b, steps=3)
    if fused:
        method.speed_levers(model, TrainSection(fused_lora=True), cuda=False)
        assert fused_layers(model) == 14
    trained = logits(model, b)
    from transformers import AutoModelForCausalLM

    base = load_model(tiny_wordpiece_llama, AutoModelForCausalLM, "float32", **method.load_kwargs(ctx))
    if name == "qlora":
        from tuneforge.methods.lora import keep_cpu_4bit_layout

        keep_cpu_4bit_layout(base)
    expected = logits(base, b)
    assert not torch.allclose(trained[..., -expected.shape[1] :, :], expected, atol=1e-4)
    with method.disabled_adapters(model) as off:
        assert off is model
        got = logits(off, b)
    # 4-bit: the same quantized base, computed the same way
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits(model, b), trained, rtol=0, atol=0)  # adapters back on after the block


@pytest.mark.parametrize(
    "kind, name, cfg",
    [
        ("llama", "full", {}),
        ("llama", "freeze", {"trainable_layers": 1}),
        ("llama", "adapter", {"bottleneck_size": 8}),
        ("bert", "prefix", {"num_virtual_tokens": 4}),
    ],
    ids=["full", "freeze", "adapter", "prefix-encoder"],
)
def test_disabled_adapters_is_none_without_a_switch(kind, name, cfg, tiny_wordpiece_llama, tiny_bert):
    method = make_method(name, **cfg)
    model, _ = build(kind, tiny_bert if kind == "bert" else tiny_wordpiece_llama, method)
    with method.disabled_adapters(model) as off:
        assert off is None  # the caller loads the base model itself


# ---- quantization keeps the task's full-precision modules ------------------------------------------------------
def test_qlora_load_kwargs_keep_the_tasks_full_precision_modules():
    from tuneforge.methods.lora import HEAD_NAMES

    qlora = make_method("qlora")
    skip = lambda kw: kw["quantization_config"].llm_int8_skip_modules  # noqa: E731
    assert skip(qlora.load_kwargs(MethodContext(full_precision_modules=("lm_head",)))) == ["lm_head"]
    assert skip(qlora.load_kwargs(MethodContext(full_precision_modules=FULL_PRECISION["bert"]))) == [
        "classifier",
        "score",
        "qa_outputs",
        "pre_classifier",
    ]
    int8 = make_method("lora", quantization="int8")
    assert skip(int8.load_kwargs(MethodContext(full_precision_modules=("score",)))) == ["score"]
    # a caller without a context (or a task that names none) gets the built-in tasks' heads, as before
    assert skip(qlora.load_kwargs()) == HEAD_NAMES == ["classifier", "score", "lm_head", "qa_outputs", "pre_classifier"]
    assert skip(qlora.load_kwargs(MethodContext())) == HEAD_NAMES
    assert make_method("lora").load_kwargs(MethodContext(full_precision_modules=("lm_head",))) == {}
    assert make_method("full").load_kwargs(MethodContext(full_precision_modules=("lm_head",))) == {}


def test_qlora_refuses_a_quantized_head_naming_the_tasks_modules(tiny_bert):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForSequenceClassification

    qlora = make_method("qlora")
    ctx = MethodContext(full_precision_modules=("lm_head",))  # not the classifier: it gets quantized
    torch.manual_seed(0)
    model = load_model(tiny_bert, AutoModelForSequenceClassification, "float32", num_labels=2, **qlora.load_kwargs(ctx))
    ctx.head_modules = ["classifier"]
    with pytest.raises(MethodError, match=r"the task head 'classifier' was quantized; .*known head names: lm_head\)"):
        qlora.apply(model, ctx)


# ---- what the memory estimate asks instead of method names -------------------------------------------------------
def _identifier_literals(path) -> list[str]:
    """The string constants of a module that look like identifiers or module-name fragments (`"qlora"`, `"lora_"`,
    `".lora_dropout"`), docstrings excluded."""
    import ast
    import re

    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and re.fullmatch(r"[._]*[A-Za-z0-9]+(_[A-Za-z0-9_]*)?[._]*", node.value)
    ]


def test_the_memory_estimate_never_names_a_method():
    from pathlib import Path

    import tuneforge.training.estimate as estimate
    from tuneforge.registry import METHODS

    names = set(METHODS.names())
    assert {"lora", "qlora", "prefix", "prompt", "adapter", "ia3", "full", "freeze"} <= names
    files = sorted(Path(estimate.__file__).parent.glob("*.py"))
    assert len(files) > 5
    found = []
    for path in files:
        for lit in _identifier_literals(path):
            word = lit.strip("._")
            if any(word == n or word.startswith(n + "_") for n in names):
                found.append(f"{path.name}: {lit!r}")
    assert not found, found


def test_the_scan_sees_method_names_in_the_old_checks(tmp_path):
    old = tmp_path / "old.py"
    old.write_text(
        "def f(name, names):\n"
        "    return 'qlora' in names or 'lora' not in name or name.startswith('lora_') or '.lora_dropout' in name\n"
    )
    assert _identifier_literals(old) == ["qlora", "lora", "lora_", ".lora_dropout"]


LLAMA_LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def _llama_cfg(method: dict):
    from tuneforge.config import load_config

    return load_config(
        raw={
            "model": {"name": "llama-1b", "dtype": "bfloat16"},
            "task": {"type": "causal_lm"},
            "data": {"train": "x.jsonl", "max_length": 1024},
            "method": method,
            "train": {"batch_size": 4, "liger": False},
        },
        environment=False,
    )


def test_lora_offers_its_quantized_base_and_the_advice_offers_that_on_cuda():
    from tuneforge.registry import METHODS
    from tuneforge.training.estimate import GIB, estimate_memory, suggestions

    lora = _llama_cfg(LLAMA_LORA)
    assert METHODS.get("lora").lighter_variants(lora, "cuda") == [["method.name=qlora"]]
    assert METHODS.get("lora").lighter_variants(lora, "cpu") == []  # bitsandbytes' 4-bit kernels need CUDA
    assert METHODS.get("lora").lighter_variants(_llama_cfg({**LLAMA_LORA, "quantization": "int8"}), "cuda") == [
        ["method.name=qlora"]
    ]
    for method in ({**LLAMA_LORA, "name": "qlora"}, {**LLAMA_LORA, "quantization": "nf4"}, {"name": "full"}):
        cfg = _llama_cfg(method)
        assert METHODS.get(cfg.method.name).lighter_variants(cfg, "cuda") == []

    est = estimate_memory(lora)
    tips = suggestions(lora, est, 1 * GIB, best_effort=True, limit=10)
    assert [t.split(" (")[0] for t in tips if t.startswith("method.")] == ["method.name=qlora"], tips
    full = _llama_cfg({"name": "full"})
    tips = suggestions(full, estimate_memory(full), 1 * GIB, best_effort=True, limit=10)
    assert not [t for t in tips if t.startswith("method.")], tips


def test_a_switch_keeps_the_adapters_and_takes_the_new_methods_own_defaults():
    from tuneforge.registry import METHODS
    from tuneforge.training.estimate import estimate_memory

    lora = _llama_cfg({**LLAMA_LORA, "dropout": 0.1, "use_rslora": True})
    section = METHODS.get("qlora").config_for_switch(lora.method)
    assert section["name"] == "qlora" and "quantization" not in section  # left to qlora's default, not lora's null
    for key in ("r", "alpha", "dropout", "target_modules", "use_rslora", "double_quant"):
        assert section[key] == lora.method.model_dump(mode="json")[key], key
    switched = _llama_cfg(section)
    assert switched.method.quantization == "nf4"
    one, two = estimate_memory(lora), estimate_memory(switched)
    assert two.trainable_params == one.trainable_params and two.weights < one.weights
    # to the same method: every key kept
    assert METHODS.get("lora").config_for_switch(lora.method) == lora.method.model_dump(mode="json")


def test_lora_names_its_adapter_modules(tiny_wordpiece_llama):
    method = make_method("lora", r=4, dropout=0.1, target_modules="all-linear")
    model, _ = build("llama", tiny_wordpiece_llama, method)
    names = method.adapter_module_names(model)
    layers = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    assert layers and len(names) >= 3 * len(layers)
    parts = {id(x) for n in names for x in model.get_submodule(n).modules()}
    drops = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n]
    assert len(drops) == len(layers) and all(id(d) in parts for d in drops)
    assert all(
        id(p) in {id(q) for n in names for q in model.get_submodule(n).parameters()}
        for p in [p for n, p in model.named_parameters() if "lora_A" in n or "lora_B" in n]
    )
    full = make_method("full")
    model, _ = build("llama", tiny_wordpiece_llama, full)
    assert full.adapter_module_names(model) == []
