"""`tuneforge train CONFIG --nproc N [--nnodes M --node-rank R --master-addr A --master-port P]`: the same
training path in N processes per node, started by torchrun (torch.distributed.run, run in this process: its agent
starts the workers, watches them and tears the group down when one fails). Each worker runs
`python -m tuneforge train CONFIG ...` with `TUNEFORGE_LAUNCHED=1` (it never launches again) and trains through
`tuneforge.training.engine.train`; `tuneforge.training.distributed` keeps the run directory single-writer.

This process (the launcher) trains nothing. It checks the config before any worker starts (one-line errors, as a
single-process run), fixes the run directory up front (`output.dir` given to every worker; multi-node runs must
name it, on a filesystem every node sees), and after the workers end makes sure status.json tells the truth: when
any rank failed, the run is `failed` with the first real error (a rank torn down because another failed reports
only `interrupted` or a broken connection; the root cause is the rank that failed first)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.config import load_config
from tuneforge.errors import ConfigError, TuneforgeError
from tuneforge.training import distributed
from tuneforge.training.jsonfile import read_dict
from tuneforge.training.rundir import RunDir
from tuneforge.training.runlock import holder_alive

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig


class DistributedRunError(TuneforgeError):
    """A rank of a multi-process run failed; `exit_code` is that rank's (2 for a config error, 3 data, ...)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Launch:
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def needed(self) -> bool:
        """Whether this is a multi-process run that this process must launch (its workers never launch again)."""
        return (self.nproc > 1 or self.nnodes > 1) and os.environ.get(distributed.LAUNCHED_ENV) != "1"

    def check(self) -> None:
        """The options on their own (ConfigError, one line)."""
        if self.nproc < 1:
            raise ConfigError(f"--nproc: must be at least 1, got {self.nproc}")
        if self.nnodes < 1:
            raise ConfigError(f"--nnodes: must be at least 1, got {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(
                f"--node-rank: must be from 0 to {self.nnodes - 1} (--nnodes {self.nnodes}), got {self.node_rank}"
            )
        if self.nnodes > 1 and not self.master_addr:
            raise ConfigError("--master-addr: a multi-node run (--nnodes > 1) needs the address of node 0")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            raise ConfigError(f"--master-port: must be a port number (1-65535), got {self.master_port}")


def _check(spec: Launch, cfg: RunConfig) -> None:
    import torch

    spec.check()
    if spec.nnodes > 1 and not cfg.output.dir:
        raise ConfigError(
            "output.dir: a multi-node run (--nnodes > 1) needs output.dir set to a directory every "
            "node sees (a shared filesystem); rank 0 writes the run there"
        )
    if torch.cuda.is_available() and spec.nproc > torch.cuda.device_count():
        raise ConfigError(
            f"--nproc {spec.nproc}: this node has {torch.cuda.device_count()} GPU(s); one process per GPU"
        )
    if (
        cfg.train.distributed.fsdp.sharding == "hybrid"
        and cfg.train.distributed.strategy == "fsdp"
        and spec.nnodes == 1
    ):
        raise ConfigError(
            "train.distributed.fsdp.sharding: 'hybrid' shards inside a node and replicates across "
            "nodes: it needs --nnodes > 1 (use full on one node)"
        )


