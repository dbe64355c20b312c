"""Timer utilities: interleaved repetitions, robust statistics, allocator settings.

Benchmarks here time jitted functions on a machine that may be shared with other processes.
Candidates are therefore timed *interleaved* (A, B, C, A, B, C, ...) with the order rotated every
round, so slow phases hit all of them alike; speed is reported as the median over rounds and
comparisons as the median of per-round ratios (both robust to the occasional slow outlier).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax

__all__ = [
    "MALLOC_TUNING",
    "Timing",
    "allocator_setting",
    "paired_ratio",
    "reexec_with_malloc_tuning",
    "time_interleaved",
]

#: glibc settings that keep freed large buffers in the heap instead of unmapping them, so
#: a fresh output buffer does not page-fault on every call (mallopt(3): M_MMAP_MAX,
#: M_TRIM_THRESHOLD).
MALLOC_TUNING = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "17179869184"}
_REEXEC_MARK = "NORMJAX_BENCH_REEXEC"


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


def _run_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def time_interleaved(
    candidates: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 2
) -> dict[str, Timing]:
    """Times each zero-argument callable ``repeats`` times, interleaved, after ``warmup`` calls.

    Each call is followed by ``jax.block_until_ready`` on its result, so a sample is the full
    latency of one call (dispatch + compute), never an overlapped asynchronous launch. The
    order of the candidates rotates by one every round.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            _run_once(candidates[name])
    out = {name: Timing() for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].samples.append(_run_once(candidates[name]))
    return out


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of ``a_i / b_i`` (both timed in the same interleaved rounds)."""
    if len(a.samples) != len(b.samples):
        raise ValueError("paired_ratio needs timings from the same interleaved run.")
    return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))


def allocator_setting() -> str:
    """A one-line description of the glibc malloc tuning this process runs under."""
    values = {k: os.environ.get(k) for k in MALLOC_TUNING}
    if all(v is None for v in values.values()):
        return "glibc default (large buffers returned to the kernel: fresh outputs page-fault)"
    return "tuned: " + " ".join(f"{k}={v}" for k, v in values.items() if v is not None)


def reexec_with_malloc_tuning(module: str, argv: Sequence[str]) -> None:
    """Re-executes ``python -m module argv`` with :data:`MALLOC_TUNING` set (does not return).

    glibc reads these variables only at start-up, hence the re-exec. Does nothing when they
    are already set or when this process is itself the re-executed one.
    """
    if os.environ.get(_REEXEC_MARK) or all(k in os.environ for k in MALLOC_TUNING):
        return
    env = {**os.environ, **MALLOC_TUNING, _REEXEC_MARK: "1"}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)
