"""Summary (final metrics, mean +/- std over seeds, per cell) and the Markdown report.

``summary.json``::

    {"study", "dataset", "model", "optimizer", "steps", "num_seeds", "swept": [hparam, ...],
     "results": {<cell>: {"technique", "hparams": {swept values}, "status", "step",
                          "num_seeds", "final": {<metric>: {"mean", "std", "values"}} | null,
                          "compile_s", "train_s", "eval_s", "steps_per_s",
                          "run_strategy"}}}

``compile_s``/``train_s``/``eval_s`` are seconds summed over all invocations (a resumed technique
compiles again); ``steps_per_s`` counts steps of the technique's program, in which all its runs
advance together. ``run_strategy`` says how those runs were executed (``vmap``, ``sequential`` or
``interleaved``, and why; see :mod:`experiments.strategy`). ``status`` is ``"ok"``, ``"diverged at
step N"`` (then ``final`` is null), ``"incomplete (step k of S)"`` or ``"not run"``. ``std`` is the
sample standard deviation (ddof=1; 0 for one seed).
``summary.csv`` has one row per cell with ``<metric>_mean`` / ``<metric>_std`` columns for the
main metrics (:data:`MAIN_METRICS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from experiments.checkpoint import Progress
from experiments.figures import make_figures
from experiments.runs import make_grid
from experiments.typed_config import ModelConfig, StudyConfig
from experiments.writer import atomic_write, write_csv, write_json

__all__ = ["MAIN_METRICS", "render_report", "summarize", "write_outputs"]

MAIN_METRICS = ("train/loss", "train/accuracy", "test/loss", "test/accuracy",
                "test_batch_stats/accuracy")
_NOT_METRICS = ("technique", "cell", "seed", "step", "epoch")


def _final_rows(rows: list[dict[str, Any]], cell: str) -> list[dict[str, Any]]:
    """The last row of each seed of ``cell``."""
    last: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["cell"] == cell and (row["seed"] not in last
                                    or row["step"] >= last[row["seed"]]["step"]):
            last[row["seed"]] = row
    return [last[s] for s in sorted(last)]


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "values": [float(v) for v in arr]}


def _final(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rows[0] if k not in _NOT_METRICS and not k.startswith(("hp/", "time/"))]
    return {k: _stats([row[k] for row in rows if row.get(k) is not None]) for k in keys
            if any(row.get(k) is not None for row in rows)}


def _status(progress: Progress, c: int, steps: int) -> str:
    status = progress.cell_status[c]
    if status == "running":
        return f"incomplete (step {progress.step} of {steps})"
    return status


def _cell_entries(config: StudyConfig, progress: Progress) -> dict[str, Any]:
    grid = make_grid(config, progress.technique)
    entries = {}
    for c, cell in enumerate(progress.cell_labels):
        status = _status(progress, c, config.steps)
        rows = _final_rows(progress.rows, cell)
        final = _final(rows) if rows and not status.startswith("diverged") else None
        entries[cell] = {"technique": progress.technique, "hparams": grid.swept[c],
                         "status": status, "step": progress.step,
                         "num_seeds": config.num_seeds, "final": final,
                         "compile_s": progress.compile_s, "train_s": progress.train_s,
                         "eval_s": progress.eval_s, "run_strategy": progress.run_strategy,
                         "steps_per_s": progress.step / progress.train_s
                         if progress.train_s else None}
    return entries


def summarize(config: StudyConfig,
              progress: Mapping[str, Progress | None]) -> dict[str, Any]:
    """The summary of every technique of ``config`` (see the module docstring)."""
    results: dict[str, Any] = {}
    for label in config.techniques.keys():
        p = progress.get(label)
        if p is not None:
            results.update(_cell_entries(config, p))
            continue
        grid = make_grid(config, label)
        for cell, swept in zip(grid.labels, grid.swept, strict=True):
            results[cell] = {"technique": label, "hparams": swept, "status": "not run",
                             "step": 0, "num_seeds": config.num_seeds, "final": None,
                             "compile_s": None, "train_s": None, "eval_s": None,
                             "steps_per_s": None, "run_strategy": None}
    swept = [k for k, v in config.sweep.items() if v]
    return {"study": config.name, "dataset": config.dataset.name,
            "model": config.model.factory or config.model.kind,
            "optimizer": config.optimizer.name, "steps": config.steps,
            "num_seeds": config.num_seeds, "swept": swept, "results": results}


def _csv_rows(summary: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    columns = ["cell", "technique", *summary["swept"], "status", "step", "num_seeds"]
    columns += [f"{m}_{s}" for m in MAIN_METRICS for s in ("mean", "std")]
    columns += ["compile_s", "train_s", "steps_per_s"]
    rows = []
    for cell, entry in summary["results"].items():
        row = {"cell": cell, **entry["hparams"], **{k: v for k, v in entry.items()
                                                    if k in columns}}
        for metric, stats in (entry["final"] or {}).items():
            row[f"{metric}_mean"], row[f"{metric}_std"] = stats["mean"], stats["std"]
        rows.append(row)
    return columns, rows


def _fmt(entry: dict[str, Any], metric: str) -> str:
    stats = (entry["final"] or {}).get(metric)
    return "-" if stats is None else f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _strategy_lines(summary: dict[str, Any]) -> list[str]:
    """Report lines saying how each technique's runs were executed (one line if all alike)."""
    used: dict[str, list[str]] = {}
    for e in summary["results"].values():
        if e.get("run_strategy") and e["technique"] not in used.get(e["run_strategy"], []):
            used.setdefault(e["run_strategy"], []).append(e["technique"])
    if len(used) == 1:
        return [f"- runs of each technique executed: {next(iter(used))}"]
    return [f"- runs executed: {s} for {', '.join(t)}" for s, t in used.items()]


