"""Writes benchmark rows as a Markdown report and a JSON file."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import flax
import jax
import jaxlib

import normjax
from benchmarks.peer_candidates import PEERS, peer_versions
from benchmarks.torch_candidates import torch_version
from experiments.allocator import allocator_setting

__all__ = ["environment", "markdown", "results_dir", "write_results"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(*, quick: bool, torch: bool) -> dict[str, Any]:
    """Versions, machine and settings the numbers were measured under."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
        "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "allocator": allocator_setting(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_at_end": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "torch": torch_version() if torch else "not installed (skipped)", **peer_versions(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "cpu_kernels": normjax.native_status(),
    }


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _others(get: Any) -> str:
    """The other libraries' times over normjax's (``equinox 1.8 · torch 2.1``), or ``-``."""
    cells = [f"{name} {r['time_over_normjax']:.2f}" for name in (*PEERS, "torch")
             if (r := get(name)) is not None and r["time_over_normjax"] is not None]
    return " · ".join(cells) or "-"


def _summary(rows: list[dict]) -> list[str]:
    by = {(r["case"], r["mode"], r["candidate"]): r for r in rows}
    keys = list(dict.fromkeys((r["case"], r["mode"]) for r in rows))
    out = ["| case | mode | flax ms | normjax ms | elementwise ms | normjax ÷ flax "
           "| XLA path ÷ flax | autodiff ÷ normjax | normjax % elem. rate | flax % elem. rate "
           "| grad. error vs autodiff | others ÷ normjax |", "|---" * 12 + "|"]
    for case, mode in keys:
        get = lambda name, case=case, mode=mode: by.get((case, mode, name))  # noqa: E731
        nj, fl, el = get("normjax"), get("flax"), get("elementwise")
        one, auto = get("normjax-xla"), get("normjax-autodiff")
        ms = [_fmt(r and r["median_ms"], ".3f") for r in (fl, nj, el)]
        ratios = [_fmt(nj["time_over_flax"], ".2f"),
                  _fmt(one and one["time_over_flax"], ".2f"),
                  _fmt(auto and auto["time_over_normjax"], ".2f"),
                  _fmt(100 * nj["elementwise_fraction"], ".0f"),
                  _fmt(fl and 100 * fl["elementwise_fraction"], ".0f"),
                  _fmt(nj.get("grad_error_vs_autodiff"), ".1e"),
                  _others(get)]
        out.append(f"| {case} | {mode} | " + " | ".join(ms + ratios) + " |")
    return out


def _detail(rows: list[dict]) -> list[str]:
    out = ["| case | shape | dtype | mode | candidate | median ms | min ms | max ms | reps | GB/s "
           "| % elem. rate | ÷ flax | ÷ normjax |", "|---" * 13 + "|"]
    for r in rows:
        cells = [r["case"], "x".join(map(str, r["shape"])), r["dtype"], r["mode"], r["candidate"],
                 _fmt(r["median_ms"], ".3f"), _fmt(r["min_ms"], ".3f"), _fmt(r["max_ms"], ".3f"),
                 str(r["repeats"]), _fmt(r["gb_per_s"], ".1f"),
                 _fmt(100 * r["elementwise_fraction"], ".0f"), _fmt(r["time_over_flax"], ".2f"),
                 _fmt(r["time_over_normjax"], ".2f")]
        out.append("| " + " | ".join(cells) + " |")
    return out


def markdown(rows: list[dict], env: dict[str, Any]) -> str:
    """The report: environment, a summary per case and mode, then every timed candidate."""
    lines = ["# Normalization benchmarks", ""]
    lines += [f"- **{k}**: {v}" for k, v in env.items()]
    lines += ["", "Ratios are medians of per-round ratios from interleaved timing (lower "
              "÷ values are faster; 1.00 = equal). *% elem. rate* = time of one elementwise "
              "XLA pass over the same bytes ÷ this time. *normjax* = the public functions "
              "with their defaults; *XLA path* = the same under "
              "`normjax.use_native_kernels(False)` (no CPU kernels); *autodiff* = the same under "
              "`normjax.use_fused_backward(False)`. *grad. error* = max |gradient - autodiff "
              "gradient| ÷ max |autodiff gradient| over the gradients with respect to x, "
              "scale and bias (fwd+bwd rows). *fwd+bwd* = `jax.grad` of `sum(y * ct)` (y "
              "itself unused: XLA drops what only computes it); *value+grad* = "
              "`jax.value_and_grad` of the same (y needed, as in a training step). PyTorch "
              "always runs its forward before its backward (its value+grad also computes "
              "sum(y * ct)). *others* "
              "= equinox, haiku and PyTorch where installed and where they have the layer "
              "for the layout (equinox's image norms are channels-first).", "",
              "## Summary", ""]
    lines += _summary(rows)
    lines += ["", "## All candidates", ""]
    lines += _detail(rows)
    return "\n".join(lines) + "\n"


def results_dir(quick: bool) -> Path:
    """Where a run writes by default: ``benchmarks/results`` for the full runs (committed),
    ``benchmarks/results/quick`` for ``--quick`` ones (ignored by git), so a quick run never
    overwrites the full results."""
    root = Path("benchmarks/results")
    return root / "quick" if quick else root


def write_results(rows: list[dict], env: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Writes ``out/norms.md`` and ``out/norms.json``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "norms.md", out / "norms.json"
    md.write_text(markdown(rows, env))
    js.write_text(json.dumps({"environment": env, "results": rows}, indent=2) + "\n")
    return md, js
