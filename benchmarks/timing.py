"""Timer utilities: interleaved repetitions and robust statistics.

Benchmarks here time jitted functions on a machine that may be shared with other processes.
Candidates are therefore timed *interleaved* (A, B, C, then C, A, B, ...) in a fresh random
order every round, so slow phases hit all of them alike and no candidate always runs right after
the same other one (with a rotated order it does, and a program timed right after itself, cache
and allocator warm, ran up to 1.4x faster than the same program timed after a different one).
Speed is reported as the median over rounds and comparisons as the median of per-round ratios
(both robust to the occasional slow outlier).

On an accelerator one call of a small normalization takes a few microseconds of device time,
less than dispatching it from Python; timing each call to completion would time the dispatch.
``inner > 1`` makes one sample ``inner`` calls issued back to back (asynchronous dispatch queues
them) and waited for once, divided by ``inner``: the steady-state time per call of a loop such as
a training loop. A candidate that is not a JAX computation (PyTorch on CUDA) is wrapped with
:func:`with_block` so that the wait is its own (``torch.cuda.synchronize``).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax

__all__ = ["Timing", "paired_ratio", "time_interleaved", "with_block"]


@dataclass
class Timing:
    """Wall-clock seconds of one candidate, one sample per round."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


class _Blocking:
    """A zero-argument callable with its own way to wait for its result."""

    def __init__(self, fn: Callable[[], Any], block: Callable[[Any], Any]) -> None:
        self.fn, self.block = fn, block

    def __call__(self) -> Any:
        return self.fn()


def with_block(fn: Callable[[], Any], block: Callable[[Any], Any]) -> Callable[[], Any]:
    """``fn`` timed with ``block(result)`` as its wait instead of ``jax.block_until_ready``."""
    return _Blocking(fn, block)


def _run_once(fn: Callable[[], Any], inner: int = 1) -> float:
    block = fn.block if isinstance(fn, _Blocking) else jax.block_until_ready
    start = time.perf_counter()
    for _ in range(inner - 1):
        fn()
    block(fn())
    return (time.perf_counter() - start) / inner


def time_interleaved(
    candidates: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 2,
    inner: int = 1,
) -> dict[str, Timing]:
    """Times each zero-argument callable ``repeats`` times, interleaved, after ``warmup`` calls.

    With ``inner=1`` each call is followed by ``jax.block_until_ready`` on its result, so a
    sample is the full latency of one call (dispatch + compute), never an overlapped
    asynchronous launch. With ``inner > 1`` a sample is ``inner`` calls issued back to back and
    waited for once, divided by ``inner`` (see the module notes). The order of the candidates
    is shuffled every round (a fixed seed: reruns take the same orders).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    if inner < 1:
        raise ValueError(f"inner must be >= 1, got {inner}.")
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            _run_once(candidates[name], inner)
    out = {name: Timing() for name in names}
    rng = random.Random(0)
    for _ in range(repeats):
        for name in rng.sample(names, len(names)):
            out[name].samples.append(_run_once(candidates[name], inner))
    return out


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of ``a_i / b_i`` (both timed in the same interleaved rounds)."""
    if len(a.samples) != len(b.samples):
        raise ValueError("paired_ratio needs timings from the same interleaved run.")
    return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))
