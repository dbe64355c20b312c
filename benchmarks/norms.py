"""Normalization speed: normjax next to flax.linen (and equinox, haiku, PyTorch when installed).

Run::

    python -m benchmarks.norms            # full suite, a few minutes
    python -m benchmarks.norms --quick    # smaller shapes, fewer cases, under a minute

Each case is timed in three modes: forward (``fwd``: ``y``), forward+backward (``fwd+bwd``:
``jax.grad`` of ``sum(y * ct)`` with respect to ``(x, scale, bias)``; ``y`` itself is not needed
there, and XLA drops what only computes it) and ``value+grad`` (``jax.value_and_grad`` of the
same: ``y`` is needed, as in a training step, so the forward pass runs too). Every call is
jitted, warmed up, followed by ``block_until_ready``, and all candidates are interleaved (see
:mod:`benchmarks.timing`; equinox and haiku, :mod:`benchmarks.peer_candidates`, in the same
rounds; PyTorch in rounds of its own, see :func:`_torch_rows`). Next to them runs one
elementwise XLA pass over the same bytes (forward: ``x * 2 + 1``, reading ``x`` and writing one
array; the gradient modes: ``x * 2 + ct * 3``, reading two arrays and writing one), the speed
limit of a memory-bound kernel on this machine. GB/s counts those minimal bytes
(2 or 3 arrays of the input's size). Results go to ``<out>/norms.md`` and ``<out>/norms.json``.

On an accelerator (JAX's default backend not the CPU) the shapes above take a 16x larger batch
(``--batch-scale``) and a sample is ``--inner`` calls issued back to back and waited for once
(default 20; see :mod:`benchmarks.timing`): at the CPU shapes one call's device time on a GPU is
a few microseconds, shorter than dispatching it, and every candidate would time the dispatch.
The *XLA path* candidate is left out there (the CPU kernels never run off the CPU, so it is the
``normjax`` candidate again) and PyTorch runs on CUDA.

The process re-executes itself once with glibc's malloc tuned to keep freed buffers
(:data:`experiments.allocator.MALLOC_TUNING`) unless ``--no-malloc-tuning`` is given; the setting
in force is recorded in the results.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import candidates as cands
from benchmarks.peer_candidates import PEERS, peer_available, peer_candidate
from benchmarks.report import environment, results_dir, write_results
from benchmarks.timing import Timing, paired_ratio, time_interleaved
from benchmarks.torch_candidates import torch_available, torch_timers
from experiments.allocator import reexec_with_malloc_tuning

__all__ = ["default_batch_scale", "default_inner", "gradient_errors", "main", "run_case"]

MODES = ("fwd", "fwd+bwd", "value+grad")
ELEMENTWISE = "elementwise"


def _primal(out: Any) -> jax.Array:
    return out[0] if isinstance(out, tuple) else out


def _inputs(case: cands.Case, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, np.float32) * 2 + 0.5
    ct = rng.standard_normal(shape, np.float32)
    c = shape[case.channel_axis]
    scale = 1 + 0.1 * rng.standard_normal(c, np.float32)
    bias = 0.1 * rng.standard_normal(c, np.float32)
    return x, ct, scale, bias


def _jax_calls(case: cands.Case, mode: str, arrays: tuple[np.ndarray, ...]) -> dict:
    x, ct, scale, bias = arrays
    dt = jnp.dtype(case.dtype)
    xj, ctj = jnp.asarray(x, dt), jnp.asarray(ct, dt)
    sj, bj = jnp.asarray(scale), jnp.asarray(bias)
    builders = {"normjax": cands.normjax_candidate,
                "normjax-xla": partial(cands.normjax_candidate, native=False),
                "normjax-autodiff": partial(cands.normjax_candidate, fused=False),
                "flax": cands.flax_candidate}
    if _on_accelerator():
        del builders["normjax-xla"]  # the CPU kernels only run on the CPU
    builders.update({name: partial(peer_candidate, name) for name in PEERS
                     if peer_available(name)})
    calls: dict[str, Callable[[], Any]] = {}
    for name, build in builders.items():
        fn = build(case)
        if fn is None:
            continue
        if mode == "fwd":
            f = jax.jit(fn)
            calls[name] = lambda f=f: f(xj, sj, bj)
        else:
            diff = jax.grad if mode == "fwd+bwd" else jax.value_and_grad
            g = jax.jit(diff(lambda x, s, b, ct, fn=fn: jnp.sum(_primal(fn(x, s, b)) * ct),
                             argnums=(0, 1, 2)))
            calls[name] = lambda g=g: g(xj, sj, bj, ctj)
    if mode == "fwd":
        e = jax.jit(lambda x: x * 2 + 1)
        calls[ELEMENTWISE] = lambda: e(xj)
    else:
        e2 = jax.jit(lambda x, ct: x * 2 + ct * 3)
        calls[ELEMENTWISE] = lambda: e2(xj, ctj)
    return calls


def _on_accelerator() -> bool:
    return jax.default_backend() != "cpu"


def default_inner() -> int:
    """Calls per timing sample: 1 on the CPU, 20 on an accelerator (see the module notes)."""
    return 20 if _on_accelerator() else 1


def default_batch_scale() -> int:
    """Factor on the cases' batch size: 1 on the CPU, 16 on an accelerator."""
    return 16 if _on_accelerator() else 1


