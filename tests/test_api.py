"""The Python API (issue 33): one documented, typed function per command, named like it, all in `__all__`."""

import inspect

import pytest

import tuneforge

pytestmark = pytest.mark.unit

QUICK = "configs/quickstart/sentiment-minilm-lora.yaml"
#: API functions and the command each stands for (`eval` is a Python builtin's name, hence `evaluate`)
COMMANDS = {"train": "train", "predict": "predict", "evaluate": "eval", "chat": "chat", "export": "export",
            "estimate": "estimate", "compare": "compare", "search": "search", "load_config": "validate"}  # fmt: skip


def test_every_public_function_is_exported_documented_and_typed():
    public = {n for n, v in vars(tuneforge).items() if inspect.isfunction(v) and not n.startswith("_")}
    assert public <= set(tuneforge.__all__)
    assert set(COMMANDS) | {"load_run"} <= public
    for name in public:
        fn = getattr(tuneforge, name)
        assert fn.__doc__ and len(fn.__doc__) > 40, name
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, name
        untyped = [p for p in sig.parameters.values() if p.annotation is inspect.Parameter.empty]
        assert untyped == [], (name, untyped)


def test_each_function_has_its_command():
    from tuneforge.cli import commands  # noqa: F401  (registers the subcommands)
    from tuneforge.cli.app import _click_command

    names = set(_click_command().commands)
    assert {c for c in COMMANDS.values()} <= names


def test_estimate_through_the_api_is_the_commands_report():
    report = tuneforge.estimate(QUICK, ["train.batch_size=8"], gpu="t4")
    assert report["fits"] is True and report["budget"] > report["total"] > 0 and report["suggestions"] == []
    tight = tuneforge.estimate(QUICK, memory="64MiB")
    assert tight["fits"] is False and tight["suggestions"]


def test_functions_named_like_subpackages_stay_functions():
    """Importing `tuneforge.search.plan` (or export's, compare's modules) binds the subpackage on `tuneforge`;
    the API functions of the same names must survive it."""
    import tuneforge.compare.runner
    import tuneforge.export.exporter
    import tuneforge.search.plan
    from tuneforge.search import make_plan

    assert all(inspect.isfunction(getattr(tuneforge, n)) for n in ("compare", "export", "search"))
    assert callable(make_plan)
