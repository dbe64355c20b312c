"""Compiled programs of one technique over all its runs: init, train chunk, evaluate.

:class:`Program` wraps the pure single-run methods of :class:`experiments.train.Experiment` in
``jax.jit`` over the runs (state axis 0 = runs; data shared), batched or looped as the run
strategy says (:mod:`experiments.strategy`; init is always vmapped), and compiles them ahead of time
(``lower(...).compile()``) so that compile time is measured apart from training time.  The
train chunk donates the incoming state.  Compiled chunks are cached by length (the last chunk
may be shorter than ``log_every``).  With ``experiment.parallel`` the state and the training set
are replicated over the devices of the data mesh, the eval batches are split over them, and the
programs are compiled for that layout (see :mod:`experiments.parallel`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.data import Dataset
from experiments.parallel import DataParallel
from experiments.runs import Grid, structure_flags
from experiments.strategy import (
    MEASURE_STEPS,
    Strategy,
    has_convolutions,
    map_runs,
    measured_strategies,
    resolve_strategy,
    scan_interleaved,
    stack_trees,
    take_run,
)
from experiments.train import EvalSet, Experiment, TrainState, build_model
from experiments.typed_config import StudyConfig

__all__ = ["Program", "make_eval_set", "make_experiment"]



def _run_once_options() -> dict[str, Any] | None:
    """Init runs once: on CPU, spend less time optimizing it (compiles about 2x faster)."""
    if jax.default_backend() != "cpu":
        return None
    return {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def make_experiment(config: StudyConfig, label: str, ds: Dataset,
                    parallel: DataParallel | None = None) -> Experiment:
    """The :class:`Experiment` of technique ``label`` on dataset ``ds`` (on ``parallel``'s
    devices; ``None``: one device): its pure single-run ``init``, ``train_chunk``, ``data_step``
    and ``evaluate``."""
    tech = config.techniques[label]
    flags = structure_flags(config, tech)
    model = build_model(config, tech, num_classes=ds.num_classes,
                        use_dropout=flags["use_dropout"], input_shape=tuple(ds.input_shape))
    return Experiment(config, model, tuple(ds.input_shape), len(ds.x_train),
                      use_l1=flags["use_l1"], use_l2=flags["use_l2"], parallel=parallel)


def make_eval_set(x: np.ndarray, y: np.ndarray, batch_size: int, *,
                  drop_remainder: bool = False) -> EvalSet:
    """Cut ``(x, y)`` into batches of ``min(batch_size, len(x))``.

    Without ``drop_remainder`` the last batch is zero-padded and the padding gets weight 0.
    """
    b = min(batch_size, len(x))
    n = (len(x) // b) * b if drop_remainder else len(x)
    num = -(-n // b)
    pad = num * b - n
    xs = np.concatenate([x[:n], np.zeros((pad, *x.shape[1:]), x.dtype)])
    ys = np.concatenate([y[:n], np.zeros(pad, y.dtype)])
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return EvalSet(jnp.asarray(xs.reshape(num, b, *x.shape[1:])),
                   jnp.asarray(ys.reshape(num, b)), jnp.asarray(weight.reshape(num, b)))


def _eval_sets(config: StudyConfig, ds: Dataset,
               batch_stats: bool, bn_groups: int = 1) -> dict[str, EvalSet]:
    k = config.eval_train_examples or len(ds.x_train)
    sets = {"train": make_eval_set(ds.x_train[:k], ds.y_train[:k], config.eval_batch_size),
            "test": make_eval_set(ds.x_test, ds.y_test, config.eval_batch_size)}
    if ds.x_val is not None:  # dataset.validation_fraction > 0
        sets["val"] = make_eval_set(ds.x_val, ds.y_val, config.eval_batch_size)
    if batch_stats:  # BatchNorm with the statistics of test batches normalized as in training
        size = config.batch_size // bn_groups  # per device with bn_sync='local'
        sets["test_batch_stats"] = make_eval_set(ds.x_test, ds.y_test, size,
                                                 drop_remainder=True)
    return sets


def _replicated_outputs(parallel: DataParallel | None) -> dict[str, Any]:
    """``jax.jit`` options: every output (state, metrics) replicated over the data mesh."""
    return {} if parallel is None else {"out_shardings": parallel.replicated}


class Program:
    """The compiled programs of one :class:`Experiment`, vmapped over the runs of a grid."""

    def __init__(self, experiment: Experiment, ds: Dataset, grid: Grid) -> None:
        self.experiment = experiment
        self.grid = grid
        self.compile_s = 0.0
        par, out = experiment.parallel, _replicated_outputs(experiment.parallel)
        self._x, self._y = self.place_state((ds.x_train, ds.y_train))
        self._init = jax.jit(self._traced(jax.vmap(experiment.init)), **out)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32
            shapes = jax.eval_shape(self._init, *self._grid_args())
            convolutions = self._convolutions(shapes)
        self._compiled: dict[Any, Callable[..., Any]] = {}
        self.strategy = resolve_strategy(experiment.config, grid.num_runs,
                                         convolutions=convolutions)
        if self.strategy.name == "measure":  # chosen now, before any program is used
            config = experiment.config
            self.strategy = self._measured(self.init(), min(config.log_every, config.steps))
        self._chunk, self._eval = self._programs(self.strategy.name)
        self.has_batch_stats = bool(jax.tree_util.tree_leaves(shapes.batch_stats))
        sets = _eval_sets(experiment.config, ds, self.has_batch_stats,
                          par.groups if par is not None else 1)
        self._sets = sets if par is None else par.place_batches(sets)

    def _convolutions(self, shapes: TrainState) -> bool:
        """Whether the step has XLA convolutions: known for the shipped models (``conv_impl``),
        found in the traced step of a ``model.factory`` model (only where ``auto`` asks)."""
        config = self.experiment.config
        if not config.model.factory:
            return config.model.kind == "cnn" and config.model.conv_impl == "xla"
        if config.run_strategy not in ("auto", "measure") or jax.default_backend() != "cpu":
            return False
        one_run = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), shapes)
        return has_convolutions(self.experiment.data_step, one_run, self._x, self._y)

    def _programs(self, name: str) -> tuple[Any, Any]:
        """The jitted train chunk and evaluation of every run under strategy ``name``."""
        exp, out = self.experiment, _replicated_outputs(self.experiment.parallel)
        if name == "stepwise":  # one step of one run; Program.train loops over both
            return (jax.jit(self._traced(exp.data_step), donate_argnums=0, **out),
                    jax.jit(self._traced(exp.evaluate), **out))
        chunk = (scan_interleaved(exp.data_step, self.grid.num_runs)
                 if name == "interleaved" else map_runs(exp.train_chunk, name, 3))
        return (jax.jit(self._traced(chunk), static_argnums=3, donate_argnums=0, **out),
                jax.jit(self._traced(map_runs(exp.evaluate, name, 1)), **out))

    def _traced(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        par = self.experiment.parallel
        return fn if par is None else par.traced(fn)

    def _measured(self, state: TrainState, num_steps: int) -> Strategy:
        """Times a short chunk of every strategy on copies of ``state``: the fastest."""
        steps = min(num_steps, MEASURE_STEPS)
        per_step = {}
        for name in measured_strategies(self.grid.num_runs):
            chunk, _ = self._programs(name)
            times = []
            run = self._chunk_runner(("probe", name), chunk, state, steps)
            for _ in range(2):
                copy = jax.tree.map(jnp.copy, state)
                start = time.perf_counter()
                jax.block_until_ready(run(copy))
                times.append(time.perf_counter() - start)
            per_step[name] = min(times) / steps
        best = min(per_step, key=per_step.__getitem__)
        timings = ", ".join(f"{k} {v * 1e3:.3g}" for k, v in per_step.items())
        return Strategy(best, f"measured: ms per step of all runs: {timings}")

    def place_state(self, tree: Any) -> Any:
        """Host values (e.g. a restored checkpoint) as device arrays in the programs' layout:
        replicated over the data mesh, or on the default device without one."""
        if self.experiment.parallel is None:
            return jax.tree.map(jnp.asarray, tree)
        return self.experiment.parallel.place(tree)

    def _grid_args(self) -> tuple[jax.Array, dict[str, jax.Array]]:
        hp = {k: np.asarray(v, np.float32) for k, v in self.grid.hparams.items()}
        return self.place_state((np.asarray(self.grid.seeds), hp))

    def _compile(self, key: Any, fn: Any, *args: Any,
                 options: dict[str, Any] | None = None) -> Callable[..., Any]:
        if key not in self._compiled:
            start = time.perf_counter()
            with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32
                self._compiled[key] = fn.lower(*args).compile(compiler_options=options)
            self.compile_s += time.perf_counter() - start
        return self._compiled[key]

    def init(self) -> TrainState:
        """The initial state of every run (leading axis = runs)."""
        args = self._grid_args()
        return self._compile("init", self._init, *args, options=_run_once_options())(*args)

    def train(self, state: TrainState, num_steps: int
              ) -> tuple[TrainState, dict[str, np.ndarray], float]:
        """``num_steps`` steps of every run: new state, per-step metrics (R, num_steps), seconds.

        ``state`` is donated: do not use it afterwards.
        """
        run = self._chunk_runner(("train", self.strategy.name), self._chunk, state, num_steps)
        start = time.perf_counter()
        state, metrics = run(state)
        metrics = jax.device_get(metrics)
        return state, metrics, time.perf_counter() - start

    def _chunk_runner(self, key: tuple[str, str], chunk: Any, state: TrainState,
                      num_steps: int) -> Callable[[TrainState], tuple[TrainState, Any]]:
        """``state -> (state, metrics)`` for ``num_steps`` steps of every run with ``chunk`` (a
        program of ``_programs``, compiled here): called once, or (``stepwise``) once per step
        of each run, as a hand-written training loop would."""
        if key[1] != "stepwise":
            fn = self._compile((*key, num_steps), chunk, state, self._x, self._y, num_steps)
            return lambda s: fn(s, self._x, self._y)
        step = self._compile(key, chunk, take_run(state, 0), self._x, self._y)

        def run(state: TrainState) -> tuple[TrainState, Any]:
            runs, per_run = [take_run(state, r) for r in range(self.grid.num_runs)], []
            for r in range(len(runs)):
                metrics = []
                for _ in range(num_steps):
                    runs[r], m = step(runs[r], self._x, self._y)
                    metrics.append(m)
                per_run.append(stack_trees(metrics))
            return stack_trees(runs), stack_trees(per_run)

        return run

    def evaluate(self, state: TrainState) -> tuple[dict[str, np.ndarray], float]:
        """Eval metrics of every run (arrays of shape (R,)) and seconds (without compiling)."""
        if self.strategy.name == "stepwise":
            runs = [take_run(state, r) for r in range(self.grid.num_runs)]
            fn = self._compile(("eval", "stepwise"), self._eval, runs[0], self._sets)
            start = time.perf_counter()
            metrics = jax.device_get(stack_trees([fn(run, self._sets) for run in runs]))
            return metrics, time.perf_counter() - start
        fn = self._compile(("eval", self.strategy.name), self._eval, state, self._sets)
        start = time.perf_counter()
        metrics = jax.device_get(fn(state, self._sets))
        return metrics, time.perf_counter() - start
