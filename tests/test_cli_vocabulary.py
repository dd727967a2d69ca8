"""One command-line vocabulary (issue 33): a short flag means one thing in every command, the output directory is
`--out`, the text column `--text-column`; the old spellings still work for one release and say so in one line."""

import pytest

from tuneforge.cli.deprecations import rewrite

pytestmark = pytest.mark.unit


def _commands():
    """(command path, click command) of every leaf command."""
    from tuneforge.cli import commands  # noqa: F401  (registers the subcommands)
    from tuneforge.cli.app import _click_command

    def walk(cmd, path):
        if hasattr(cmd, "commands"):  # a group (typer may build it with its own copy of click)
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return list(walk(_click_command(), []))


def test_a_short_flag_means_one_thing_everywhere():
    meaning: dict[str, set[str]] = {}
    for _, cmd in _commands():
        for p in cmd.params:
            longs = [o for o in p.opts if o.startswith("--")]
            for short in (o for o in p.opts if len(o) == 2 and o.startswith("-")):
                meaning.setdefault(short, set()).update(longs)
    assert {s: sorted(v) for s, v in meaning.items() if len(v) > 1} == {}
    assert meaning["-f"] == {"--file"} and meaning["-o"] == {"--out"} and meaning["-m"] == {"--message"}


def test_one_name_for_the_output_directory_and_the_text_column():
    names = {o for _, cmd in _commands() for p in cmd.params for o in p.opts}
    assert not names & {"--dir", "--runs-dir", "--output", "--output-dir", "--column", "--summary"}
    assert {"--out", "--text-column", "--label-column", "--file", "--format"} <= names


@pytest.mark.parametrize(
    ("old", "new", "notice"),
    [
        ("predict run --column review -f x.csv", "predict run --text-column review -f x.csv", "predict --column'"),
        ("predict run --column=review", "predict run --text-column=review", "use '--text-column'"),
        ("export run -f onnx -o out", "export run --format onnx -o out", "export -f"),
        ("data prepare c.yaml -f both -o d", "data prepare c.yaml --format both -o d", "'tuneforge data prepare -f'"),
        ("compare c.yaml -m full,lora", "compare c.yaml --methods full,lora", "compare -m"),
        ("search c.yaml --space s.yaml --dir st", "search c.yaml --space s.yaml --out st", "search --dir"),
        ("search --summary studies/x", "search summary studies/x", "'tuneforge search summary DIR'"),
        ("webui --runs-dir runs", "webui --out runs", "webui --runs-dir"),
    ],
)
def test_old_spellings_are_rewritten_with_a_one_line_notice(old, new, notice, capsys):
    assert rewrite(old.split()) == new.split()
    err = capsys.readouterr().err.strip()
    assert notice in err and "deprecated" in err and "\n" not in err


def test_current_spellings_and_values_are_left_alone(capsys):
    for argv in (
        ["predict", "run", "-f", "x.txt"],
        ["chat", "run", "-m", "hello -f"],
        ["generate", "run", "-f", "p.jsonl", "-o", "out.jsonl"],
        ["train", "c.yaml", "--", "--dir"],
        ["data", "inspect", "c.yaml", "-o", "r"],
    ):
        assert rewrite(argv) == argv
    assert capsys.readouterr().err == ""


def test_an_old_spelling_works_through_the_command_line(tmp_path, capsys):
    from tuneforge.cli.app import main

    assert main(["search", "--summary", str(tmp_path / "nowhere")]) == 5
    err = capsys.readouterr().err.splitlines()
    assert "deprecated" in err[0] and err[1].startswith("error: search summary: ") and "not a study directory" in err[1]
