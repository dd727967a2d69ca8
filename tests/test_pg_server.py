"""The throwaway PostgreSQL server of tests/pg_server.py: it answers through SQLAlchemy + psycopg, and one Optuna
study on it takes trials from two processes at once (what `tuneforge search --storage` relies on).

Optuna creates its tables when a storage is first opened; two processes doing that at the same moment on an empty
database can collide in PostgreSQL's catalog (UniqueViolation on pg_type_typname_nsp_index, "CREATE TYPE
studydirection"). Here the tables are created once before the workers start; `tuneforge search` itself has to cope
with that race (tests/test_search_postgres.py starts its workers on an empty database)."""

import subprocess
import sys
import textwrap

import pytest

from pg_server import postgres_server, postgres_url  # noqa: F401  (the session fixtures)

pytestmark = pytest.mark.unit

pytest.importorskip("optuna")


def test_select_one(postgres_url):  # noqa: F811
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select 1")).scalar() == 1
            assert "PostgreSQL" in conn.execute(sqlalchemy.text("select version()")).scalar()
    finally:
        engine.dispose()


WORKER = textwrap.dedent("""
    import sys
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, name = sys.argv[1:3]
    study = optuna.create_study(storage=url, study_name=name, load_if_exists=True)
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=3)
""")


def test_one_study_from_two_processes(postgres_server):  # noqa: F811
    import optuna

    url, name = postgres_server.new_database("two_workers"), "two-workers"
    optuna.storages.RDBStorage(url).engine.dispose()  # Optuna's tables, once (see the module's docstring)
    # both create (or load) the study at the same moment: load_if_exists must settle that race
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    assert optuna.get_all_study_names(storage=url) == [name]  # one study, not one per process
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    assert len(trials) == 6
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(-1 <= t.params["x"] <= 1 and t.value == pytest.approx(t.params["x"] ** 2) for t in trials)