def _options(options: Mapping[str, Any]) -> str:
    items = dict(options)
    return f" ({', '.join(f'{k}={v!r}' for k, v in items.items())})" if items else ""


def _model_text(m: ModelConfig) -> str:
    if m.factory:
        return f"`{m.factory}`{_options(m.options)}, init scale {m.init_scale:g}"
    return (f"`{m.kind}` depth {m.depth}, width {m.width}, {m.activation}, init scale "
            f"{m.init_scale:g}")


def _cell_name(config: StudyConfig, cell: str, entry: dict[str, Any]) -> str:
    """The cell's label, with its norm where the label does not say it: ``mine (my_rms)``."""
    norm = config.techniques[entry["technique"]].norm
    return cell if norm in ("none", entry["technique"]) else f"{cell} ({norm})"


def render_report(config: StudyConfig, summary: dict[str, Any],
                  figures: list[tuple[str, str]], command: str | None = None) -> str:
    """``report.md``: setup, results table, figures, files."""
    m, o = config.model, config.optimizer
    lines = [f"# {config.name}", "", *([config.notes, ""] if config.notes else []),
             f"- data: `{config.dataset.name}`{_options(config.dataset.options)}; model: "
             f"{_model_text(m)}",
             f"- training: {o.name}, learning rate {o.learning_rate:g} ({o.schedule}), "
             f"batch {config.batch_size}, {config.steps} steps, {config.num_seeds} seeds "
             f"(from {config.seed}), logged every {config.log_every} steps",
             *([f"- swept: {', '.join(summary['swept'])}"] if summary["swept"] else []),
             *_strategy_lines(summary),
             *([f"- reproduce: `{command}`"] if command else []), "",
             f"## Final metrics (mean ± std over {config.num_seeds} seeds)", "",
             "| technique | status | test accuracy | train accuracy | test loss | "
             "test accuracy, BN batch stats | steps/s | compile s |",
             "|---|---|---|---|---|---|---|---|"]
    for cell, e in summary["results"].items():
        lines.append(f"| {_cell_name(config, cell, e)} | {e['status']} | "
                     f"{_fmt(e, 'test/accuracy')} | "
                     f"{_fmt(e, 'train/accuracy')} | {_fmt(e, 'test/loss')} | "
                     f"{_fmt(e, 'test_batch_stats/accuracy')} | "
                     f"{_num(e['steps_per_s'], '.0f')} | {_num(e['compile_s'], '.1f')} |")
    lines += ["", "Train metrics are evaluated on the training set in eval mode (running "
              "statistics, no dropout); the BN batch-stats column normalizes each test batch "
              f"of {config.batch_size} with its own statistics, as in training.", ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"### {title}\n\n![{title}]({name})\n" for title, name in figures]
    lines += ["## Files", "", "`config.json` (the config), `metrics.jsonl` (one row per logged "
              "step, seed and technique), `summary.json` / `summary.csv` (final metrics), "
              "`checkpoints/` (train state and progress per technique; rerun to resume).", ""]
    return "\n".join(lines)


def write_outputs(workdir: str | Path, config: StudyConfig,
                  progress: Mapping[str, Progress | None],
                  command: str | None = None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write summary.json (the summary and ``extra``, e.g. the device layout), summary.csv,
    the figures and report.md; return the summary."""
    workdir = Path(workdir)
    summary = {**summarize(config, progress), **(extra or {})}
    write_json(workdir / "summary.json", summary)
    write_csv(workdir / "summary.csv", *_csv_rows(summary))
    rows = [row for p in progress.values() if p for row in p.rows]
    figures = make_figures(workdir, summary, rows) if config.figures else []
    atomic_write(workdir / "report.md", render_report(config, summary, figures, command))
    return summary
