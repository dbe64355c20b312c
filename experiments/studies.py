"""Built-in studies: claims about normalization and dropout, measured with error bars.

    python -m experiments.studies                      # all studies -> docs/studies.md
    python -m experiments.studies --only bn_batch_size,landscape
    python -m experiments.studies --tiny --out /tmp/docs   # a smoke test: seconds per study

Each study is one file ``configs/claim_<name>.py`` that holds the claim, its runs and how they
are judged:

* ``TITLE``, ``CLAIM`` (text); ``parts(tiny: bool) -> tuple[str, ...]`` the runs it needs;
  optional ``TINY_TECHNIQUES = {part: labels}``: what ``--tiny`` keeps of a part;
* ``get_config(part) -> ConfigDict``: the runner config of one part (also usable directly:
  ``python -m experiments --config configs/claim_<name>.py:<part> --workdir ...``);
* optional ``prepare(part, config, ds, workdir) -> Hook | None``: extra probes
  (:mod:`experiments.probes`) or a data-dependent init (:mod:`experiments.data_init`);
* ``analyze(study: Study) -> Section``: figures, a table of medians over seeds with their
  interquartile range, and :class:`~experiments.metrics.Check` s that the verdict is computed
  from (:func:`experiments.metrics.verdict`; nothing is hard-coded, so a rerun can change it).

Each part runs with :func:`experiments.runner.run` into ``<runs>/<name>/<part>`` (deleted
first unless ``--resume``).  Each study writes ``<runs>/<name>/section.md`` and
``section.json``; ``<out>/studies.md`` is assembled from every study's section found under
``<runs>``, so ``--only`` refreshes some sections and keeps the others.  Figures go to
``<out>/figures/<name>_*.png``.  ``--tiny`` runs 3 steps, 2 seeds, little data (into
``runs/studies_tiny`` by default).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections
import numpy as np

from experiments import metrics
from experiments.runner import load_data, run
from experiments.writer import atomic_write, read_jsonl, write_json

__all__ = ["STUDIES", "Part", "Section", "Study", "load_claim", "main", "markdown_table",
           "render_report", "run_study", "tiny_config"]

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("bn_convergence", "bn_learning_rate", "bn_init_scale", "bn_batch_size",
           "bn_train_eval", "dropout_gap", "gradient_flow", "covariate_shift", "landscape",
           "mnist1d", "group_norm")
log = logging.getLogger("experiments.studies")


@dataclass
class Part:
    """One finished run of a study: its config, outputs and wall time."""

    name: str
    config: ml_collections.ConfigDict
    workdir: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    seconds: float

    def cells(self, technique: str) -> list[str]:
        """The cells (sweep points) of ``technique``, in grid order."""
        return [c for c, e in self.summary["results"].items() if e["technique"] == technique]

    def ok(self, cell: str) -> bool:
        return self.summary["results"][cell]["status"] == "ok"

    def final(self, cell: str, key: str, *, failed: float = np.nan) -> np.ndarray:
        """Per-seed final ``key`` of ``cell``; every seed is ``failed`` if it diverged."""
        if not self.ok(cell):
            return np.full(self.config.num_seeds, failed)
        return metrics.final_values(self.rows, cell, key)

    def sweep(self, technique: str, key: str, hparam: str, *,
              failed: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
        """Swept values ``(X,)`` of ``hparam`` and per-seed final ``key`` ``(X, seeds)``."""
        cells = self.cells(technique)
        xs = np.asarray([self.summary["results"][c]["hparams"][hparam] for c in cells])
        return xs, np.stack([self.final(c, key, failed=failed) for c in cells])

    def curves(self, cell: str, key: str, *,
               probes: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Steps and per-seed values ``(seeds, steps)`` of ``key`` (from probes.jsonl)."""
        steps, _, values = metrics.seed_curves(self.probes if probes else self.rows, cell, key)
        return steps, values

    def probe_array(self, cell: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Steps ``(T,)`` and a probe's array values ``(seeds, T, ...)``."""
        rows = sorted((r for r in self.probes if r["cell"] == cell and key in r),
                      key=lambda r: (r["seed"], r["step"]))
        if not rows:
            raise KeyError(f"no probe {key!r} for cell {cell!r}")
        steps = np.asarray(sorted({r["step"] for r in rows}))
        seeds = sorted({r["seed"] for r in rows})
        table = {(r["seed"], r["step"]): r[key] for r in rows}
        return steps, np.asarray([[table[s, t] for t in steps] for s in seeds], np.float64)


@dataclass
class Study:
    """What ``analyze`` gets: the parts, where to put figures, whether this is a tiny run."""

    name: str
    tiny: bool
    parts: dict[str, Part]
    figures_dir: Path

    def figure(self, stem: str) -> Path:
        """Where to save figure ``stem`` (``<out>/figures/<study>_<stem>.png``)."""
        return self.figures_dir / f"{self.name}_{stem}.png"

    @property
    def num_seeds(self) -> int:
        return min(p.config.num_seeds for p in self.parts.values())


@dataclass
class Section:
    """One claim's part of the report; the verdict is computed from ``checks``."""

    title: str
    claim: str
    setup: tuple[str, str]
    figures: list[tuple[str, Path]]
    table: list[str]
    checks: list[metrics.Check]
    notes: list[str] = field(default_factory=list)
    criterion: str = metrics.CRITERION

    @property
    def verdict(self) -> str:
        return metrics.verdict(self.checks)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; every row must have one entry per header."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table row {row} has {len(row)} entries, header has {len(header)}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def load_claim(name: str, configs_dir: Path = ROOT / "configs") -> ModuleType:
    """The module ``configs/claim_<name>.py``."""
    path = configs_dir / f"claim_{name}.py"
    if not path.is_file():
        raise ValueError(f"unknown study {name!r}: {path} does not exist; known: "
                         f"{', '.join(STUDIES)}")
    spec = importlib.util.spec_from_file_location(f"_normjax_claim_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [a for a in ("TITLE", "CLAIM", "parts", "get_config", "analyze")
               if not hasattr(module, a)]
    if missing:
        raise ValueError(f"{path} lacks {missing}; see experiments/studies.py")
    return module


def tiny_config(config: ml_collections.ConfigDict,
                keep: tuple[str, ...] | None = None) -> ml_collections.ConfigDict:
    """``config`` cut to 3 steps logged every step, 2 seeds, little data, depth <= 2, and
    only the techniques in ``keep`` (``None``: all)."""
    order = [label for label in config.techniques if keep is None or label in keep]
    config = copy.deepcopy(config)
    with config.unlocked():
        kept = ml_collections.ConfigDict(sort_keys=False)  # deepcopy loses the order
        for label in order:
            kept[label] = config.techniques[label]
        config.techniques = kept
        config.steps, config.log_every, config.num_seeds = 3, 1, 2
        config.model.depth = min(config.model.depth, 2)
        config.optimizer.warmup_steps = 0
        config.eval_train_examples = min(config.eval_train_examples or 128, 128)
        config.eval_batch_size = min(config.eval_batch_size, 256)
        config.figures = False
        if "devices" in config:  # one device: the smoke test compiles the least
            config.devices = 1
        if config.dataset.name == "mnist1d":
            config.dataset.options.num_samples = 500  # test split = one batch of 100
    return config


def _run_part(name: str, module: ModuleType, part: str, *, tiny: bool, workdir: Path,
              resume: bool) -> Part:
    config = module.get_config(part)
    keep = getattr(module, "TINY_TECHNIQUES", {}).get(part)
    config = tiny_config(config, keep) if tiny else config
    config.lock()
    if workdir.exists() and not resume:
        shutil.rmtree(workdir)
    finished = _finished(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    prepare = getattr(module, "prepare", None)
    hook = prepare(part, config, load_data(config), workdir) if prepare else None
    command = (f"python -m experiments --config configs/claim_{name}.py:{part} "
               f"--workdir {workdir}")
    summary = run(config, workdir, hooks=[hook] if hook else [],
                  command=None if tiny else command)
    timing = workdir / "seconds.json"  # wall time summed over the invocations that trained
    before = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
    seconds = before if finished and timing.exists() else before + time.perf_counter() - start
    write_json(timing, {"seconds": seconds})
    probes = workdir / "probes.jsonl"
    return Part(part, config, workdir, summary, read_jsonl(workdir / "metrics.jsonl"),
                read_jsonl(probes) if probes.exists() else [], seconds)


def _finished(workdir: Path) -> bool:
    """Whether ``workdir`` holds a run whose every cell has finished (ok or diverged)."""
    path = workdir / "summary.json"
    if not path.exists():
        return False
    results = json.loads(path.read_text())["results"].values()
    return all(not e["status"].startswith(("incomplete", "not run")) for e in results)


def run_study(name: str, *, tiny: bool = False, runs_dir: Path = ROOT / "runs" / "studies",
              out: Path = ROOT / "docs", resume: bool = False) -> tuple[Section, float]:
    """Run every part of study ``name``, analyze it and write its section.

    Returns the section and the wall time: the parts' (summed over resumed invocations) plus
    the analysis.
    """
    module = load_claim(name)
    parts = {}
    for part in module.parts(tiny):
        log.info("study %s: part %s", name, part)
        parts[part] = _run_part(name, module, part, tiny=tiny, workdir=runs_dir / name / part,
                                resume=resume)
    study = Study(name, tiny, parts, out / "figures")
    start = time.perf_counter()
    section = module.analyze(study)
    seconds = sum(p.seconds for p in parts.values()) + time.perf_counter() - start
    text = _render_section(section, study, seconds, out)
    atomic_write(runs_dir / name / "section.md", text)
    write_json(runs_dir / name / "section.json",
               {"name": name, "title": section.title, "verdict": section.verdict,
                "seconds": seconds, "tiny": tiny,
                "part_seconds": {p: parts[p].seconds for p in parts}})
    return section, seconds


def _render_section(section: Section, study: Study, seconds: float, out: Path) -> str:
    parts = ", ".join(f"`{p}` {study.parts[p].seconds:.0f} s" for p in study.parts)
    lines = [f"## {section.title}", "", f"**Claim.** {section.claim}", "",
             f"**Setup.** {section.setup[0]}  ", section.setup[1], ""]
    for caption, path in section.figures:
        lines += [f"![{caption}]({path.relative_to(out).as_posix()})", "", f"*{caption}*", ""]
    lines += [*section.table, "", *[f"{n}" for n in section.notes]]
    details = "; ".join(c.detail for c in section.checks)
    lines += ["", f"**Verdict: {section.verdict}.** Criterion: {section.criterion}. "
              f"{details}.", "", f"*Wall time: {seconds:.0f} s ({parts}); "
              f"config: `configs/claim_{study.name}.py`.*", ""]
    return "\n".join(lines)


def render_report(runs_dir: Path) -> str:
    """``studies.md`` from the ``section.md`` of every study found under ``runs_dir``."""
    found = [n for n in STUDIES if (runs_dir / n / "section.json").exists()]
    infos = [json.loads((runs_dir / n / "section.json").read_text()) for n in found]
    lines = ["# Studies: what normalization and dropout do, measured", "",
             "Each section states a claim from the literature, the setup, figures (line: median "
             "over seeds; band or error bars: interquartile range), a table of medians "
             "[25th, 75th percentile] over seeds and a verdict computed from the data "
             f"with one criterion throughout (unless a section says otherwise): "
             f"{metrics.CRITERION}. "
             "The verdicts speak for these small models and data sets only.", "",
             "Regenerate: `python -m experiments.studies` (one study: "
             "`--only NAME`).", "", "| # | study | verdict | wall time |", "|---|---|---|---|"]
    for i, info in enumerate(infos, 1):
        tiny = " (tiny run)" if info["tiny"] else ""
        lines.append(f"| {i} | [{info['title']}](#{_anchor(info['title'])}) | "
                     f"{info['verdict']}{tiny} | {info['seconds']:.0f} s |")
    total = sum(info["seconds"] for info in infos)
    lines += ["", f"Total wall time: {total / 60:.1f} min.", ""]
    for n in found:
        lines.append((runs_dir / n / "section.md").read_text())
    return "\n".join(lines)


def _anchor(title: str) -> str:
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m experiments.studies",
                                     description="Run the built-in studies into one report.")
    parser.add_argument("--only", default="", help="comma-separated study names")
    parser.add_argument("--tiny", action="store_true", help="3 steps, 2 seeds: a smoke test")
    parser.add_argument("--out", default=None, help="report directory (default docs)")
    parser.add_argument("--runs", default=None, help="run directory (default runs/studies)")
    parser.add_argument("--resume", action="store_true", help="keep and resume existing runs")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(STUDIES)
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        print(f"error: unknown study name(s) {unknown}; known: {', '.join(STUDIES)}",
              file=sys.stderr)
        return 2
    out = Path(args.out or ROOT / "docs")
    runs_dir = Path(args.runs or ROOT / "runs" / ("studies_tiny" if args.tiny else "studies"))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("experiments").setLevel(logging.INFO)
    for name in names:
        section, seconds = run_study(name, tiny=args.tiny, runs_dir=runs_dir, out=out,
                                     resume=args.resume)
        print(f"{name}: {section.verdict} ({seconds:.0f} s)", flush=True)
        atomic_write(out / "studies.md", render_report(runs_dir))
    print(f"done: see {out / 'studies.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
