"""Built-in studies: claims about normalization and dropout, measured with error bars.

    python -m experiments.studies                      # all studies -> docs/studies.md
    python -m experiments.studies --only bn_batch_size,landscape
    python -m experiments.studies --tiny --out /tmp/docs   # a smoke test: seconds per study

Each study is two files: ``configs/claim_<name>.py`` is data, the runner configs
(``get_config(part) -> ConfigDict``, also usable directly: ``python -m experiments --config
configs/claim_<name>.py:<part> --workdir ...``) and the grids they use; the module
``experiments/studies/<name>.py`` says what is claimed and how it is judged:

* ``TITLE``, ``CLAIM`` (text); ``parts(tiny: bool) -> tuple[str, ...]`` the runs it needs;
  optional ``TINY_TECHNIQUES = {part: labels}``: what ``--tiny`` keeps of a part (``"*"``:
  of every part) and ``TINY_SWEEP = {hparam: values}`` (the swept values it keeps); an
  analysis then draws what its parts have (:meth:`Study.labels`) and skips the checks,
  which a smoke run does not report;
* optional ``prepare(part, config, ds, workdir) -> Hook | None``: extra probes
  (:mod:`experiments.probes`) or a data-dependent init (:mod:`experiments.data_init`);
* ``analyze(study: Study) -> Section``: figures, a table of medians over seeds with their
  interquartile range, and :class:`~experiments.studies.decision.Check` s that the verdict is
  computed from (:func:`experiments.studies.decision.verdict`; nothing is hard-coded, so a
  rerun can change it).

Each part runs with :func:`experiments.runner.run` into ``<runs>/<name>/<part>`` (deleted
first unless ``--resume``).  Each study writes ``<runs>/<name>/section.md`` and
``section.json``; ``<out>/studies.md`` is assembled from every study's section found under
``<runs>``, so ``--only`` refreshes some sections and keeps the others.  Figures go to
``<out>/figures/<name>_*.png`` (and ``.svg``), each seed's final metrics to
``<out>/studies_data/<name>.csv``.  ``--tiny`` is a smoke run (3 steps, 2 seeds, little data,
into ``runs/studies_tiny`` by default, about 10-20 s per study): it checks that everything
runs and draws, and gives no verdicts.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

from experiments.runner import load_data, run
from experiments.studies import decision
from experiments.studies.base import Part, Section, Study, markdown_table, tiny_config
from experiments.writer import atomic_write, read_jsonl, write_json

__all__ = ["SMOKE", "STUDIES", "Part", "Section", "Study", "load_study", "main", "markdown_table",
           "render_report", "run_study", "study_config", "tiny_config"]

ROOT = Path(__file__).resolve().parents[2]
SMOKE = "smoke run (no verdict)"
STUDIES = ("bn_convergence", "bn_learning_rate", "bn_init_scale", "bn_batch_size",
           "bn_train_eval", "dropout_gap", "gradient_flow", "covariate_shift", "landscape",
           "mnist1d", "group_norm", "resnet_learning_rate", "resnet_batch_size",
           "resnet_group_norm", "l1_l2_sparsity", "bn_regularizer", "layer_norm_sequences",
           "weight_norm_speed", "input_whitening")
REQUIRED = ("TITLE", "CLAIM", "parts", "analyze")
log = logging.getLogger("experiments.studies")


def load_study(name: str) -> ModuleType:
    """The module ``experiments.studies.<name>``."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; known: {', '.join(STUDIES)}")
    module = importlib.import_module(f"experiments.studies.{name}")
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing:
        raise ValueError(f"{module.__file__} lacks {missing}; see experiments/studies/__init__.py")
    return module


def study_config(name: str, part: str) -> ml_collections.ConfigDict:
    """The runner config of ``part`` of study ``name`` (``configs/claim_<name>.py``)."""
    return importlib.import_module(f"configs.claim_{name}").get_config(part)


