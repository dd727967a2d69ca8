"""The one training path, for every task x method: transformers' Trainer (accelerate underneath, so
DDP/FSDP/DeepSpeed, mixed precision, checkpointing and resume come from a maintained engine), with the
task and the method plugged in through their contracts.

Over 400 lines and still one concern: the order of a run's life (open the run directory, prepare the data once,
load and adapt the model, train, save, evaluate, report, mark the run) is the one thing a reader comes here for,
and it stays readable top to bottom only in one module (DESIGN: one readable training path). Its parts live
beside it: arguments.py (TrainingArguments), trainer.py (the Trainer subclass), finish.py (efficiency and
checkpoints at the end), console.py and progress.py (what the run prints and keeps), rundir.py (the directory)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.config import RunConfig, dump_config, load_config
from tuneforge.config.environment import model_width, precision_note
from tuneforge.data.splits import save_split
from tuneforge.errors import ResourceError, RunDirError, TuneforgeError, first_line
from tuneforge.evaluation.plots import write_run_loss_curve
from tuneforge.evaluation.speed import dir_size_mb, inference_report
from tuneforge.methods import MethodContext, count_parameters
from tuneforge.models.loader import load_model, resolve_model, write_run_metadata
from tuneforge.models.vocabulary_setup import extend_for_run, grow_model, inherited, new_token_ids
from tuneforge.models.vocabulary_setup import metadata as vocabulary_metadata
from tuneforge.registry import METHODS, TASKS
from tuneforge.training import distributed as dist
from tuneforge.training.arguments import build_training_args
from tuneforge.training.callbacks import (
    CheckpointMarkerCallback,
    EfficiencyCallback,
    MetricsLogCallback,
    PruneCallback,
    QuietProgressCallback,
    TimeBudgetCallback,
)
from tuneforge.training.console import CONSOLE_LOG, ConsoleLog, already_captured
from tuneforge.training.finish import best_validation, drop_checkpoints_if_done, efficiency_report
from tuneforge.training.jsonfile import write_json
from tuneforge.training.progress import DEFAULT_INTERVAL, ProgressLines
from tuneforge.training.rundir import RunDir
from tuneforge.training.speed import apply_speedups
from tuneforge.training.trainer import make_trainer_class

log = logging.getLogger("tuneforge")


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    efficiency: dict
    #: the step a PruneCallback stopped training at (the run's status is then `pruned`); None: trained to the end
    pruned_at_step: int | None = None


def train(
    config: RunConfig | str | os.PathLike,
    overrides=(),
    resume: bool = False,
    force: bool = False,
    callbacks=(),
    evaluate_test: bool = True,
) -> TrainResult:
    """Train as the config says and write a run directory. Returns its path, metrics and efficiency.
    `force` turns the task's overridable data checks (for example the chat-template check) into warnings.

    For workflows that train many runs (`tuneforge search`):
    `callbacks`: extra Trainer callbacks. A `PruneCallback` among them may stop training early; the run then ends
    `pruned` (status.json: state `pruned`, `pruned_at_step`; config, data, metrics.jsonl, efficiency.json and the
    loss curve are kept; no model/ and no final evaluation are written; checkpoints are dropped).
    `evaluate_test`: False skips the task's test-split evaluation (the split is still saved in data/split/, so
    `tuneforge eval RUN` can score it later); eval/metrics.json then holds the validation metrics only.

    Raises TuneforgeError (ConfigError, DataError, ModelError, RunDirError) for problems the user can fix;
    the run's status.json then says `failed` with the message."""
    import signal
    import threading

    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    # one of several processes (tuneforge train --nproc N): rank 0 alone writes the run directory
    primary = dist.is_primary()
    dist.init(cfg.train.distributed.timeout_minutes)
    run = _open_run(cfg, resume)
    previous_term = None
    streams = contextlib.ExitStack()
    console = None
    if not primary and os.environ.get("TUNEFORGE_DEBUG") != "1":  # rank 0 speaks for the run
        sink = streams.enter_context(open(os.devnull, "w"))
        streams.enter_context(contextlib.redirect_stderr(sink))
        streams.enter_context(contextlib.redirect_stdout(sink))
    elif primary and not already_captured(run.path, run.target):
        # what the run prints, kept in RUN/console.log (the web UI shows it; it outlives the terminal)
        console = streams.enter_context(ConsoleLog(run.path / CONSOLE_LOG))
    try:
        if threading.current_thread() is threading.main_thread():
            # `kill PID` (SIGTERM) ends the run like Ctrl-C: status `failed: interrupted`, lock released

            def _term(signum, frame):
                raise KeyboardInterrupt

            previous_term = signal.signal(signal.SIGTERM, _term)
        if primary:
            run.start(dump_config(cfg))
            where = f" (training beside the run it replaces, in {run.path})" if run.staged else ""
            print(f"tuneforge: run directory {run.target}{where}", file=sys.stderr, flush=True)
            _print_estimate(cfg)
        try:
            result = _train(cfg, run, resume, force, callbacks=callbacks, evaluate_test=evaluate_test, console=console)
        except KeyboardInterrupt:
            _failed(run, "interrupted", 130)
            raise
        except TuneforgeError as exc:
            _failed(run, str(exc), exc.exit_code)
            raise
        except Exception as exc:
            if _out_of_memory(exc):
                from tuneforge.training.estimate import oom_message

                message = oom_message(cfg, None)
                _failed(run, message, ResourceError.exit_code)
                raise ResourceError(message) from None
            _failed(run, first_line(exc, 1000, with_type=True), 1)
            raise
        finally:
            if primary and run.staged:  # failed before the swap: the old run is untouched
                print(
                    f"tuneforge: {run.target} is unchanged; this attempt is kept in {run.path} "
                    f"(--resume continues it, the next overwrite replaces it)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        streams.close()
        run.release_lock()  # only rank 0 holds it
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    return result


def _print_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _open_run(cfg: RunConfig, resume: bool) -> RunDir:
    """The run directory. A single process (or rank 0) picks it and takes its lock; the other ranks of a
    multi-process run receive rank 0's choice (an overwrite trains beside the old run) and never lock or write."""
    if dist.is_primary():
        try:
            run = RunDir.for_config(cfg, resume=resume)  # holds the run's lock from here: released on every exit
        except BaseException as exc:
            if dist.active():
                dist.share({"error": str(exc), "exit_code": getattr(exc, "exit_code", 1)})
                dist.record_failure(str(exc), getattr(exc, "exit_code", 1))
            raise
        if dist.active():
            dist.share({"path": str(run.path), "target": str(run.target)})
            dist.record_run(run.path, run.target)
        return run
    where = dist.share()
    if "error" in where:  # rank 0 reports it; this rank only follows
        raise RunDirError(where["error"])
    return RunDir(where["path"], where["target"])


def _failed(run: RunDir, message: str, exit_code: int) -> None:
    """Mark the run failed (rank 0) and tell the launcher of a multi-process run (every rank)."""
    if dist.is_primary():
        run.fail(message)
    dist.record_failure(message, exit_code)


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)
    )


