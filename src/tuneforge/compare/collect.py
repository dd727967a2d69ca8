"""Reading run directories into comparable records, and aggregating them across seeds.

Everything here works from the run-directory contract alone (config.yaml, status.json, efficiency.json,
eval/metrics.json, metrics.jsonl, model/), so runs made separately or on another machine compare the same
way as runs made by `tuneforge compare`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tuneforge.errors import RunDirError


def task_metrics(task: str) -> list[str]:
    """The final metrics a task's comparison shows, in column order (`Task.report_metrics`; the first present
    one is the fallback primary metric); for an unknown task the fallback list."""
    from tuneforge.registry import TASKS

    if task in TASKS:
        return list(TASKS.get(task).report_metrics)
    return list(FALLBACK_METRICS)


FALLBACK_METRICS = ["accuracy", "f1_macro", "auc_roc", "loss", "perplexity"]
LOWER_IS_BETTER = {"loss", "perplexity"}

#: efficiency numbers aggregated across seeds (efficiency.json keys, plus model_size_mb computed post hoc)
EFFICIENCY_KEYS = [
    "trainable_params",
    "trainable_percent",
    "total_params",
    "train_seconds",
    "train_samples_per_second",
    "train_tokens_per_second",
    "time_to_first_step_seconds",
    "peak_rss_mb",
    "peak_gpu_allocated_mb",
    "peak_gpu_reserved_mb",
    "model_size_mb",
    "inference_latency_ms_p50",
    "inference_latency_ms_p95",
    "inference_samples_per_second",
    "global_steps",
]
#: config keys that may differ between runs of one group (seeds of the same setting)
_PER_RUN_KEYS = (("train", "seed"), ("output", "dir"), ("output", "name"), ("output", "overwrite"))


@dataclass
class RunRecord:
    path: Path
    name: str
    state: str
    error: str | None
    config: dict
    method: str
    task: str
    seed: int | None
    learning_rate: float | None
    metric: str | None = None
    greater_is_better: bool = True
    metrics: dict = field(default_factory=dict)
    metrics_split: str | None = None
    efficiency: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "run_dir": str(self.path),
            "name": self.name,
            "state": self.state,
            "error": self.error,
            "method": self.method,
            "task": self.task,
            "seed": self.seed,
            "learning_rate": self.learning_rate,
            "metric": self.metric,
            "greater_is_better": self.greater_is_better,
            "metrics": self.metrics,
            "metrics_split": self.metrics_split,
            "efficiency": self.efficiency,
            "model": (self.config.get("model") or {}).get("name"),
            "curves": {k: [list(p) for p in v] for k, v in self.curves.items()},
        }


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / "status.json").is_file()


def expand_run_dirs(paths) -> list[Path]:
    """Run directories named by `paths`: each path is a run directory, or a directory of them (a
    comparison directory), whose runs are taken in name order.

    Raises RunDirError for a path that does not exist or holds no run."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise RunDirError(f"run directory not found: {p}")
        if is_run_dir(p):
            out.append(p)
            continue
        children = sorted(c for c in p.iterdir() if c.is_dir() and is_run_dir(c)) if p.is_dir() else []
        if not children:
            raise RunDirError(f"{p} is neither a run directory (no config.yaml / status.json) nor a directory of runs")
        out += children
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _final_metrics(eval_metrics: dict, task: str) -> tuple[dict, str | None]:
    for split in ("test", "validation"):
        block = eval_metrics.get(split)
        if isinstance(block, dict) and any(isinstance(v, (int, float)) for v in block.values()):
            wanted = task_metrics(task)
            keep = {
                k: float(v)
                for k, v in block.items()
                if k in set(wanted) | set(FALLBACK_METRICS) and isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            return keep, split
    return {}, None


def _known_tasks() -> list[str]:
    from tuneforge.registry import TASKS

    return TASKS.names()


def _greater_is_better(task: str, metric: str) -> bool:
    try:
        from tuneforge.registry import TASKS

        return bool(TASKS.get(task).metrics.get(metric, metric not in LOWER_IS_BETTER))
    except Exception:
        return metric not in LOWER_IS_BETTER


def read_run(path: str | Path) -> RunRecord:
    """One run directory as a RunRecord; a missing or unreadable part leaves that part empty rather than
    failing, because a comparison should show what a broken run has (its error) next to the others."""
    from tuneforge.evaluation.plots import read_loss_history
    from tuneforge.evaluation.speed import dir_size_mb

    path = Path(path)
    cfg = _read_yaml(path / "config.yaml")
    status = _read_json(path / "status.json")
    state = status.get("state") or ("missing" if not cfg else "unknown")
    method = str((cfg.get("method") or {}).get("name") or "?")
    task = str((cfg.get("task") or {}).get("type") or "?")
    train = cfg.get("train") or {}
    rec = RunRecord(
        path=path,
        name=path.name,
        state=state,
        error=status.get("error"),
        config=cfg,
        method=method,
        task=task,
        seed=train.get("seed"),
        learning_rate=train.get("learning_rate"),
    )
    if rec.learning_rate is None and method != "?":
        try:
            from tuneforge.registry import METHODS

            rec.learning_rate = METHODS.get(method).Config.default_learning_rate
        except Exception:
            pass
    rec.metrics, rec.metrics_split = _final_metrics(_read_json(path / "eval" / "metrics.json"), task)
    wanted = (cfg.get("eval") or {}).get("metric")
    if wanted not in rec.metrics:
        wanted = next(
            (m for m in (task_metrics(task) if task in _known_tasks() else []) + FALLBACK_METRICS if m in rec.metrics),
            wanted,
        )
    rec.metric = wanted
    rec.greater_is_better = _greater_is_better(task, wanted) if wanted else True
    eff = _read_json(path / "efficiency.json")
    rec.efficiency = {k: eff[k] for k in EFFICIENCY_KEYS if isinstance(eff.get(k), (int, float))}
    for k in ("device", "precision", "torch_threads"):
        if k in eff:
            rec.efficiency[k] = eff[k]
    if "model_size_mb" not in rec.efficiency and (path / "model").is_dir():
        rec.efficiency["model_size_mb"] = dir_size_mb(path / "model")
    rec.curves = read_loss_history(path / "metrics.jsonl")
    if state == "completed" and not rec.metrics:
        rec.error = rec.error or "completed, but eval/metrics.json has no final metrics"
    return rec


def _group_key(cfg: dict) -> str:
    c = json.loads(json.dumps(cfg, default=str))
    try:
        # validated, so a run saved before a key (with its default) existed groups with newer runs
        from tuneforge.config import resolved_config

        c = resolved_config(c)
    except Exception:
        pass
    for section, key in _PER_RUN_KEYS:
        if isinstance(c.get(section), dict):
            c[section].pop(key, None)
    return json.dumps(c, sort_keys=True)


def _stats(values: list[float]) -> dict | None:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(vals), "max": max(vals), "n": len(vals)}


