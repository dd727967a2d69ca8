"""`tuneforge search`: hyperparameter search over normal runs, built on Optuna (its samplers, pruners and RDB
storage; tuneforge writes none of them). Layer 6: a workflow above the training engine.

    from tuneforge.search import make_plan, search
    result = search(make_plan("configs/quickstart/sentiment-minilm-lora.yaml", "space.yaml", trials=20))
"""

from tuneforge.search.space import Param, load_space, parse_space, validate_space
from tuneforge.search.study import Plan, SearchResult, make_plan, run_worker, search, summary

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