def _print_estimate(cfg: RunConfig) -> None:
    """The memory estimate (tuneforge.training.estimate) at the start of every run; it never stops a run."""
    from tuneforge.training.estimate import start_of_run_lines

    d = cfg.train.distributed
    strategy = d.strategy if d.strategy != "deepspeed" else f"deepspeed-zero{d.deepspeed.stage}"
    for line in start_of_run_lines(cfg, nproc=dist.world_size(), strategy=strategy):
        print(line, file=sys.stderr, flush=True)


def _train(
    cfg: RunConfig,
    run: RunDir,
    resume: bool,
    force: bool = False,
    callbacks=(),
    evaluate_test: bool = True,
    console: ConsoleLog | None = None,
) -> TrainResult:
    from transformers import EarlyStoppingCallback, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    set_seed(cfg.train.seed)
    from tuneforge.inference import run_scorer

    task = TASKS.get(cfg.task.type)(cfg, force=force)
    task.run_scorer = run_scorer  # for a task that scores with a finished run (a reward run as GRPO's reward)
    method = METHODS.get(cfg.method.name)(cfg.method)
    model_path = resolve_model(cfg.model.name, cfg.model.revision)
    tokenizer = task.inference.load_processor(model_path, cfg.model.trust_remote_code)  # or image preprocessing
    primary = dist.is_primary()
    extensions = inherited(model_path)  # tokens a run this one continues added: their rows still learn
    if extensions and primary:
        how = (
            f"train as new ones here (model.train_embeddings={cfg.model.train_embeddings})"
            if method.trains_new_tokens
            else f"keep their rows as trained (method '{cfg.method.name}' does not train embedding rows)"
        )
        print(
            f"tuneforge: vocabulary: the {len(new_token_ids(extensions))} tokens {cfg.model.name} added to its "
            f"base's vocabulary {how}",
            file=sys.stderr,
            flush=True,
        )
    if cfg.model.extends_vocabulary:  # rank 0 decides the new tokens (run/vocabulary.json), the others read them
        if primary:
            extensions += extend_for_run(cfg.model, tokenizer, run.path)
        dist.barrier()
        if not primary:
            extensions += extend_for_run(cfg.model, tokenizer, run.path)
    prepared = _prepare_once(task, tokenizer, run, cfg)
    if cfg.distill.teacher:
        from tuneforge.training.distill import load_teacher

        # checked and run before the student exists: a teacher that cannot teach this data stops here. Rank 0
        # first (it fills the run's distill/ cache), then the other ranks (they read it)
        if primary:
            prepared = task.distill(prepared, tokenizer, load_teacher(cfg, type(task)), run.path / "distill")
        dist.barrier()
        if not primary:
            prepared = task.distill(prepared, tokenizer, load_teacher(cfg, type(task)), run.path / "distill")

    set_seed(cfg.train.seed)  # the head's initialisation does not depend on how much data was read
    ctx = MethodContext(
        full_precision_modules=task.full_precision_modules,
        gradient_checkpointing=cfg.train.gradient_checkpointing,
        new_token_ids=new_token_ids(extensions),
        train_embeddings=cfg.model.train_embeddings,
    )
    model = load_model(
        model_path,
        task.auto_class(),
        cfg.model.dtype,
        cfg.model.trust_remote_code,
        random_init=cfg.model.random_init,
        **task.model_kwargs(prepared),
        **method.load_kwargs(ctx),
    )
    kept = None
    if cfg.model.keep_layers is not None:  # a smaller student: some of the base's blocks, in order
        from tuneforge.models.blocks import find_blocks
        from tuneforge.models.shrink import keep_layers, resolve_keep_layers

        kept = resolve_keep_layers(cfg.model.keep_layers, len(find_blocks(model)[1]))
        keep_layers(model, kept)
    grow_model(model, extensions)  # the new tokens' rows, each the mean of its old pieces' rows
    model = task.prepare_model(model)
    ctx.head_modules = task.head_modules(model)
    model = method.apply(model, ctx)
    apply_speedups(model, cfg.train, task, method)
    params = count_parameters(model, method.trainable_parameters(model))
    if primary:
        print(
            f"tuneforge: {cfg.task.type} x {cfg.method.name}: training {params['trainable_params']:,} of "
            f"{params['total_params']:,} parameters ({params['trainable_percent']:.2f}%)",
            file=sys.stderr,
            flush=True,
        )

    greater = task.metrics[cfg.eval.metric]
    args = build_training_args(cfg, run, prepared.validation is not None, greater, model=model)
    if primary:
        resolved = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
        note = precision_note(cfg.train.precision, resolved, model_width(model))
        print(f"tuneforge: {note}", file=sys.stderr, flush=True)
    meter = EfficiencyCallback()
    checkpoint = None
    if resume:
        if primary:
            dropped = run.drop_incomplete_checkpoints()
            if dropped:
                print(
                    f"tuneforge: removed incomplete checkpoint(s) {', '.join(dropped)} (cut by a kill during a save)",
                    file=sys.stderr,
                    flush=True,
                )
            checkpoint = run.last_checkpoint()
        checkpoint = dist.share(checkpoint)  # every rank resumes from the checkpoint rank 0 chose
        if checkpoint is None:
            raise RunDirError(f"--resume: {run.path} has no complete checkpoint to continue from")
        print(f"tuneforge: resuming from {Path(checkpoint).name}", file=sys.stderr, flush=True)
    resume_step = int(Path(checkpoint).name.rsplit("-", 1)[1]) if checkpoint else None
    extra = list(callbacks)
    callbacks = [
        MetricsLogCallback(run.metrics_log, resume_step=resume_step),
        CheckpointMarkerCallback(),
        meter,
        *method.callbacks(ctx),
        *extra,
    ]
    if cfg.train.max_minutes:
        callbacks.append(TimeBudgetCallback(cfg.train.max_minutes, meter, dist.share if dist.active() else None))
    if cfg.train.early_stopping.patience and args.eval_strategy != "no":
        callbacks.append(EarlyStoppingCallback(cfg.train.early_stopping.patience, cfg.train.early_stopping.threshold))
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.validation,
        data_collator=task.collator(tokenizer),
        compute_metrics=task.compute_metrics(prepared),
        compute_loss_func=task.loss_function(prepared),
        preprocess_logits_for_metrics=task.preprocess_logits(prepared),
        processing_class=tokenizer,
        callbacks=callbacks,
        method=method,
        meter=meter,
        loss=task.training_loss(prepared, method.disabled_adapters),
        sampler=task.train_sampler(prepared),
        eval_fp32=task.evaluate_in_fp32 and (args.bf16 or args.fp16),
    )
    # the task's work with the built model before the first step: rank 0 first (it fills the run's cache), then
    # the other ranks (they read it)
    before = prepared
    if primary:
        prepared = task.before_training(trainer, prepared, method.disabled_adapters, run.path / "reference")
    dist.barrier()
    if not primary:
        prepared = task.before_training(trainer, prepared, method.disabled_adapters, run.path / "reference")
    if prepared is not before:
        trainer.train_dataset, trainer.eval_dataset = prepared.train, prepared.validation
    # our MetricsLogCallback prints one readable line per evaluation; drop the Trainer's raw dict printing
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgressCallback)
    # progress where people look: the bar in a terminal; elsewhere (a log file, CI, nohup) a line every ~30 s,
    # which the run's console log also gets when the terminal has the bar
    write = _print_line if args.disable_tqdm else console.write_line if console is not None else None
    if primary and write is not None:
        interval = float(os.environ.get("TUNEFORGE_PROGRESS_SECONDS", DEFAULT_INTERVAL))
        trainer.add_callback(ProgressLines(write, interval, eval_seconds=lambda: meter.eval_seconds))

    train_out = trainer.train(resume_from_checkpoint=checkpoint)
    state = trainer.state
    best_val = best_validation(state.log_history, trainer.state.best_metric, cfg.eval.metric, greater)
    pruned = next(
        (cb.pruned_at_step for cb in extra if isinstance(cb, PruneCallback) and cb.pruned_at_step is not None), None
    )
    if pruned is not None:
        if not primary:
            return TrainResult(run.target, {"validation": best_val}, {}, pruned_at_step=pruned)
        return _end_pruned(run, cfg, prepared, state, meter, train_out, params, args, best_val, pruned)

    # a sharded model (FSDP, ZeRO-3) is gathered into one full state dict first: every rank takes part, rank 0
    # receives it, and model/ holds the same loadable files as a single-process run
    gathered = (
        trainer.accelerator.get_state_dict(trainer.model_wrapped) if dist.active() and dist.sharded(cfg) else None
    )
    if primary:
        # the model directory appears only when complete: write beside it, then rename
        tmp = run.path / "model.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        method.save(trainer.model, str(tmp), **({"state_dict": gathered} if gathered is not None else {}))
        tokenizer.save_pretrained(str(tmp))
        write_run_metadata(
            tmp,
            {
                "task": cfg.task.type,
                "method": cfg.method.name,
                "base_model": cfg.model.name,
                "dtype": cfg.model.dtype,
                "method_config": cfg.method.model_dump(mode="json"),
                **({"keep_layers": kept} if kept is not None else {}),
                **({"vocabulary": vocabulary_metadata(extensions)} if extensions else {}),
                **task.metadata(prepared),
            },
        )
        task.save_extras(str(tmp), prepared)
        shutil.rmtree(run.model_dir, ignore_errors=True)
        tmp.rename(run.model_dir)
    del gathered

    if not evaluate_test:  # a search trial: its score is the validation split; the test split stays unseen
        prepared = dataclasses.replace(prepared, test=None)
    # every rank evaluates (the Trainer's evaluation is distributed and gathers the predictions); only rank 0's
    # reports land in the run, the others write into a directory that is thrown away
    scratch = None
    if primary:
        run.eval_dir.mkdir(exist_ok=True)
        eval_dir = run.eval_dir
    else:
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix="tuneforge-rank-eval-")
        eval_dir = Path(scratch.name)
    try:
        metrics = task.final_evaluation(
            trainer, prepared, str(eval_dir), best_val, without_adapters=method.disabled_adapters
        )
    finally:
        if scratch is not None:
            scratch.cleanup()
    if not primary:
        dist.barrier()  # wait until rank 0 has written the run
        return TrainResult(run.target, metrics, {})
    if not evaluate_test and not (run.eval_dir / "metrics.json").is_file():
        # what `report` / `compare` read: the validation metrics, saying the test split was not evaluated
        write_json(run.eval_dir / "metrics.json", {**metrics, "test_split": "not evaluated (evaluate_test=False)"})
    write_run_loss_curve(run.path)

    efficiency = efficiency_report(prepared, state, meter, train_out, params, args)
    # after the peak-memory reading above, so the benchmark's batches do not count as training memory
    efficiency["model_size_mb"] = dir_size_mb(run.model_dir)
    if dist.active():
        efficiency["processes"] = dist.world_size()
        efficiency["strategy"] = cfg.train.distributed.strategy
    if not (dist.active() and dist.sharded(cfg)):  # a sharded model cannot run on rank 0 alone
        efficiency.update(
            inference_report(
                trainer.model,
                prepared.test if prepared.test is not None else prepared.validation,
                task.collator(tokenizer),
                args.per_device_eval_batch_size,
            )
        )
    write_json(run.efficiency, efficiency)
    run.complete(
        metrics={
            k: v
            for k, v in (metrics.get("test") or metrics.get("validation") or {}).items()
            if isinstance(v, (int, float))
        },
        **({} if evaluate_test else {"metrics_split": "validation"}),
    )
    # only now: a kill before `complete` must still find a checkpoint to resume from
    drop_checkpoints_if_done(run)
    summary = metrics.get("test") or metrics.get("validation") or {}
    shown = " ".join(
        f"{k}={summary[k]:.4f}"
        for k in ("combined", "accuracy", "f1_macro", "auc_roc", "loss", "perplexity")
        if isinstance(summary.get(k), (int, float))
    )
    print(
        f"tuneforge: done in {efficiency['train_seconds']:.0f}s of training{': ' + shown if shown else ''}; "
        f"results in {run.path}",
        file=sys.stderr,
        flush=True,
    )
    dist.barrier()  # the other ranks end once the run is written
    return TrainResult(run.path, metrics, efficiency)  # run.complete swapped an overwrite into place