def _flat(value, prefix: str = "") -> dict[str, object]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, object] = {}
    for k, v in value.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _labels(groups: dict[str, list[RunRecord]], per_method: dict[str, int]) -> dict[int, str]:
    """A label per group: its method, and where several groups share a method the config keys that tell them apart
    (`lora task.loss=orpo`), else the first run's directory name."""
    flat = {key: _flat(json.loads(key)) if not key.startswith("?") else {} for key in groups}
    labels = {}
    for key, runs in groups.items():
        method = runs[0].method
        if per_method[method] == 1:
            labels[id(runs)] = method
            continue
        mine = flat[key]
        others = [flat[k] for k, r in groups.items() if k != key and r[0].method == method]
        differ = sorted(
            k for k in set(mine).union(*others) if any(o.get(k) != mine.get(k) for o in others) and k in mine
        )
        shown = ", ".join(f"{k}={mine[k]}" for k in differ[:3])
        labels[id(runs)] = f"{method} {shown}" if differ and len(shown) <= 60 else f"{method} ({runs[0].name})"
    return labels


def group_runs(records: list[RunRecord]) -> list[dict]:
    """Group runs that differ only in seed (and output location) and aggregate each group.

    Returns one dict per group, in first-seen order: label (the method name, made unique with the config keys
    that differ, else the first run's directory name, when two groups share a method), method, task, state
    (completed / failed / partial), errors, runs, seeds, learning_rate, metric, greater_is_better, metrics and
    efficiency as {name: {mean, std, min, max, n}} over the completed runs."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(_group_key(r.config) if r.config else f"?{r.path}", []).append(r)
    per_method: dict[str, int] = {}
    for runs in groups.values():
        per_method[runs[0].method] = per_method.get(runs[0].method, 0) + 1
    labels = _labels(groups, per_method)
    out = []
    for runs in groups.values():
        first = runs[0]
        ok = [r for r in runs if r.state == "completed" and r.metrics]
        # a group still training is not a failure: say so, so a report made mid-comparison reads right
        not_ok = {r.state for r in runs if r not in ok}
        state = (
            "completed"
            if not not_ok
            else "partial"
            if ok
            else "failed"
            if "failed" in not_ok or "completed" in not_ok
            else sorted(not_ok)[0]
        )
        metric_names = []
        for r in ok:
            metric_names += [m for m in r.metrics if m not in metric_names]
        eff_names = [k for k in EFFICIENCY_KEYS if any(k in r.efficiency for r in ok)]
        out.append(
            {
                "label": labels[id(runs)],
                "method": first.method,
                "task": first.task,
                "state": state,
                "errors": [f"{r.name}: {r.error or r.state}" for r in runs if r not in ok],
                "runs": [r.name for r in runs],
                "seeds": [r.seed for r in runs],
                "learning_rate": first.learning_rate,
                "metric": (ok[0] if ok else first).metric,
                "greater_is_better": (ok[0] if ok else first).greater_is_better,
                "metrics": {m: _stats([r.metrics.get(m) for r in ok]) for m in metric_names},
                "efficiency": {k: _stats([r.efficiency.get(k) for r in ok]) for k in eff_names},
                "device": next((r.efficiency.get("device") for r in ok if r.efficiency.get("device")), None),
            }
        )
    return out
