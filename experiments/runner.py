"""Run a study: validate, then train each technique in chunks, checkpointing as it goes.

For each technique (in config order) all runs (seeds x sweep points) train together in one compiled
program, batched or looped over the runs (``run_strategy``, :mod:`experiments.strategy`; the one
used is recorded per cell as ``run_strategy`` in the summary and in report.md). After every chunk
of ``log_every`` steps the runner evaluates, checks for divergence, appends the chunk's rows to
``metrics.jsonl`` and to TensorBoard event files (:mod:`experiments.tensorboard`), and calls the
hooks (:mod:`experiments.hooks`).  It checkpoints (state + progress, with orbax,
:mod:`experiments.checkpoint`) at most every ``checkpoint_every_s`` seconds, when a technique
ends and when the run stops.  Rerunning on the same workdir resumes from the checkpoints
(bit-identically: a killed run loses at most the chunks since its last checkpoint, which are
redone); finished techniques are not redone. A non-finite training loss (or eval loss)
in any seed of a cell ends that cell with status ``"diverged at step N"``; the technique stops once
all its cells have diverged, and the other techniques run as usual.

Each batch is split over ``config.devices`` devices (:mod:`experiments.parallel`); the layout
used (device and process counts, BatchNorm mode) is recorded as ``summary["parallel"]``, the
malloc setting (:mod:`experiments.allocator`) as ``summary["allocator"]``, and whether normjax's
CPU kernels ran (:func:`normjax.native_status`) as ``summary["cpu_kernels"]``.  With
``bn_sync='local'`` the numbers depend on the device count, so ``devices=0`` is resolved to the
actual count in the config (``config.json``, checkpoint fingerprints) before anything runs.
Multi-process runs are set up from the environment (:func:`experiments.parallel.
initialize_distributed`) when :func:`run` starts.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

import normjax
from experiments.allocator import allocator_setting
from experiments.checkpoint import CheckpointStore, Progress, fingerprint
from experiments.data import Dataset, load_dataset
from experiments.errors import ConfigError
from experiments.hooks import Hook
from experiments.parallel import DataParallel, from_config, initialize_distributed
from experiments.program import Program, make_experiment
from experiments.progress_bar import ProgressBar
from experiments.report import write_outputs
from experiments.runs import Grid, make_grid
from experiments.tensorboard import TensorBoardLog
from experiments.typed_config import StudyConfig, typed_config
from experiments.validation import validate_config, validate_with_data
from experiments.workdir import WorkdirLock, resolve_workdir
from experiments.writer import MetricsLog, write_json

__all__ = ["Hook", "load_data", "run"]

log = logging.getLogger("experiments")


@dataclass
class _Session:
    """What the chunks of one invocation share."""

    config: StudyConfig
    ds: Dataset
    store: CheckpointStore
    metrics: MetricsLog
    tensorboard: TensorBoardLog
    parallel: DataParallel
    max_chunks: int | None = None
    hooks: Sequence[Hook] = ()
    progress_bar: bool | None = None
    chunks: int = 0
    progress: dict[str, Progress | None] = field(default_factory=dict)

    @property
    def out_of_chunks(self) -> bool:
        return self.max_chunks is not None and self.chunks >= self.max_chunks


class _ChunkCallback(Hook):
    """The hook of a deprecated ``on_chunk(technique, step)`` callback."""

    def __init__(self, fn: Callable[[str, int], None]) -> None:
        self.fn = fn

    def chunk(self, technique: str, step: int, state: Any) -> None:
        self.fn(technique, step)


def load_data(config: ml_collections.ConfigDict | StudyConfig) -> Dataset:
    """``load_dataset`` of ``config.dataset``, with loader errors as :class:`ConfigError`."""
    d = config.dataset
    try:
        return load_dataset(d.name, seed=d.seed, path=d.path or None,
                            validation_fraction=d.validation_fraction, **dict(d.options))
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise ConfigError(f"dataset ({d.name!r}): {e}") from e


def run(config: ml_collections.ConfigDict, workdir: str | Path, *,
        max_chunks: int | None = None, hooks: Sequence[Hook] = (),
        command: str | None = None, progress_bar: bool | None = None,
        on_chunk: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the study of ``config`` in ``workdir``; returns the summary.

    ``workdir`` may start with ``~``; an empty one, a file, or a workdir that another live run
    holds (:mod:`experiments.workdir`) is a :class:`ConfigError`.
    ``max_chunks`` stops after that many chunks in this call (the rest can be resumed);
    ``hooks`` see each technique's state in memory after init and after every chunk
    (:mod:`experiments.hooks`; one may raise to stop the run); ``command`` is shown in
    report.md; ``progress_bar`` draws a bar per technique (:mod:`experiments.progress_bar`;
    ``None``: when stderr is a terminal).  ``on_chunk(technique, step)`` is the deprecated
    form of a hook's ``chunk`` (it warns).
    """
    if on_chunk is not None:
        warnings.warn("run(on_chunk=f) is deprecated: pass hooks=[h] with an experiments.hooks."
                      "Hook whose chunk(technique, step, state) calls f", DeprecationWarning,
                      stacklevel=2)
        hooks = (*hooks, _ChunkCallback(on_chunk))
    labels = validate_config(config)
    config = typed_config(config)  # from here on a frozen, typed value
    if max_chunks is not None and max_chunks < 0:
        raise ConfigError(f"max_chunks must be >= 0, got {max_chunks!r}")
    workdir = resolve_workdir(workdir)
    initialize_distributed()
    ds = load_data(config)
    validate_with_data(config, tuple(ds.input_shape), len(ds.x_train), len(ds.x_test))
    config, parallel = _layout(config)
    with WorkdirLock(workdir, command):
        return _run_locked(config, labels, ds, parallel, workdir, max_chunks, tuple(hooks),
                           command, progress_bar)


