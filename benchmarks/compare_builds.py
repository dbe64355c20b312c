"""This build of normjax against a previous one, side by side in one process (and flax).

Run::

    git worktree add /tmp/normjax-prev <commit>
    python -m benchmarks.compare_builds --previous /tmp/normjax-prev [--quick] [--out DIR]

The previous checkout's ``normjax`` package is copied into a temporary folder as
``normjax_previous`` (every ``normjax`` name in its Python files renamed, so its CPU kernels
register under their own FFI target names) and imported next to this one. Every case of
:data:`benchmarks.candidates.CASES` is timed in four modes, all candidates interleaved in the
same rounds (:mod:`benchmarks.timing`): ``fwd``, ``fwd+bwd`` and ``value+grad`` as in
:mod:`benchmarks.norms`, and ``jvp`` (``jax.jvp`` of the norm in ``(x, scale, bias)``; the
previous build refuses forward mode with its defaults and is left out there). The table gives
each build's median time and the medians of the paired per-round ratios
(``time / previous``, ``time / flax``). Output: ``<out>/compare_builds.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import candidates as cands
from benchmarks.timing import paired_ratio, time_interleaved

MODES = ("fwd", "fwd+bwd", "value+grad", "jvp")
PREVIOUS = "normjax_previous"


def import_previous(checkout: Path) -> Any:
    """The ``normjax`` package of ``checkout``, imported as :data:`PREVIOUS`."""
    dest = Path(tempfile.mkdtemp(prefix="normjax-previous-")) / PREVIOUS
    shutil.copytree(checkout / "normjax", dest)
    for path in dest.rglob("*.py"):
        # every "normjax" name, FFI target names such as "normjax_moments" included (a target
        # registered twice under one name is refused, and that build would run without kernels)
        path.write_text(re.sub(r"\bnormjax", PREVIOUS, path.read_text()))
    sys.path.insert(0, str(dest.parent))
    return importlib.import_module(PREVIOUS)


@contextlib.contextmanager
def _module(module: Any) -> Iterator[None]:
    """:mod:`benchmarks.candidates` calling ``module`` for ``normjax`` meanwhile."""
    saved, cands.normjax = cands.normjax, module
    try:
        yield
    finally:
        cands.normjax = saved


def _candidate(module: Any, case: cands.Case) -> Callable[..., Any]:
    """:func:`benchmarks.candidates.normjax_candidate`'s function, from ``module`` (which it
    then also calls when traced)."""
    with _module(module):
        fn = cands.normjax_candidate(case)

    def traced(*args: Any) -> Any:
        with _module(module):
            return fn(*args)

    return traced


def _calls(case: cands.Case, mode: str, fns: dict[str, Callable[..., Any]], arrays: tuple
           ) -> dict[str, Callable[[], Any]]:
    x, ct, s, b = arrays
    primal = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    calls = {}
    for name, fn in fns.items():
        if mode == "fwd":
            f = jax.jit(fn)
            calls[name] = lambda f=f: f(x, s, b)
        elif mode == "jvp":
            f = jax.jit(lambda x, s, b, ct, fn=fn: jax.jvp(
                lambda *a: primal(fn(*a)), (x, s, b), (ct, s, b)))
            calls[name] = lambda f=f: f(x, s, b, ct)
        else:
            diff = jax.grad if mode == "fwd+bwd" else jax.value_and_grad
            f = jax.jit(diff(lambda x, s, b, ct, fn=fn: jnp.sum(primal(fn(x, s, b)) * ct),
                             argnums=(0, 1, 2)))
            calls[name] = lambda f=f: f(x, s, b, ct)
    return calls


def run(previous: Any, quick: bool, budget_s: float, modes: tuple[str, ...] = MODES,
        cases: str = "") -> list[dict[str, Any]]:
    import normjax

    rows = []
    for case in cands.CASES:
        if (quick and not case.quick) or cases not in case.name:
            continue
        shape = case.quick_shape if quick and case.quick_shape else case.shape
        rng = np.random.default_rng(0)
        dt = jnp.dtype(case.dtype)
        c = shape[case.channel_axis]
        arrays = (jnp.asarray(rng.standard_normal(shape) * 2 + 0.5, dt),
                  jnp.asarray(rng.standard_normal(shape), dt),
                  jnp.asarray(1 + 0.1 * rng.standard_normal(c), jnp.float32),
                  jnp.asarray(0.1 * rng.standard_normal(c), jnp.float32))
        fns = {"normjax": _candidate(normjax, case), "previous": _candidate(previous, case)}
        flax = cands.flax_candidate(case)
        if flax is not None:
            fns["flax"] = flax
        for mode in modes:
            use = {k: v for k, v in fns.items() if not (mode == "jvp" and k == "previous")}
            calls = _calls(case, mode, use, arrays)
            one = time_interleaved(calls, repeats=1, warmup=2)
            per_round = sum(t.min for t in one.values())
            repeats = int(min(200, max(10, budget_s / max(per_round, 1e-9))))
            t = time_interleaved(calls, repeats=repeats, warmup=1)
            row = {"case": case.name, "shape": list(shape), "dtype": case.dtype, "mode": mode,
                   "repeats": repeats}
            for name, timing in t.items():
                row[f"{name}_ms"] = timing.median * 1e3
            for ref in ("previous", "flax"):
                row[f"over_{ref}"] = paired_ratio(t["normjax"], t[ref]) if ref in t else None
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _fmt(v: Any, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def write(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare_builds.json").write_text(json.dumps(rows, indent=1))
    lines = ["| case | mode | normjax ms | previous ms | flax ms | / previous | / flax |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['mode']} | {_fmt(r['normjax_ms'], 3)} | "
                     f"{_fmt(r.get('previous_ms'), 3)} | {_fmt(r.get('flax_ms'), 3)} | "
                     f"{_fmt(r['over_previous'])} | {_fmt(r['over_flax'])} |")
    (out / "compare_builds.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--previous", type=Path, required=True,
                        help="a checkout of the build to compare with (its normjax/ folder)")
    parser.add_argument("--quick", action="store_true", help="the quick cases and shapes")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per case and mode")
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/compare (--quick: .../compare-quick)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--cases", default="", help="only cases whose name contains this")
    args = parser.parse_args(argv)
    out = args.out or Path("benchmarks/results/compare" + ("-quick" if args.quick else ""))
    previous = import_previous(args.previous)
    write(run(previous, args.quick, args.budget, tuple(args.modes), args.cases), out)


if __name__ == "__main__":
    main()
