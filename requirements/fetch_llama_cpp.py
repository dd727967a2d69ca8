"""`make install`: llama.cpp's own GGUF converter, from the llama-cpp-python source distribution on PyPI (MIT).

    python requirements/fetch_llama_cpp.py [--sdist PATH] [--dest DIR]

Takes vendor/llama.cpp/convert_hf_to_gguf.py, its `conversion/` package, `gguf-py/` (the gguf package that converter
is written against) and llama.cpp's LICENSE out of llama_cpp_python-0.3.36.tar.gz (the file given by --sdist, or
downloaded from PyPI with `pip download --no-deps --no-binary :all:`; its SHA-256 checked) into DIR (default:
<this Python's prefix>/share/tuneforge/llama.cpp). `tuneforge export --format gguf` runs that converter. A DIR already
holding this version is kept, so running it again downloads nothing. Standard library only; exits 1 with a one-line
error."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
#: what is taken from the sdist's vendor/llama.cpp/: files, and directories taken whole
FILES = ("convert_hf_to_gguf.py", "LICENSE")
DIRS = ("conversion", "gguf-py")
STAMP = "VERSION"
NAME = "fetch_llama_cpp"


class FetchError(Exception):
    """A one-line reason the converter could not be fetched."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(into: Path) -> Path:
    """The sdist, downloaded from PyPI into `into` with pip. Raises FetchError."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--retries", "1", "--timeout", "30", "--disable-pip-version-check", "-q", "-d", str(into)]
    cmd += [f"{PACKAGE}=={VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = into / SDIST
    if not found.is_file():  # pip may fail after saving the file (it prepares metadata); the file is what counts
        said = next((l.strip() for l in reversed(proc.stderr.splitlines()) if l.strip()), "no message")
        raise FetchError(
            f"cannot download {PACKAGE}=={VERSION} from PyPI (is PyPI reachable?): pip said: {said[:200]}; "
            f"or pass --sdist PATH to a downloaded {SDIST}"
        )
    return found


def extract(sdist: Path, dest: Path) -> int:
    """vendor/llama.cpp's FILES and DIRS of `sdist` into `dest` (replacing what is there), through a temporary
    directory renamed at the end. Returns the number of files written. Raises FetchError."""
    if _sha256(sdist) != SHA256:
        raise FetchError(f"{sdist} is not {SDIST} as PyPI ships it (SHA-256 differs)")
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    count = 0
    try:
        with tarfile.open(sdist, "r:*") as tar:
            for member in tar.getmembers():
                if not member.isfile() or not member.name.startswith(prefix):
                    continue
                rel = member.name[len(prefix) :]
                if rel not in FILES and rel.split("/", 1)[0] not in DIRS:
                    continue
                if ".." in Path(rel).parts:
                    raise FetchError(f"{sdist}: unsafe path {member.name}")
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                target.write_bytes(src.read() if src is not None else b"")
                count += 1
        missing = [f for f in (*FILES, *DIRS) if not (tmp / f).exists()]
        if missing:
            raise FetchError(f"{sdist} has no vendor/llama.cpp/{missing[0]}: is it {SDIST}?")
        (tmp / STAMP).write_text(VERSION + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"cannot extract from {sdist}: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    ap.add_argument("--sdist", type=Path, help=f"a downloaded {SDIST} (default: download it)")
    ap.add_argument(
        "--dest",
        type=Path,
        default=Path(sys.prefix) / "share" / "tuneforge" / "llama.cpp",
        help="where to put the converter (default: %(default)s)",
    )
    args = ap.parse_args(argv)
    stamp = args.dest / STAMP
    if stamp.is_file() and stamp.read_text().strip() == VERSION and (args.dest / FILES[0]).is_file():
        print(f"{NAME}: {args.dest}: up to date (llama.cpp from {PACKAGE} {VERSION})")
        return 0
    try:
        if args.sdist is not None:
            if not args.sdist.is_file():
                raise FetchError(f"--sdist {args.sdist}: no such file")
            n = extract(args.sdist, args.dest)
        else:
            with tempfile.TemporaryDirectory(prefix=f"{NAME}-") as tmp:
                n = extract(download(Path(tmp)), args.dest)
    except FetchError as exc:
        print(f"{NAME}: error: {exc}", file=sys.stderr)
        return 1
    print(f"{NAME}: wrote {args.dest} ({n} files: llama.cpp's convert_hf_to_gguf.py and gguf-py, {PACKAGE} {VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
