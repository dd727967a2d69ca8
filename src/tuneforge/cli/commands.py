"""Importing this module registers every subcommand on the app (one module per subcommand); the order of the
imports is the order `tuneforge --help` lists the commands in."""

# isort: off
from tuneforge.cli import evaluate, models, predict, train, validate  # noqa: F401
from tuneforge.cli import chat, generate  # noqa: F401
from tuneforge.cli import merge  # noqa: F401
from tuneforge.cli import export, serve  # noqa: F401
from tuneforge.cli import data  # noqa: F401
from tuneforge.cli import compare, report  # noqa: F401
from tuneforge.cli import runs  # noqa: F401
from tuneforge.cli import search  # noqa: F401
from tuneforge.cli import estimate  # noqa: F401
from tuneforge.cli import webui  # noqa: F401
# isort: on