def _run_locked(config: StudyConfig, labels: list[str], ds: Dataset,
                parallel: DataParallel, workdir: Path, max_chunks: int | None,
                hooks: tuple[Hook, ...], command: str | None,
                progress_bar: bool | None) -> dict[str, Any]:
    session = _Session(config, ds, CheckpointStore(workdir), MetricsLog(workdir / "metrics.jsonl"),
                       TensorBoardLog(workdir / "tensorboard"), parallel, max_chunks, hooks,
                       progress_bar)
    try:
        return _run_session(session, labels, workdir, command)
    finally:
        session.tensorboard.close()
        session.store.close()


def _run_session(session: _Session, labels: list[str], workdir: Path,
                 command: str | None) -> dict[str, Any]:
    config, parallel = session.config, session.parallel
    for label in config.techniques.keys():  # fingerprints are checked before any training
        session.progress[label] = session.store.load_progress(label, fingerprint(config, label))
    write_json(workdir / "config.json", config.to_dict())
    rows = [row for p in session.progress.values() if p for row in p.rows]
    session.metrics.rewrite(rows)
    session.tensorboard.rewrite(rows)
    for label in labels:
        if session.out_of_chunks:
            break
        session.progress[label] = _train_technique(session, label)
    return write_outputs(workdir, config, session.progress, command,
                         extra={"parallel": parallel.describe(),
                                "allocator": allocator_setting(),
                                "cpu_kernels": cpu_kernels_setting(parallel)})


def cpu_kernels_setting(parallel: DataParallel) -> str:
    """Whether the norms ran on normjax's CPU kernels, and why not where they did not."""
    backend = jax.default_backend()
    if backend != "cpu":
        return f"not used on {backend} (XLA path)"
    if parallel.num_devices > 1:
        return ("not used: XLA partitions the programs over the data mesh (the norms take "
                "their XLA formulation there by themselves)")
    return normjax.native_status()


def _layout(config: StudyConfig) -> tuple[StudyConfig, DataParallel]:
    """The device layout of ``config``.  With ``bn_sync='local'`` the results depend on the
    device count, so a copy of the config records the resolved count in ``devices``."""
    parallel = from_config(config)
    if config.bn_sync == "local" and config.devices != parallel.num_devices:
        config = config.replace(devices=parallel.num_devices)
    return config, parallel


def _train_technique(session: _Session, label: str) -> Progress:
    config, progress = session.config, session.progress[label]
    if progress is not None and progress.done:
        log.info("[%s] already done (%s); not redone", label, ", ".join(progress.cell_status))
        return progress
    grid = make_grid(config, label)
    parallel = session.parallel if session.parallel.num_devices > 1 else None
    start = progress.step if progress is not None else 0
    with ProgressBar(label, config.steps, start, enabled=session.progress_bar) as bar:
        return _train_program(session, label, Program(
            make_experiment(config, label, session.ds, parallel), session.ds, grid), bar)


def _train_program(session: _Session, label: str, program: Program,
                   bar: ProgressBar) -> Progress:
    config, progress, grid = session.config, session.progress[label], program.grid
    state = program.init()
    if progress is None:
        for hook in session.hooks:
            state = hook.init(label, state)
        progress = Progress(label, fingerprint(config, label), grid.labels,
                            ["running"] * len(grid.labels))
    else:
        state = program.place_state(session.store.load_state(label, state))
        log.info("[%s] resuming at step %d of %d", label, progress.step, config.steps)
    compiled, saved_at, unsaved = 0.0, time.monotonic(), False
    try:
        while not progress.done and not session.out_of_chunks:
            before, unsaved = progress.step, False  # the chunk takes (donates) the state
            state, rows = _chunk(session.config, program, progress, state)
            unsaved = True
            if rows:
                bar.chunk(progress.step - before, *_means(rows))
            progress.run_strategy = f"{program.strategy.name} ({program.strategy.reason})"
            progress.compile_s += program.compile_s - compiled
            compiled = program.compile_s
            if progress.done or time.monotonic() - saved_at >= config.checkpoint_every_s:
                session.store.save(progress, state)  # before the rows: they are in it
                saved_at, unsaved = time.monotonic(), False
            session.metrics.append(rows)
            session.tensorboard.append(rows)
            session.chunks += 1
            for hook in session.hooks:
                hook.chunk(label, progress.step, state)
    finally:  # stopped (max_chunks) or a hook raised: keep the chunks done
        if unsaved:
            session.store.save(progress, state)
    return progress