def _choose_repeats(calls: dict, budget_s: float, lo: int, hi: int, inner: int) -> int:
    t = time_interleaved(calls, repeats=1, warmup=2, inner=inner)
    one_round = sum(t[n].min for n in calls) * inner
    return int(min(hi, max(lo, budget_s / max(one_round, 1e-9))))


def _rows(case: cands.Case, shape: tuple[int, ...], mode: str, t: dict[str, Timing]) -> list:
    nbytes = int(np.prod(shape)) * jnp.dtype(case.dtype).itemsize * (2 if mode == "fwd" else 3)
    rows = []
    for name, timing in t.items():
        row = {"case": case.name, "kind": case.kind, "shape": list(shape), "dtype": case.dtype,
               "mode": mode, "candidate": name, "median_ms": timing.median * 1e3,
               "min_ms": timing.min * 1e3, "max_ms": timing.max * 1e3,
               "repeats": len(timing.samples), "gb_per_s": nbytes / timing.median / 1e9,
               "elementwise_fraction": paired_ratio(t[ELEMENTWISE], timing)}
        for ref in ("flax", "normjax"):
            row[f"time_over_{ref}"] = paired_ratio(timing, t[ref]) if ref in t else None
        rows.append(row)
    return rows


def _torch_rows(case: cands.Case, shape: tuple[int, ...], mode: str, calls: dict,
                arrays: tuple, budget_s: float, bounds: tuple[int, int], inner: int
                ) -> list[dict]:
    """The torch row, from its own interleaved rounds with normjax, flax and the elementwise
    pass: interleaved with the others, torch's OpenMP runtime and memory traffic slowed the
    JAX calls that ran after it (measured 1.5-2x), so it does not share their rounds."""
    block = {n: calls[n] for n in ("normjax", "flax", ELEMENTWISE) if n in calls}
    block["torch"] = torch_timers(case, arrays[0], arrays[1])[mode]
    repeats = _choose_repeats(block, budget_s / 2, *bounds, inner)
    timings = time_interleaved(block, repeats=repeats, warmup=1, inner=inner)
    rows = _rows(case, shape, mode, timings)
    return [r for r in rows if r["candidate"] == "torch"]


