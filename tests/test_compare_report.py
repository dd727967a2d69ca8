"""`tuneforge compare` / `tuneforge report` on the tiny BERT: runner (per-method settings and learning rates,
failures, resume), the measured numbers, and the self-contained HTML report."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pytest
import yaml

from conftest import make_sentiment_rows, run_cli, tiny_config

pytestmark = pytest.mark.integration

STEPS = ["train.eval_strategy=steps", "train.eval_steps=2", "train.logging_steps=1"]


class _Html(HTMLParser):
    """Collects the summary table's rows, every src/href, and the tags used."""

    def __init__(self):
        super().__init__()
        self.tags, self.links, self.rows = set(), [], []
        self._table = None
        self._in_body = False
        self._cell = None
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.links += [v for k, v in attrs if k in ("src", "href")]
        if tag == "table":
            self._table = a.get("id")
        elif tag == "tbody" and self._table == "summary":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


@pytest.fixture(scope="module")
def comparison(tiny_bert, tmp_path_factory):
    """full, lora (two seeds each), freeze made to crash, adapter with a broken method file."""
    import pandas as pd

    from tuneforge.compare import compare
    from tuneforge.methods.freeze import FreezeMethod

    tmp = tmp_path_factory.mktemp("cmp")
    data = tmp / "sentiment.csv"
    pd.DataFrame(make_sentiment_rows(120)).to_csv(data, index=False)
    cfg = tiny_config(tiny_bert, str(data), str(tmp / "unused"), method="lora")
    cfg_path = tmp / "base.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    methods_dir = tmp / "methods"
    methods_dir.mkdir()
    (methods_dir / "adapter-classification.yaml").write_text("method:\n  name: adapter\n  bogus_key: 3\n")
    (methods_dir / "lora-classification.yaml").write_text("method:\n  name: lora\n  r: 4\n")

    def crash(self, model, ctx):
        raise RuntimeError("simulated crash in freeze")

    original = FreezeMethod.apply
    FreezeMethod.apply = crash
    lines: list[str] = []
    try:
        result = compare(
            str(cfg_path),
            "full,lora,freeze,adapter",
            seeds="1,2",
            max_steps=4,
            out=tmp / "out",
            overrides=STEPS,
            method_configs=methods_dir,
            isolate=False,
            echo=lines.append,
        )
    finally:
        FreezeMethod.apply = original
    return {"result": result, "out": tmp / "out", "lines": lines, "cfg": cfg_path, "methods_dir": methods_dir}


def test_compare_json_has_every_method_measured_and_failures_reported(comparison):
    data = json.loads((comparison["out"] / "compare.json").read_text())
    groups = {g["label"]: g for g in data["groups"]}
    assert list(groups) == ["full", "lora", "freeze", "adapter"]
    for name in ("full", "lora"):
        g = groups[name]
        assert g["state"] == "completed" and g["seeds"] == [1, 2]
        assert g["metrics"]["accuracy"]["n"] == 2 and 0.0 <= g["metrics"]["accuracy"]["mean"] <= 1.0
        for key in (
            "trainable_params",
            "trainable_percent",
            "train_seconds",
            "train_samples_per_second",
            "train_tokens_per_second",
            "time_to_first_step_seconds",
            "peak_rss_mb",
            "model_size_mb",
            "inference_latency_ms_p50",
            "inference_latency_ms_p95",
            "inference_samples_per_second",
        ):
            assert g["efficiency"][key]["mean"] > 0, (name, key)
        assert (
            g["efficiency"]["inference_latency_ms_p95"]["mean"] >= g["efficiency"]["inference_latency_ms_p50"]["mean"]
        )
    # LoRA trains and stores a small fraction of what full fine-tuning does
    assert (
        groups["lora"]["efficiency"]["trainable_percent"]["mean"]
        < groups["full"]["efficiency"]["trainable_percent"]["mean"]
    )
    assert groups["lora"]["efficiency"]["model_size_mb"]["mean"] < groups["full"]["efficiency"]["model_size_mb"]["mean"]
    assert groups["freeze"]["state"] == "failed"
    assert "simulated crash in freeze" in groups["freeze"]["errors"][0]
    assert groups["adapter"]["state"] == "failed" and "bogus_key" in groups["adapter"]["errors"][0]
    assert data["best"] in ("full", "lora") and data["best_value"] in ("full", "lora")
    assert any("FAILED" in ln and "freeze" in ln for ln in comparison["lines"])


def test_per_method_settings_and_learning_rates(comparison):
    out = comparison["out"]
    full = yaml.safe_load((out / "full-seed1" / "config.yaml").read_text())
    lora = yaml.safe_load((out / "lora-seed2" / "config.yaml").read_text())
    # the base config's rate (written for LoRA on a random model) is not forced on every method
    assert full["train"]["learning_rate"] is None and lora["train"]["learning_rate"] is None
    assert lora["method"]["r"] == 4  # from the method file
    assert full["train"]["max_steps"] == 4 and lora["train"]["seed"] == 2
    # every seed and method is scored on the same held-out rows (the config's seed 7 fixes the split)
    assert full["data"]["split"]["seed"] == 7 and lora["data"]["split"]["seed"] == 7
    data = json.loads((out / "compare.json").read_text())
    rates = {g["label"]: g["learning_rate"] for g in data["groups"]}
    assert rates["full"] == pytest.approx(5e-5) and rates["lora"] == pytest.approx(1e-3)


