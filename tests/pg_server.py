"""A real PostgreSQL server for the tests that share one Optuna study between processes (`tuneforge search
--storage postgresql+psycopg://...`): started by the tests themselves from the PostgreSQL binaries
(/usr/lib/postgresql/*/bin, Debian's `postgresql` package; `.ci/run` installs it), in a temporary directory, on a
free loopback port, with trust authentication, and stopped and removed at the end.

    from pg_server import postgres_url   # a session fixture: "postgresql+psycopg://postgres@127.0.0.1:PORT/tuneforge"
    from pg_server import postgres_server   # the same server: postgres_server.new_database("name") -> a fresh URL

PostgreSQL refuses to run as root: as root the server runs as the system user `tuneforge-pg` (created with
`useradd --system` when missing) through `runuser`. Without the binaries the tests are skipped, unless
TUNEFORGE_REQUIRE_POSTGRES=1 (set by `.ci/run`), where they fail instead."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from serve_common import free_port

PG_USER = "tuneforge-pg"
DATABASE = "tuneforge"


def pg_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb and pg_ctl (or the ones on PATH), else None."""
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0,
    )
    for d in reversed(dirs):
        if Path(d, "initdb").is_file() and Path(d, "pg_ctl").is_file():
            return Path(d)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def _as_server_user() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as a non-root user: nothing when not root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
            capture_output=True,
            text=True,
        )
    return ["runuser", "-u", PG_USER, "--"]


def _run(cmd: list[str], what: str, cwd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")


class PostgresServer:
    """A running server: `url` is its database DATABASE; `new_database(name)` creates another (an empty schema, e.g.
    for processes that race to create Optuna's tables) and returns its URL."""

    def __init__(self, port: int, database: str):
        self.port = port
        self.url = self.url_of(database)

    def url_of(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)


@contextlib.contextmanager
def running_postgres(database: str = DATABASE, attempts: int = 3):
    """Start a throwaway PostgreSQL server and create `database` on it; yields a PostgresServer (its `url`:
    postgresql+psycopg://postgres@127.0.0.1:PORT/DATABASE); always stops the server and removes its files."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(
            "PostgreSQL binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin "
            "or on PATH: `apt-get install postgresql`"
        )
    prefix = _as_server_user()
    # not under pytest's tmp_path: its parents are private to root, and the server user must reach its files
    root = tempfile.mkdtemp(prefix="tuneforge-pg-")
    data, log = os.path.join(root, "data"), os.path.join(root, "server.log")
    if prefix:
        shutil.chown(root, user=PG_USER)
    os.chmod(root, 0o700)
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", data]
    started = False
    try:
        _run(
            [
                *prefix,
                str(bin_dir / "initdb"),
                "-D",
                data,
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
            cwd=root,
        )
        for attempt in range(attempts):
            port = free_port()  # another process may take it before the server binds: retry on a new port
            # -k: the Unix socket in the private directory (not /var/run/postgresql); -F: no fsync (throwaway data)
            proc = subprocess.run(
                [*pg_ctl, "-l", log, "-w", "-t", "60", "-o", f"-k {root} -h 127.0.0.1 -p {port} -F", "start"],
                capture_output=True,
                text=True,
                cwd=root,
                timeout=120,
            )
            if proc.returncode == 0:
                started = True
                break
            if attempt == attempts - 1:
                tail = Path(log).read_text()[-2000:] if os.path.exists(log) else proc.stderr[-2000:]
                raise RuntimeError(f"pg_ctl start failed ({proc.returncode}): {tail}")
            time.sleep(0.5)
        _run(
            [*prefix, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
            "createdb",
            cwd=root,
        )
        yield PostgresServer(port, database)
    finally:
        if started:
            subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, text=True, cwd=root, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


_session: dict = {}  # the one server of this test session, whichever fixture started it


def _session_server(request) -> PostgresServer:
    """Start the session's server on first use (skipped, or failed under TUNEFORGE_REQUIRE_POSTGRES=1, without the
    binaries); it stops when the session-scoped fixture that started it is torn down, at the end of the session."""
    if "server" not in _session:
        if pg_bin_dir() is None:
            reason = (
                "PostgreSQL binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin: "
                "apt-get install postgresql"
            )
            if os.environ.get("TUNEFORGE_REQUIRE_POSTGRES") == "1":
                pytest.fail(f"{reason} (TUNEFORGE_REQUIRE_POSTGRES=1: the PostgreSQL tests must run here)")
            pytest.skip(reason)
        pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install -e '.[search]'")
        stack = contextlib.ExitStack()
        _session["server"] = stack.enter_context(running_postgres())

        def stop():
            _session.pop("server", None)
            stack.close()

        request.addfinalizer(stop)
    return _session["server"]


# each fixture stands alone: a test module imports the one it uses
@pytest.fixture(scope="session")
def postgres_server(request) -> PostgresServer:
    """One PostgreSQL server for the whole session."""
    return _session_server(request)


@pytest.fixture(scope="session")
def postgres_url(request) -> str:
    """The session server's database DATABASE; tests that share it keep apart by study name."""
    return _session_server(request).url
