"""`make lock`: freeze a green environment into requirements/constraints.txt.

    python requirements/lock.py VENV_DIR OUT_FILE           write the lock
    python requirements/lock.py --diff VENV_DIR LOCK_FILE   print how VENV_DIR differs from the lock

Writes every installed distribution of VENV_DIR with its exact version, torch's build included (on a CUDA
machine `make` leaves the torch lines out, so the user's CUDA build is kept), except torch's CUDA companions,
the packaging tools and tuneforge itself. Refuses an environment whose full test suite has not passed
(`make test`/`make test-latest` leave a `.tests-passed` marker in the venv after a full green run)."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
from pathlib import Path

# torch and torchvision stay in the lock as the build the suite ran with (the CPU build here); `make` drops those
# lines on a CUDA machine, whose own torch is kept. Its CUDA companions are never locked.
SKIP = re.compile(r"^(torchaudio|triton|nvidia-[a-z0-9_-]+|pip|setuptools|wheel|tuneforge)==", re.IGNORECASE)


def pinned(venv: str) -> list[str]:
    """`name==version` of every distribution in `venv` that the lock covers, sorted by name."""
    freeze = subprocess.run(
        [str(Path(venv, "bin", "python")), "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    return sorted((line for line in freeze if "==" in line and not SKIP.match(line)), key=str.lower)


def diff(venv: str, lock: str) -> int:
    locked = dict(
        line.split("==", 1) for line in Path(lock).read_text().splitlines() if "==" in line and not line.startswith("#")
    )
    now = dict(line.split("==", 1) for line in pinned(venv))
    changed = [
        f"  {name}: {locked.get(name, '-')} -> {now.get(name, '-')}"
        for name in sorted(set(locked) | set(now), key=str.lower)
        if locked.get(name) != now.get(name)
    ]
    print(f"{venv} vs {lock}: " + ("same versions" if not changed else f"{len(changed)} differ"))
    print("\n".join(changed)) if changed else None
    return 0


def main(venv: str, out: str) -> int:
    python = Path(venv, "bin", "python")
    if not Path(venv, ".tests-passed").is_file():
        print(
            f"make lock: {venv} has no full green test run (run `make test-latest`, or `make test` and "
            f"LOCK_FROM=.venv)",
            file=sys.stderr,
        )
        return 1
    pins = pinned(venv)
    where = subprocess.run(
        [str(python), "-c", "import platform as p; print('Python', p.python_version(), p.system(), p.machine())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    header = [
        f"# Exact versions tuneforge was tested with, frozen by `make lock` from {venv} after its full test",
        f"# suite passed ({where}, {datetime.date.today().isoformat()}). `make install` installs exactly these.",
        "# torch/torchvision: the build tested here; on a CUDA machine `make` drops those lines and keeps its torch.",
        "# Upgrading: `make test-latest`, fix what fails, then `make lock` (see docs/dependencies.md).",
    ]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(header + pins) + "\n")
    print(f"make lock: wrote {out} ({len(pins)} packages from {venv})")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--diff"]:
        sys.exit(diff(*sys.argv[2:4]))
    sys.exit(main(*sys.argv[1:3]))