def _run_part(name: str, module: ModuleType, part: str, *, tiny: bool, workdir: Path,
              resume: bool) -> Part:
    config = study_config(name, part)
    tiny_techniques = getattr(module, "TINY_TECHNIQUES", {})
    keep = tiny_techniques.get(part, tiny_techniques.get("*"))
    config = tiny_config(config, keep, getattr(module, "TINY_SWEEP", None)) if tiny else config
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
    module = load_study(name)
    parts = {}
    for part in module.parts(tiny):
        log.info("study %s: part %s", name, part)
        parts[part] = _run_part(name, module, part, tiny=tiny, workdir=runs_dir / name / part,
                                resume=resume)
    study = Study(name, tiny, parts, out / "figures")
    start = time.perf_counter()
    section = module.analyze(study)
    csv_path = _write_per_seed(out / "studies_data" / f"{name}.csv", parts.values())
    seconds = sum(p.seconds for p in parts.values()) + time.perf_counter() - start
    text = _render_section(section, study, seconds, out, csv_path)
    atomic_write(runs_dir / name / "section.md", text)
    write_json(runs_dir / name / "section.json",
               {"name": name, "title": section.title,
                "verdict": SMOKE if tiny else section.verdict, "seconds": seconds,
                "tiny": tiny, "part_seconds": {p: parts[p].seconds for p in parts}})
    return section, seconds


def _write_per_seed(path: Path, parts: Iterable[Part]) -> Path:
    """Every part's per-seed final metrics in one CSV (columns: the union, blank if absent)."""
    header: list[str] = []
    rows: list[dict[str, Any]] = []
    for part in parts:
        names, table = part.per_seed_table()
        header += [n for n in names if n not in header]
        rows += [dict(zip(names, row, strict=True)) for row in table]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def _render_section(section: Section, study: Study, seconds: float, out: Path,
                    csv_path: Path) -> str:
    parts = ", ".join(f"`{p}` {study.parts[p].seconds:.0f} s" for p in study.parts)
    lines = [f"## {section.title}", "", f"**Claim.** {section.claim}", "",
             f"**Setup.** {section.setup[0]}  ", section.setup[1], ""]
    for caption, path in section.figures:
        lines += [f"![{caption}]({path.relative_to(out).as_posix()})", "", f"*{caption}*", ""]
    lines += [*section.table, "", *[f"{n}" for n in section.notes]]
    if study.tiny:
        lines += ["", f"**{SMOKE.capitalize()}:** 3 steps; the numbers above say only that "
                      "everything runs."]
    else:
        lines += ["", f"**Verdict: {section.verdict}.** Test: {section.criterion}.", "",
                  *[f"- {c.detail}." for c in section.checks]]
    data = csv_path.relative_to(out).as_posix()
    lines += ["", f"*Wall time: {seconds:.0f} s ({parts}); config: "
                  f"`configs/claim_{study.name}.py`, analysis: "
                  f"`experiments/studies/{study.name}.py`; per-seed results: [{data}]({data}).*",
              ""]
    return "\n".join(lines)


def render_report(runs_dir: Path) -> str:
    """``studies.md`` from the ``section.md`` of every study found under ``runs_dir``."""
    found = [n for n in STUDIES if (runs_dir / n / "section.json").exists()]
    infos = [json.loads((runs_dir / n / "section.json").read_text()) for n in found]
    lines = ["# Studies: what normalization and dropout do, measured", "",
             "Each section states a claim from the literature, the setup, figures (line: mean "
             "over seeds; band or error bars: its 95% confidence interval), a table of medians "
             "[25th, 75th percentile] over seeds, and a verdict computed from the data with one "
             f"test throughout (unless a section says otherwise): {decision.CRITERION}. "
             "A verdict is `holds` when every sub-claim is detected in the claimed direction, "
             "`holds in part` when some are and none goes the other way, `mixed`, `opposite`, "
             "or `not detected` (no sub-claim reaches p < 0.05: no effect, or too small for "
             "these seeds). Each seed's final metrics are in `docs/studies_data/<study>.csv`. "
             "The verdicts speak for these small models and data sets only.", "",
             "Regenerate: `python -m experiments.studies` (one study: "
             "`--only NAME`).", "", "| # | study | verdict | wall time |", "|---|---|---|---|"]
    for i, info in enumerate(infos, 1):
        tiny = " (tiny run)" if info["tiny"] else ""
        lines.append(f"| {i} | [{info['title']}](#{_anchor(info['title'])}) | "
                     f"{info['verdict']}{tiny} | {info['seconds']:.0f} s |")
    total = sum(info["seconds"] for info in infos)
    lines += ["", f"Sum of the studies' wall times: {total / 60:.1f} min."]
    command = runs_dir / "command.json"
    if command.exists():
        info = json.loads(command.read_text())
        lines[-1] += (f" The whole regeneration (`python -m experiments.studies --jobs "
                      f"{info['jobs']}`) took {info['wall_s'] / 60:.1f} min wall on this "
                      f"machine's {os.cpu_count()} CPU cores"
                      + ("; each study's own time includes sharing the cores with the "
                         "other job." if info["jobs"] > 1 else "."))
    lines.append("")
    for n in found:
        lines.append((runs_dir / n / "section.md").read_text())
    return "\n".join(lines)


