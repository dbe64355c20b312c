"""Hooks: code that runs inside :func:`experiments.runner.run` with a technique's train state
in memory (a :class:`~experiments.train.TrainState` whose leading axis is the runs: seeds x
sweep points, in the order of :func:`experiments.runs.make_grid`).

* ``init(technique, state) -> state`` is called once per technique when the runner has
  initialized it (not when it resumes from a checkpoint); the state it returns is trained, so a
  hook can re-initialize parameters from data (:class:`experiments.data_init.DataInit`).
  It must be deterministic: a run that is killed before its first checkpoint calls it again.
* ``chunk(technique, step, state)`` is called after every chunk, once its metrics are logged;
  it may measure the state (:class:`experiments.probes.ProbeHook`) or raise to stop the run
  (the work done so far is checkpointed first).
"""

from __future__ import annotations

from experiments.train import TrainState

__all__ = ["Hook"]


class Hook:
    """A hook that does nothing; subclass it and override what you need."""

    def init(self, technique: str, state: TrainState) -> TrainState:
        """The state to train ``technique`` from, given its initial ``state``."""
        del technique
        return state

    def chunk(self, technique: str, step: int, state: TrainState) -> None:
        """Called with the state after step ``step`` of ``technique``."""
        del technique, step, state