def test_every_run_has_a_loss_curve_in_its_report(comparison):
    for run in ("full-seed1", "lora-seed2"):
        ev = comparison["out"] / run / "eval"
        assert (ev / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "![training and validation loss](loss_curve.png)" in (ev / "report.md").read_text()


def test_html_report_is_self_contained_with_one_row_per_method(comparison):
    text = (comparison["out"] / "report.html").read_text()
    p = _Html()
    p.feed(text)
    assert [r[0] for r in p.rows] == ["full", "lora", "freeze", "adapter"]
    assert p.rows[2][1] == "failed" and "simulated crash" in p.rows[2][-1]
    assert not {"script", "link", "iframe"} & p.tags
    imgs = [v for v in p.links]
    assert len(imgs) == 3 and all(v.startswith("data:image/png;base64,") for v in imgs)
    for v in imgs:
        assert base64.b64decode(v.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "http://" not in text and "https://" not in text
    md = (comparison["out"] / "report.md").read_text()
    assert md.count("\n| full |") == 1 and "(plots/quality_vs_cost.png)" in md


def test_resume_skips_completed_and_redoes_failed(comparison):
    from tuneforge.compare import compare
    from tuneforge.errors import RunDirError

    out, cfg = comparison["out"], comparison["cfg"]
    with pytest.raises(RunDirError, match="--resume"):
        compare(str(cfg), "full", seeds="1", max_steps=4, out=out, overrides=STEPS, isolate=False, echo=lambda s: None)
    stamp = (out / "full-seed1" / "efficiency.json").stat().st_mtime
    lines: list[str] = []
    compare(
        str(cfg),
        "full,adapter",
        seeds="1",
        max_steps=4,
        out=out,
        overrides=STEPS,
        resume=True,
        method_configs=comparison["methods_dir"],
        isolate=False,
        echo=lines.append,
    )
    assert (out / "full-seed1" / "efficiency.json").stat().st_mtime == stamp
    assert any("full seed 1: already completed, skipped" in ln for ln in lines)
    assert any("adapter seed 1: FAILED" in ln for ln in lines)
    # a run saved before a config key existed (here: one removed from its config.yaml) still counts as the same
    saved = out / "full-seed1" / "config.yaml"
    raw = yaml.safe_load(saved.read_text())
    del raw["data"]["clean"]["noise_features"]
    saved.write_text(yaml.safe_dump(raw))
    compare(
        str(cfg),
        "full",
        seeds="1",
        max_steps=4,
        out=out,
        overrides=STEPS,
        resume=True,
        method_configs=comparison["methods_dir"],
        isolate=False,
        echo=lambda s: None,
    )
    assert (out / "full-seed1" / "efficiency.json").stat().st_mtime == stamp
    # a changed setting is not silently reused
    with pytest.raises(RunDirError, match="different config"):
        compare(
            str(cfg),
            "full",
            seeds="1",
            max_steps=3,
            out=out,
            overrides=STEPS,
            resume=True,
            isolate=False,
            echo=lambda s: None,
        )


def test_plan_overrides_and_learning_rate_choices(comparison, tmp_path):
    from tuneforge.compare.plan import plan
    from tuneforge.errors import ConfigError

    cfg = comparison["cfg"]
    runs = plan(
        cfg,
        ["full", "lora", "qlora"],
        None,
        None,
        tmp_path,
        ["method.r=2", "train.learning_rate=0.02"],
        method_configs=tmp_path,
    )
    by = {r.method: r.raw for r in runs}
    assert by["lora"]["method"]["r"] == 2 and by["qlora"]["method"]["r"] == 2 and "r" not in by["full"]["method"]
    assert all(raw["train"]["learning_rate"] == 0.02 for raw in by.values())  # explicit: one rate for all
    # without method files: the config's LoRA settings carry over to qlora (all keys apply), not to adapter
    lora_cfg = tmp_path / "lora.yaml"
    lora_cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), "method": {"name": "lora", "r": 3}}))
    by = {
        r.method: r.raw["method"]
        for r in plan(lora_cfg, ["qlora", "adapter"], None, None, tmp_path, method_configs=tmp_path)
    }
    assert by == {"qlora": {"name": "qlora", "r": 3}, "adapter": {"name": "adapter"}}
    kept = plan(cfg, ["full"], [3], 5, tmp_path, [], method_configs=tmp_path, keep_learning_rate=True)[0]
    assert kept.raw["train"]["learning_rate"] == 1e-2 and kept.raw["train"]["seed"] == 3
    assert kept.path == tmp_path / "full-seed3"
    with pytest.raises(ConfigError, match="did you mean 'lora'"):
        plan(cfg, ["lorra"], None, None, tmp_path)
    with pytest.raises(ConfigError, match="none of the methods"):
        plan(cfg, ["full"], None, None, tmp_path, ["method.r=2"])


def test_report_cli_on_existing_runs_and_errors(comparison, tmp_path):
    out = comparison["out"]
    res = run_cli("report", str(out / "full-seed1"), str(out / "lora-seed1"), "--out", str(tmp_path / "rep"))
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "rep" / "compare.json").read_text())
    assert [g["label"] for g in data["groups"]] == ["full", "lora"]
    assert (tmp_path / "rep" / "report.html").is_file()
    res = run_cli("report", str(tmp_path / "nope"))
    assert res.returncode == 5 and res.stderr.strip().startswith("error: run directory not found")
    assert "Traceback" not in res.stderr
    res = run_cli("compare", str(comparison["cfg"]), "--methods", "full,lorra", "--out", str(tmp_path / "c"))
    assert res.returncode == 2 and "did you mean 'lora'" in res.stderr and "Traceback" not in res.stderr


def test_compare_cli_trains_each_run_in_its_own_process(comparison, tmp_path):
    res = run_cli(
        "compare", str(comparison["cfg"]), "--methods", "full", "--max-steps", "2", "--out", str(tmp_path / "c"), *STEPS
    )
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "c" / "full-seed7"
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert "run directory" in (run / "train.log").read_text()
    assert (tmp_path / "c" / "report.html").is_file()
