"""`tuneforge search`: hyperparameter search over normal runs on Optuna (layer 6): the space and its check, the plan,
storage, trial liveness, one trial, the workers, the whole search (study.py) and its report.

    from tuneforge.search import make_plan, search
    result = search(make_plan("configs/quickstart/sentiment-minilm-lora.yaml", "space.yaml", trials=20))
"""

from tuneforge.search.plan import Plan, make_plan
from tuneforge.search.space import Param, load_space, parse_space
from tuneforge.search.space_check import validate_space
from tuneforge.search.study import SearchResult, search, summary
from tuneforge.search.workers import run_worker

__all__ = [
    "Param",
    "Plan",
    "SearchResult",
    "load_space",
    "make_plan",
    "parse_space",
    "run_worker",
    "search",
    "summary",
    "validate_space",
]