def run_case(case: cands.Case, *, quick: bool, budget_s: float, inner: int = 1,
             batch_scale: int = 1) -> list[dict]:
    """Times every candidate of ``case`` in every mode (:data:`MODES`); one row per candidate
    and mode; ``inner`` calls per sample, the batch (first) axis ``batch_scale`` times the
    case's."""
    shape = case.quick_shape if quick and case.quick_shape else case.shape
    shape = (shape[0] * batch_scale, *shape[1:])
    arrays = _inputs(case, shape)
    rows = []
    lo, hi = (5, 30) if quick else (15, 300)
    for mode in MODES:
        calls = _jax_calls(case, mode, arrays)
        repeats = _choose_repeats(calls, budget_s, lo, hi, inner)
        timings = time_interleaved(calls, repeats=repeats, warmup=1, inner=inner)
        new = _rows(case, shape, mode, timings)
        if torch_available():
            new += _torch_rows(case, shape, mode, calls, arrays, budget_s, (lo, hi), inner)
        if mode == "fwd+bwd":
            errors = gradient_errors(calls)
            for row in new:
                row["grad_error_vs_autodiff"] = errors.get(row["candidate"])
        rows += new
    return rows


def gradient_errors(calls: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """``max |g - g_autodiff| / max |g_autodiff|`` over the (x, scale, bias) gradients of the
    normjax candidates, against ``normjax-autodiff`` (the same function under plain autodiff)."""
    ref = [np.asarray(a, np.float64) for a in calls["normjax-autodiff"]()]
    out = {}
    for name in ("normjax", "normjax-xla"):
        if name not in calls:
            continue
        got = [np.asarray(a, np.float64) for a in calls[name]()]
        out[name] = max(float(np.max(np.abs(g - r)) / max(np.max(np.abs(r)), 1e-30))
                        for g, r in zip(got, ref, strict=True))
    return out


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.norms", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller shapes, fewer cases (<1 min)")
    p.add_argument("--out", type=Path, default=None,
                   help="directory for norms.md and norms.json (default: benchmarks/results; "
                        "with --quick benchmarks/results/quick, never over the full run's)")
    p.add_argument("--cases", default="", help="only cases whose name contains this text")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per case and mode (default: 0.6 quick, 4 full)")
    p.add_argument("--inner", type=int, default=None,
                   help="calls per timing sample (default: 1 on the CPU, 20 on an accelerator)")
    p.add_argument("--batch-scale", type=int, default=None,
                   help="factor on every case's batch size (default: 1 on the CPU, 16 on an "
                        "accelerator)")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="run under the allocator settings of the calling environment")
    p.add_argument("--no-torch", action="store_true",
                   help="skip the PyTorch candidates even when torch is installed")
    p.add_argument("--no-peers", action="store_true",
                   help="skip the equinox and haiku candidates even when installed")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    if args.out is None:
        args.out = results_dir(args.quick)
    if args.no_torch:
        os.environ["NORMJAX_BENCH_TORCH"] = "0"
    if args.no_peers:
        os.environ["NORMJAX_BENCH_PEERS"] = "0"
    if not args.no_malloc_tuning:
        reexec_with_malloc_tuning("benchmarks.norms", argv)
    selected = [c for c in cands.CASES
                if (c.quick or not args.quick) and args.cases.lower() in c.name.lower()]
    if not selected:
        names = ", ".join(c.name for c in cands.CASES)
        raise SystemExit(f"--cases {args.cases!r} matches no case; known cases: {names}.")
    budget = args.budget if args.budget is not None else (0.6 if args.quick else 4.0)
    inner = args.inner if args.inner is not None else default_inner()
    scale = args.batch_scale if args.batch_scale is not None else default_batch_scale()
    if inner < 1 or scale < 1:
        raise SystemExit(f"--inner and --batch-scale must be >= 1, got {inner} and {scale}.")
    rows: list[dict] = []
    for case in selected:
        print(f"timing {case.name} ...", flush=True)
        rows += run_case(case, quick=args.quick, budget_s=budget, inner=inner,
                         batch_scale=scale)
    env = environment(quick=args.quick, torch=torch_available())
    env.update(calls_per_sample=inner, batch_scale=scale)
    md, js = write_results(rows, env, args.out)
    print(md.read_text())
    print(f"wrote {md} and {js} (pid {os.getpid()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