def launch(
    config: str | os.PathLike, overrides=(), spec: Launch = Launch(), resume: bool = False, force: bool = False
) -> Path:
    """Train CONFIG in `spec.nproc` processes per node (see the module doc). Returns the run directory.

    Raises ConfigError / RunDirError before any worker starts, and DistributedRunError (carrying the failed rank's
    exit code) when a rank fails; status.json then says `failed` with that rank's one-line error."""
    overrides = list(overrides)
    cfg = load_config(config, overrides)  # every config and machine check, before a worker exists
    _check(spec, cfg)
    target = RunDir.resolve_target(cfg, resume)
    scratch = Path(tempfile.mkdtemp(prefix="tuneforge-launch-"))
    args = _torchrun_args(
        spec,
        [str(config), *overrides, f"output.dir={target}"]
        + (["--resume"] if resume else [])
        + (["--force"] if force else []),
    )
    env_before = {
        k: os.environ.get(k) for k in (distributed.LAUNCHED_ENV, distributed.LAUNCH_DIR_ENV, "OMP_NUM_THREADS")
    }
    os.environ[distributed.LAUNCHED_ENV] = "1"
    os.environ[distributed.LAUNCH_DIR_ENV] = str(scratch)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # N processes share the cores (torchrun's own default)
    if os.environ.get("TUNEFORGE_DEBUG") != "1":  # c10d's C++ notes (unused-parameter search, ...) per rank
        env_before.setdefault("TORCH_CPP_LOG_LEVEL", os.environ.get("TORCH_CPP_LOG_LEVEL"))
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    print(
        f"tuneforge: launching {spec.nproc} process(es) per node on {spec.nnodes} node(s) "
        f"({cfg.train.distributed.strategy}); run directory {target}",
        file=sys.stderr,
        flush=True,
    )
    try:
        failure = _run_torchrun(args)
        return _finish(scratch, target, failure, primary_node=spec.node_rank == 0)
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(scratch, ignore_errors=True)


def _torchrun_args(spec: Launch, train_args: list[str]) -> list[str]:
    args = ["--nproc-per-node", str(spec.nproc), "--nnodes", str(spec.nnodes), "--node-rank", str(spec.node_rank)]
    if spec.master_addr:
        args += ["--master-addr", spec.master_addr]
    if spec.master_port is not None:
        args += ["--master-port", str(spec.master_port)]
    if spec.nnodes == 1 and spec.master_port is None:
        args = ["--standalone", *args]  # a free local port: several single-node runs can share a machine
    # no respawning: a failed rank fails the run (its error is what the user must see)
    args += ["--max-restarts", "0", "--module", "tuneforge", "train", *train_args]
    if os.environ.get("TUNEFORGE_DEBUG") == "1":
        args.append("--debug")
    return args


def _run_torchrun(args: list[str]) -> dict | None:
    """Run torchrun's agent here; None when every worker exited 0, else {rank: exit code} of the failures."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if os.environ.get("TUNEFORGE_DEBUG") != "1":  # the agent's own INFO/WARNING chatter is not the user's business
        for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        run(parse_args(args))
    except ChildFailedError as exc:
        return {int(r): f.exitcode for r, f in exc.failures.items()}
    return None


#: what a rank says when it was only torn down because another rank failed
_TORN_DOWN = ("interrupted", "connection", "gloo", "nccl", "broken pipe", "timed out", "socket", "peer")


def _secondary(message: str) -> bool:
    text = message.lower()
    return any(s in text for s in _TORN_DOWN)


def _finish(scratch: Path, target: Path, failure: dict | None, primary_node: bool = True) -> Path:
    where = read_dict(scratch / "run.json")
    run = RunDir(where.get("path", target), where.get("target", target))
    if failure is None:
        if run.path != run.target and run.status().get("state") == "completed":
            run = RunDir(run.target)  # an overwrite that completed was swapped into place
        return run.path
    errors = sorted((read_dict(p) for p in scratch.glob("rank-*.json")), key=lambda e: e.get("time", 0.0))
    errors = [e for e in errors if e.get("message")]
    root = next((e for e in errors if not _secondary(e["message"])), errors[0] if errors else None)
    if root is not None:
        message, code = f"rank {root.get('rank')}: {root['message']}", int(root.get("exit_code") or 1)
    else:  # killed without a word (out of host memory, a signal): torchrun still knows its exit code
        rank, code = min(failure.items())
        message = f"rank {rank} exited with code {code}" + (" (killed by a signal)" if code < 0 else "")
        code = 1
    # rank 0 (when it wrote anything) may say `running` (killed) or `interrupted` (torn down): the run failed
    status = run.status()
    if (
        primary_node
        and status.get("state") in ("running", "failed")
        and status.get("error") != message.split(": ", 1)[-1]
    ):
        run.fail(message)
        if run.lock_file.is_file() and not holder_alive(run.lock_info()):
            run.lock_file.unlink(missing_ok=True)  # rank 0 was killed before it could release it
    raise DistributedRunError(message, code)
