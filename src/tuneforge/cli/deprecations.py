"""Old spellings of command-line options, kept for one release.

One vocabulary across commands: `-f/--file` is an input file, `-o/--out` the output directory, `-m/--message` chat's
message, `--text-column`/`--label-column` the data's columns, `--format` has no short flag, and `tuneforge search
summary DIR` prints a study's table. The spellings below predate it; each still works and prints one line saying
what to write instead. Remove this table (and its call in cli/app.py) in the release after 0.2."""

from __future__ import annotations

import sys

#: (command path, old option) -> new option; the value that follows an option moves with it
RENAMED: dict[tuple[str, str], str] = {
    ("predict", "--column"): "--text-column",
    ("export", "-f"): "--format",
    ("data prepare", "-f"): "--format",
    ("compare", "-m"): "--methods",
    ("search", "--dir"): "--out",
    ("webui", "--runs-dir"): "--out",
}

#: commands with subcommands: their first argument is part of the command path
GROUPS = ("data", "search")


def _command_path(argv: list[str]) -> tuple[str, int]:
    """The command path at the start of `argv` (`predict`, `data prepare`) and how many arguments it spans."""
    if not argv or argv[0].startswith("-"):
        return "", 0
    if argv[0] in GROUPS and len(argv) > 1 and not argv[1].startswith("-"):
        return f"{argv[0]} {argv[1]}", 2
    return argv[0], 1


def _notice(old: str, new: str) -> None:
    print(
        f"tuneforge: '{old}' is deprecated and will be removed in the next release; use '{new}'",
        file=sys.stderr,
        flush=True,
    )


def rewrite(argv: list[str]) -> list[str]:
    """`argv` with deprecated spellings replaced by the current ones, one notice per replacement on stderr.
    `--opt value` and `--opt=value` are both rewritten; arguments after `--` are left alone."""
    argv = list(argv)
    if argv[:1] == ["search"] and any(a == "--summary" or a.startswith("--summary=") for a in argv[1:]):
        argv = _search_summary(argv)
    path, start = _command_path(argv)
    # `search CONFIG ...` (a search run, the search group's default) takes the `search` options
    renamed = {old: (cmd, new) for (cmd, old), new in RENAMED.items() if path == cmd or path.startswith(cmd + " ")}
    if not renamed:
        return argv
    out = argv[:start]
    for i, arg in enumerate(argv[start:], start):
        if arg == "--":
            return out + argv[i:]
        name, eq, value = arg.partition("=")
        cmd, new = renamed.get(name, (None, None)) if name.startswith("-") else (None, None)
        if new is None:
            out.append(arg)
            continue
        _notice(f"tuneforge {cmd} {name}", new)
        out.append(f"{new}={value}" if eq else new)
    return out


def _search_summary(argv: list[str]) -> list[str]:
    """`search --summary DIR [...]` -> `search summary DIR` (the option was a command in disguise)."""
    rest = argv[1:]
    for i, arg in enumerate(rest):
        if arg == "--summary" and i + 1 < len(rest):
            _notice("tuneforge search --summary DIR", "tuneforge search summary DIR")
            return ["search", "summary", rest[i + 1]]
        if arg.startswith("--summary="):
            _notice("tuneforge search --summary=DIR", "tuneforge search summary DIR")
            return ["search", "summary", arg.split("=", 1)[1]]
    return argv