def _prepare_once(task, tokenizer, run: RunDir, cfg: RunConfig):
    """The task's data preparation, run once: by the single process, or by rank 0 of a multi-process run, which
    writes the data report and the split and hands the prepared data to the other ranks (pickled through
    torch.distributed). Data that cannot be pickled are prepared again by each rank (the same seeded steps)."""
    import pickle

    payload = None
    if dist.is_primary():
        prepared = task.prepare(tokenizer)
        log.info("data: %s", prepared.sizes)
        task.write_data_report(prepared, str(run.path / "data"))
        # the exact split: eval and export read the run's test split back instead of re-running the cleaning
        save_split(run.path / "data", prepared.held_out, prepared.train_ids, cfg.data.train, prepared.sizes)
        if not dist.active():
            return prepared
        try:
            payload = pickle.dumps(prepared)
        except Exception as exc:
            log.warning(
                "prepared data cannot be shared between processes (%s); each prepares its own", type(exc).__name__
            )
    payload = dist.share(payload)
    if dist.is_primary():
        return prepared
    return pickle.loads(payload) if payload is not None else task.prepare(tokenizer)


def _end_pruned(
    run: RunDir, cfg: RunConfig, prepared, state, meter, train_out, params: dict, args, best_val: dict, step: int
) -> TrainResult:
    """A run a PruneCallback stopped: efficiency.json, the loss curve and status `pruned` (with the step and the best
    validation metrics so far); no model/ and no final evaluation (a pruned run is not one to use); checkpoints
    dropped."""
    efficiency = efficiency_report(prepared, state, meter, train_out, params, args)
    write_json(run.efficiency, efficiency)
    write_run_loss_curve(run.path)
    shown = {k: v for k, v in best_val.items() if isinstance(v, (int, float))}
    run.prune(step, metrics=shown, metrics_split="validation")
    drop_checkpoints_if_done(run)
    value = best_val.get(cfg.eval.metric)
    print(
        f"tuneforge: pruned at step {step}"
        + (f" ({cfg.eval.metric}={value:.4f})" if isinstance(value, float) else "")
        + f"; results in {run.path}",
        file=sys.stderr,
        flush=True,
    )
    return TrainResult(run.path, {"validation": best_val}, efficiency, pruned_at_step=step)
