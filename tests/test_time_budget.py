"""`train.max_minutes`: a time budget stops training after the step that passes it; the run is saved and evaluated
as a finished one (what benchmarks/chinese.py uses to compare recipes at the same wall-clock budget)."""

import json

import pandas as pd
import pytest
import yaml

from conftest import make_sentiment_rows, run_cli, tiny_config

pytestmark = pytest.mark.integration


def test_a_time_budget_stops_after_the_step_that_passes_it(tmp_path, tiny_bert):
    pd.DataFrame(make_sentiment_rows(160)).to_csv(tmp_path / "s.csv", index=False)
    cfg = tiny_config(tiny_bert, str(tmp_path / "s.csv"), str(tmp_path / "run"), train__max_minutes=1e-6)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run_cli("train", str(tmp_path / "c.yaml"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "train.max_minutes=1e-06 reached: training stops after step 1 of" in r.stderr
    assert json.loads((tmp_path / "run/efficiency.json").read_text())["global_steps"] == 1
    assert json.loads((tmp_path / "run/status.json").read_text())["state"] == "completed"
    assert "test" in json.loads((tmp_path / "run/eval/metrics.json").read_text())