def _chunk(config: StudyConfig, program: Program, progress: Progress,
           state: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Train and evaluate one chunk; updates ``progress`` (rows, statuses, timings)."""
    grid, start = program.grid, progress.step
    n = min(config.log_every, config.steps - start)
    state, per_step, seconds = program.train(state, n)
    evals, eval_seconds = program.evaluate(state)
    progress.eval_s += eval_seconds
    progress.train_s += seconds
    progress.step = start + n
    _update_status(progress, grid, per_step["train/objective"], evals, start)
    rows = _rows(config, progress, grid, per_step, evals,
                 epoch=progress.step * config.batch_size / program.experiment.num_train,
                 steps_per_s=n / seconds)
    progress.rows.extend(rows)
    progress.done = progress.step >= config.steps or "running" not in progress.cell_status
    if progress.done:
        progress.cell_status = ["ok" if s == "running" else s for s in progress.cell_status]
    _log_chunk(progress, config.steps, rows, n / seconds)
    return state, rows


def _first_bad_step(objective: np.ndarray, evals: dict[str, np.ndarray],
                    start: int) -> np.ndarray:
    """Per run: the first step (1-based) with a non-finite loss, or -1 if none."""
    bad = ~np.isfinite(objective)
    first = np.where(bad.any(axis=1), start + 1 + bad.argmax(axis=1), -1)
    eval_bad = ~np.all(np.isfinite(np.stack(list(evals.values()))), axis=0)
    return np.where((first < 0) & eval_bad, start + objective.shape[1], first)


def _update_status(progress: Progress, grid: Grid, objective: np.ndarray,
                   evals: dict[str, np.ndarray], start: int) -> None:
    """Mark cells with a non-finite loss in any seed as diverged, and say so."""
    first = _first_bad_step(objective, evals, start)
    for c, label in enumerate(grid.labels):
        runs = np.flatnonzero((grid.cell == c) & (first >= 0))
        if progress.cell_status[c] != "running" or not len(runs):
            continue
        step = int(first[runs].min())
        progress.cell_status[c] = f"diverged at step {step}"
        seeds = sorted(int(grid.seeds[r]) for r in runs)
        log.warning("technique %r diverged at step %d: non-finite loss (seed%s %s); its results "
                    "so far are kept and the other techniques continue", label, step,
                    "s" if len(seeds) > 1 else "", ", ".join(map(str, seeds)))


def _rows(config: StudyConfig, progress: Progress, grid: Grid,
          per_step: dict[str, np.ndarray], evals: dict[str, np.ndarray], *, epoch: float,
          steps_per_s: float) -> list[dict[str, Any]]:
    """One row per run of every still-running cell: metrics averaged over the chunk's steps
    (``train/batch_*``, ``grad_norm/*``, ``act_*``) and evaluated at its end (the rest)."""
    means = {k: v.mean(axis=1) for k, v in per_step.items() if k != "train/objective"}
    rows = []
    for r in range(grid.num_runs):
        c = int(grid.cell[r])
        if progress.cell_status[c] != "running":
            continue
        row = {"technique": progress.technique, "cell": grid.labels[c],
               "seed": int(grid.seeds[r]), "step": progress.step, "epoch": epoch}
        row.update({f"hp/{k}": float(v[r]) for k, v in grid.hparams.items()})
        row.update({k: float(v[r]) for k, v in {**means, **evals}.items()})
        row.update({"time/elapsed_s": progress.train_s, "time/steps_per_s": steps_per_s})
        rows.append(row)
    return rows


def _means(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Mean train loss and test accuracy over the chunk's rows."""
    return (float(np.mean([row["train/loss"] for row in rows])),
            float(np.mean([row["test/accuracy"] for row in rows])))


def _log_chunk(progress: Progress, steps: int, rows: list[dict[str, Any]],
               steps_per_s: float) -> None:
    if not rows:
        return
    loss, acc = _means(rows)
    log.info("[%s] step %d/%d  train/loss %.4f  test/accuracy %.4f  (%d runs, %.0f steps/s)",
             progress.technique, progress.step, steps, loss, acc, len(rows), steps_per_s)
