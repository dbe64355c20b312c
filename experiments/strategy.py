"""How the runs of one technique (seeds x sweep points) share one compiled program.

Every run is the same single-run computation (:class:`experiments.train.Experiment`) on
different data in its state (seed, hyperparameters).  There are three ways to put R runs into
one jitted program, and which is fastest depends on the backend and the model:

``vmap``
    ``jax.vmap`` over the runs: one batched computation.  Dense layers become batched matrix
    products, which is what accelerators (and CPUs, for MLPs) do best.
``sequential``
    ``lax.map`` over the runs: each run's whole chunk of steps, one run after the other, inside
    one program.  Nothing is batched, so every operation keeps its single-run form (on CPU a
    vmapped convolution becomes a grouped convolution or a larger im2col product, which can be
    slower than R separate ones).
``interleaved``
    one ``lax.scan`` over steps whose body takes one step of every run in turn (unrolled over
    the runs): the runs advance together, as with ``vmap``, but each keeps its single-run
    operations and XLA may overlap independent runs.  Compile time grows with R.
``stepwise``
    no loop inside the program: one jitted step of one run, called from Python for every step
    of every run (the hand-written training loop).  XLA:CPU runs ``lax.conv`` inside a
    ``lax.scan`` or ``lax.map`` many times slower than at the top level of a program (a
    ResNet of ``flax.linen.Conv`` layers: 5-7 steps/s in a scan against 155-169 in a loop of
    jitted steps), so this is the CPU's choice for models with XLA convolutions.

``run_strategy='auto'`` (the default) picks by backend and model, following the measurements of
``python -m benchmarks.train_step`` (see ``docs/performance.md``): ``vmap`` on GPU/TPU and for
MLPs, ``stepwise`` on CPU for any model whose step contains an XLA convolution (a
``model.factory`` model's traced step is searched before anything is compiled; the shipped CNNs
have them only with ``conv_impl='xla'``), and ``sequential`` for the shipped im2col CNNs on
CPU.  ``run_strategy='measure'`` compiles a
short chunk (:data:`MEASURE_STEPS` steps) under each strategy, times it twice on copies of the
initial state and keeps the fastest (worth it for long runs; it costs extra compilations).
The strategy used, and why, is recorded in ``summary.json`` (``run_strategy``) and in
``report.md``.  All strategies compute the same numbers up to floating-point reassociation, so
a run may be resumed under another strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from experiments.typed_config import StudyConfig

__all__ = ["RUN_STRATEGIES", "Strategy", "has_convolutions", "map_runs", "measured_strategies",
           "resolve_strategy", "scan_interleaved", "stack_trees", "take_run"]

RUN_STRATEGIES = ("auto", "vmap", "sequential", "interleaved", "stepwise", "measure")
#: The strategies ``'measure'`` times, and the steps of its timed chunk.
MEASURED = ("vmap", "sequential", "interleaved", "stepwise")
MEASURE_STEPS = 5
#: Runs above which ``'measure'`` does not try 'interleaved' (its program grows with R).
MAX_MEASURED_INTERLEAVED = 16


def measured_strategies(num_runs: int) -> tuple[str, ...]:
    """The strategies ``'measure'`` times for ``num_runs`` runs."""
    if num_runs > MAX_MEASURED_INTERLEAVED:
        return tuple(s for s in MEASURED if s != "interleaved")
    return MEASURED


class Strategy(NamedTuple):
    """The strategy a technique runs under and the reason it was chosen."""

    name: str
    reason: str


def resolve_strategy(config: StudyConfig, num_runs: int,
                     backend: str | None = None, *, convolutions: bool = False) -> Strategy:
    """The strategy for ``num_runs`` runs of ``config`` on ``backend`` (default: JAX's).

    An explicit ``config.run_strategy`` is used as given; ``'auto'`` picks ``vmap`` on
    accelerators, ``stepwise`` on CPU when the step has XLA convolutions (``convolutions``),
    else ``vmap`` for a single run and for MLPs and ``sequential`` for CNNs. ``'measure'`` (with
    more than one run) is returned as is: :class:`experiments.program.Program` then times a
    short chunk of each of :func:`measured_strategies` and keeps the fastest.
    """
    name = config.run_strategy
    if name not in RUN_STRATEGIES:
        raise ValueError(f"run_strategy must be one of {list(RUN_STRATEGIES)}, got {name!r}.")
    if name not in ("auto", "measure"):
        return Strategy(name, "set in the config")
    if name == "measure" and num_runs > 1:
        return Strategy("measure", "chosen on the first chunk")
    backend = backend or jax.default_backend()
    if backend == "cpu" and convolutions:
        return Strategy("stepwise", f"{name}: XLA convolutions on cpu (slow inside a scan; one "
                                    "jitted step per call)")
    if num_runs == 1:
        return Strategy("vmap", f"{name}: a single run")
    if backend != "cpu":
        return Strategy("vmap", f"auto: batched runs on {backend}")
    if config.model.kind == "mlp":
        return Strategy("vmap", "auto: MLP on cpu (batched matrix products win)")
    return Strategy("sequential", "auto: CNN on cpu (batched convolutions lose to "
                                  "one run at a time)")


def map_runs(fn: Callable[..., Any], strategy: str, num_shared: int) -> Callable[..., Any]:
    """``fn(run_state, *shared)`` applied to every run of a stacked state (leading axis = runs).

    ``vmap`` batches the runs; ``sequential`` and ``interleaved`` loop over them with
    ``lax.map`` (whole-call granularity; see :func:`scan_interleaved` for step granularity).
    """
    if strategy == "vmap":
        return jax.vmap(fn, in_axes=(0, *([None] * num_shared)))

    def mapped(state: Any, *shared: Any) -> Any:
        return lax.map(lambda s: fn(s, *shared), state)

    return mapped


def take_run(tree: Any, r: int) -> Any:
    return jax.tree.map(lambda a: a[r], tree)


def stack_trees(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def scan_interleaved(step: Callable[..., tuple[Any, Any]], num_runs: int
                     ) -> Callable[..., tuple[Any, Any]]:
    """A chunk of ``num_steps`` steps of all runs, one step of every run per scan iteration.

    ``step(run_state, x, y) -> (run_state, metrics)``; the returned function takes the stacked
    state, ``x``, ``y`` and a static ``num_steps`` and returns the stacked state and metrics of
    shape ``(runs, num_steps, ...)``, as the ``vmap`` of a single-run chunk would.
    """
    def chunk(state: Any, x: jax.Array, y: jax.Array, num_steps: int) -> tuple[Any, Any]:
        def body(states: Any, _: None) -> tuple[Any, Any]:
            outs = [step(take_run(states, r), x, y) for r in range(num_runs)]
            return stack_trees([o[0] for o in outs]), stack_trees([o[1] for o in outs])

        state, metrics = lax.scan(body, state, None, length=num_steps)
        return state, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), metrics)

    return chunk


def has_convolutions(fn: Callable[..., Any], *args: Any) -> bool:
    """Whether ``fn(*args)`` (traced, not compiled; ``args`` may be shape structs) contains an
    XLA convolution (``lax.conv_general_dilated``, as in ``flax.linen.Conv``)."""
    return "conv_general_dilated" in str(jax.make_jaxpr(fn)(*args))
