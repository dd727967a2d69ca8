"""tuneforge: fine-tune pretrained transformers from one YAML config.

Python API (the CLI is a thin layer over these):

    import tuneforge
    result = tuneforge.train("configs/quickstart/sentiment-minilm-lora.yaml", ["train.epochs=1"])
    tuneforge.predict(result.run_dir, ["a gripping, beautifully shot film"])
    tuneforge.evaluate(result.run_dir, "new_labelled.csv")
    tuneforge.search("configs/quickstart/sentiment-minilm-lora.yaml",
                     "configs/search/sentiment-minilm-lora-space.yaml", ["train.max_steps=60"], trials=20)
"""

__version__ = "0.1.0"


def train(config, overrides=(), resume: bool = False, force: bool = False):
    from tuneforge.training.engine import train as _train

    return _train(config, overrides, resume=resume, force=force)


def chat(target, messages, **settings):
    """One answer from a causal-LM run (or base model) to `messages` (a string or a list of role/content dicts)."""
    from tuneforge.generation import generate, load_chat_model

    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    return generate(load_chat_model(str(target)), [msgs], settings)[0]["response"]


def load_config(path=None, overrides=(), raw=None):
    from tuneforge.config import load_config as _load

    return _load(path, overrides, raw)


def predict(run_dir, texts, batch_size: int = 64):
    from tuneforge.inference import predict as _predict

    return _predict(run_dir, texts, batch_size)


def evaluate(run_dir, data=None, out_dir=None, text_column=None, label_column=None):
    """Metrics of a run on labelled `data` (default: the run's own saved test split)."""
    from tuneforge.inference import evaluate as _evaluate

    return _evaluate(run_dir, data, out_dir, text_column, label_column)


def load_run(run_dir):
    from tuneforge.inference import load_run as _load_run

    return _load_run(run_dir)


__all__ = ["train", "chat", "load_config", "predict", "evaluate", "load_run", "__version__"]


def search(config, space, overrides=(), **options):
    """A hyperparameter search (Optuna) over `space` (a YAML file of config keys and values to try), each trial a
    run of `config`; `options` are make_plan's (trials, timeout, study, study_dir, storage, workers, sampler,
    pruner, objectives, seed). Returns tuneforge.search.SearchResult."""
    from tuneforge.search import make_plan
    from tuneforge.search import search as _search

    return _search(make_plan(config, space, list(overrides), **options))