def _anchor(title: str) -> str:
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.studies", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the built-in studies into one report (docs/studies.md).",
        epilog="studies:\n" + "\n".join(f"  {n:18s} {load_study(n).TITLE}" for n in STUDIES))
    parser.add_argument("--only", default="", help="comma-separated study names")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run: 3 steps, 2 seeds, no verdicts")
    parser.add_argument("--out", default=None, help="report directory (default docs)")
    parser.add_argument("--runs", default=None, help="run directory (default runs/studies)")
    parser.add_argument("--resume", action="store_true", help="keep and resume existing runs")
    parser.add_argument("--jobs", type=int, default=1,
                        help="studies run at once, each in its own process (default 1); many "
                             "runs use one core, so 2 on two cores is faster")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(STUDIES)
    unknown = [n for n in names if n not in STUDIES]
    if unknown or args.jobs < 1:
        print(f"error: unknown study name(s) {unknown}; known: {', '.join(STUDIES)}"
              if unknown else f"error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    out = Path(args.out or ROOT / "docs")
    runs_dir = Path(args.runs or ROOT / "runs" / ("studies_tiny" if args.tiny else "studies"))
    _setup_logging()
    start, failed = time.perf_counter(), []
    whole = len(names) == len(STUDIES) and not args.resume  # a regeneration from scratch
    if not args.resume:
        (runs_dir / "command.json").unlink(missing_ok=True)  # no longer describes the runs
    for name, result in _run_all(_longest_first(names, runs_dir), args, runs_dir, out):
        if isinstance(result, BaseException):
            failed.append(name)
            print(f"{name}: FAILED: {type(result).__name__}: {result}", file=sys.stderr)
            continue
        verdict, seconds = result
        print(f"{name}: {verdict} ({seconds:.0f} s)", flush=True)
        atomic_write(out / "studies.md", render_report(runs_dir))
    if whole and not failed:  # say how long the whole regeneration took
        write_json(runs_dir / "command.json", {"wall_s": time.perf_counter() - start,
                                               "jobs": args.jobs, "tiny": args.tiny})
        atomic_write(out / "studies.md", render_report(runs_dir))
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min: see {out / 'studies.md'}")
    return 1 if failed else 0


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("experiments").setLevel(logging.INFO)


def _longest_first(names: list[str], runs_dir: Path) -> list[str]:
    """``names`` by the wall time of their last run, longest first (unknown ones first), so
    that parallel jobs finish together; the order of the report does not change."""
    def last(name: str) -> float:
        info = runs_dir / name / "section.json"
        return json.loads(info.read_text())["seconds"] if info.exists() else math.inf
    return sorted(names, key=last, reverse=True)


def _one(name: str, tiny: bool, runs_dir: Path, out: Path,
         resume: bool) -> tuple[str, float]:
    section, seconds = run_study(name, tiny=tiny, runs_dir=runs_dir, out=out, resume=resume)
    return (SMOKE if tiny else section.verdict), seconds


def _run_all(names: list[str], args: argparse.Namespace, runs_dir: Path,
             out: Path) -> Iterator[tuple[str, tuple[str, float] | BaseException]]:
    """Each study's ``(verdict, seconds)`` or its exception, as they finish."""
    todo = [(n, args.tiny, runs_dir, out, args.resume) for n in names]
    if args.jobs == 1:
        for job in todo:
            try:
                yield job[0], _one(*job)
            except Exception as e:  # reported; the other studies go on
                yield job[0], e
        return
    context = multiprocessing.get_context("spawn")  # JAX does not survive fork
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_setup_logging) as pool:
        futures = {pool.submit(_one, *job): job[0] for job in todo}
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], error if error is not None else future.result()
