"""Training-step speed: the experiments runner next to a hand-written flax + optax step.

Run::

    python -m benchmarks.train_step            # a few minutes
    python -m benchmarks.train_step --quick    # fewer steps and rounds, about a minute

Model: a small CNN on 28x28x1 inputs, batch 128 (two 3x3 'SAME' convolutions with stride 2
and 32 channels, ReLU, a Dense head; optionally BatchNorm after each convolution), SGD with
momentum 0.9, synthetic data held on the device.  Timed, interleaved (see
:mod:`benchmarks.timing`), each call being ``--steps`` training steps:

* ``flax+optax``: a hand-written ``flax.linen`` model (``nn.Conv``) + ``optax.sgd`` step,
  ``jax.jit`` with the state donated, called once per step from Python (batch drawn on device);
* ``runner``: the experiments runner's compiled program for one seed
  (:class:`experiments.program.Program`: one ``lax.scan`` of steps, metrics included);
* ``torch``: the same model in PyTorch eager, channels-last (only when torch is installed);
* ``K seeds: <strategy>``: the runner's program for K seeds under each run strategy
  (``vmap``, ``sequential``, ``interleaved``, ``stepwise``, and ``measure``, which times the
  others and keeps the fastest; see :mod:`experiments.strategy`), and which one
  ``run_strategy='auto'`` picks here; for the CNN and for an MLP (3 x 256 hidden units on the
  flattened images);
* the ResNet of ``examples/resnet.py`` (``nn.Conv``, skip connections, written as a user
  writes a model): the runner running it through ``model.factory`` for 2 seeds, under the
  strategy ``auto`` picks, next to a hand-written jitted step loop of the same model (flax's
  ``nn.BatchNorm`` there), compared per seed-step.

Reported: steps per second (seed-steps per second for K seeds) and ratios from the same rounds.
Results go to ``<out>/train_step.md`` and ``<out>/train_step.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from benchmarks.report import environment, results_dir
from benchmarks.timing import Timing, paired_ratio, time_interleaved
from benchmarks.torch_candidates import torch_available
from benchmarks.torch_train_step import torch_call
from examples.resnet import resnet
from experiments.allocator import reexec_with_malloc_tuning
from experiments.config import base_config, technique
from experiments.data import Dataset
from experiments.program import Program, make_experiment
from experiments.runs import make_grid
from experiments.strategy import RUN_STRATEGIES, resolve_strategy
from experiments.typed_config import typed_config

__all__ = ["main", "runner_config"]

IMAGE = (28, 28, 1)
BATCH, WIDTH, DEPTH, LR, MOMENTUM = 128, 32, 2, 0.05, 0.9
RESNET, RESNET_SEEDS = {"blocks": (1, 1), "width": 16}, 2


def synthetic_images(num: int = 2048, seed: int = 0) -> Dataset:
    """Random 28x28x1 images with random labels (speed only: the values do not matter)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num, *IMAGE), np.float32)
    y = rng.integers(0, 10, num).astype(np.int32)
    return Dataset(x, y, x[:256], y[:256], 10, "synthetic-images", IMAGE)


def runner_config(norm: str, num_seeds: int, strategy: str = "auto", steps: int = 50,
                  model: str = "cnn") -> ml_collections.ConfigDict:
    """The runner's config for the benchmark CNN (or MLP: 3 x 256 hidden units)."""
    c = base_config()
    if model == "cnn":
        c.model.update(kind="cnn", depth=DEPTH, width=WIDTH, stride=2, kernel_size=3)
    else:
        c.model.update(kind="mlp", depth=3, width=256)
    c.optimizer.update(name="momentum", learning_rate=LR, momentum=MOMENTUM)
    c.batch_size, c.steps, c.log_every, c.num_seeds = BATCH, steps, steps, num_seeds
    c.devices, c.run_strategy = 1, strategy
    c.techniques.bench = technique(norm)
    return c


def _runner_call(config: ml_collections.ConfigDict, ds: Dataset, steps: int
                 ) -> tuple[Callable[[], Any], Program]:
    typed = typed_config(config)
    program = Program(make_experiment(typed, "bench", ds), ds, make_grid(typed, "bench"))
    holder = {"state": program.init()}

    def call() -> Any:
        holder["state"], _, _ = program.train(holder["state"], steps)
        return holder["state"].step

    return call, program


class _FlaxCNN(nn.Module):
    use_bn: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for _ in range(DEPTH):
            x = nn.Conv(WIDTH, (3, 3), strides=2, padding="SAME", use_bias=not self.use_bn)(x)
            if self.use_bn:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.99)(x)
            x = nn.relu(x)
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def _flax_call(ds: Dataset, use_bn: bool, steps: int, model: nn.Module | None = None
               ) -> Callable[[], Any]:
    """A hand-written flax + optax training step, jitted with donation, one call per step
    (``model``: the benchmark CNN by default)."""
    model, tx = model or _FlaxCNN(use_bn), optax.sgd(LR, momentum=MOMENTUM)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *IMAGE)), train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    x_all, y_all = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)

    @jax.jit
    def draw(step: jax.Array) -> tuple[jax.Array, jax.Array]:
        idx = jax.random.randint(jax.random.fold_in(jax.random.key(1), step), (BATCH,), 0,
                                 len(ds.x_train))
        return x_all[idx], y_all[idx]

    def loss(params: Any, stats: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, Any]:
        out = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                          mutable=["batch_stats"])
        logits, new = out
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce, new.get("batch_stats", {})

    def step_fn(state: tuple, step: jax.Array) -> tuple:
        params, stats, opt = state
        x, y = draw(step)
        grads, stats = jax.grad(loss, has_aux=True)(params, stats, x, y)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), stats, opt

    step_fn = jax.jit(step_fn, donate_argnums=0)
    holder = {"state": (params, stats, tx.init(params)), "step": 0}

    def call() -> Any:
        for _ in range(steps):
            holder["state"] = step_fn(holder["state"], jnp.int32(holder["step"]))
            holder["step"] += 1
        return holder["state"]

    return call


def _rows(timings: dict[str, Timing], steps: int, seeds: dict[str, int], ref: str
          ) -> list[dict[str, Any]]:
    return [{"candidate": name, "seeds": seeds[name],
             "seed_steps_per_s": seeds[name] * steps / t.median,
             "median_ms_per_step": t.median / steps * 1e3,
             "min_ms_per_step": t.min / steps * 1e3,
             "time_per_seed_step_over_" + ref: paired_ratio(t, timings[ref]) * seeds[ref]
             / seeds[name]}
            for name, t in timings.items()]


def resnet_config(norm: str, num_seeds: int, steps: int) -> ml_collections.ConfigDict:
    """The runner's config for ``examples/resnet.py`` through ``model.factory``."""
    c = runner_config(norm, num_seeds, steps=steps)
    c.model.factory, c.model.options = "examples.resnet:resnet", dict(RESNET)
    return c


def resnet_seeds(ds: Dataset, norm: str, num_seeds: int, steps: int, repeats: int
                 ) -> tuple[list[dict[str, Any]], str]:
    """The user-style ResNet (``nn.Conv``, skip connections): the runner, with the strategy
    ``auto`` picks for it, next to a hand-written jitted step loop (per seed)."""
    def norm_layer() -> nn.Module:  # flax's own BatchNorm in the hand-written loop
        return nn.BatchNorm(use_running_average=False, momentum=0.9)

    model = resnet(norm=norm_layer if norm == "batch" else _Identity, dropout_rate=0.0,
                   num_classes=10, input_shape=IMAGE, **RESNET)
    calls = {"flax+optax": _flax_call(ds, False, steps, model)}
    name = f"runner, {num_seeds} seeds"
    calls[name], program = _runner_call(resnet_config(norm, num_seeds, steps), ds, steps)
    t = time_interleaved(calls, repeats=repeats, warmup=1)
    note = (f"The runner picked `{program.strategy.name}` ({program.strategy.reason}); "
            "the hand-written loop trains one seed.")
    return _rows(t, steps, {"flax+optax": 1, name: num_seeds}, "flax+optax"), note


class _Identity(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


def single_seed(ds: Dataset, norm: str, steps: int, repeats: int) -> list[dict[str, Any]]:
    """One seed: runner vs hand-written flax + optax (and torch)."""
    calls = {"flax+optax": _flax_call(ds, norm == "batch", steps),
             "runner": _runner_call(runner_config(norm, 1, steps=steps), ds, steps)[0]}
    if torch_available():
        calls["torch"] = torch_call(ds, norm == "batch", steps, BATCH, WIDTH, DEPTH, LR,
                                    MOMENTUM)
    t = time_interleaved(calls, repeats=repeats, warmup=1)
    return _rows(t, steps, dict.fromkeys(calls, 1), "flax+optax")


def multi_seed(ds: Dataset, norm: str, num_seeds: int, steps: int, repeats: int,
               model: str = "cnn") -> tuple[list[dict[str, Any]], str]:
    """K seeds under each run strategy, and the one ``auto`` resolves to."""
    calls, seeds, programs = {}, {}, {}
    for strategy in RUN_STRATEGIES[1:]:
        name = f"{num_seeds} seeds: {strategy}"
        config = runner_config(norm, num_seeds, strategy, steps, model)
        calls[name], programs[strategy] = _runner_call(config, ds, steps)
        seeds[name] = num_seeds
    auto = resolve_strategy(runner_config(norm, num_seeds, model=model), num_seeds)
    t = time_interleaved(calls, repeats=repeats, warmup=1)
    measured = programs["measure"].strategy
    note = (f"`run_strategy='auto'` picks here: {auto.name} ({auto.reason}); "
            f"`'measure'` picked {measured.name} ({measured.reason}).")
    return _rows(t, steps, seeds, f"{num_seeds} seeds: vmap"), note


def _markdown(results: dict[str, Any]) -> str:
    lines = ["# Training-step benchmark", ""]
    lines += [f"- **{k}**: {v}" for k, v in results["environment"].items()]
    lines += [f"- **model**: {results['model']}", ""]
    for part in results["parts"]:
        ref = next(k for k in part["rows"][0] if k.startswith("time_per_seed_step_over_"))
        lines += [f"## {part['title']}", "", *( [part["note"], ""] if part.get("note") else []),
                  "| candidate | seeds | seed-steps/s | ms/step (median) | ms/step (min) | "
                  f"time per seed-step ÷ {ref.removeprefix('time_per_seed_step_over_')} |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['candidate']} | {r['seeds']} | {r['seed_steps_per_s']:.1f} | "
                  f"{r['median_ms_per_step']:.2f} | {r['min_ms_per_step']:.2f} | "
                  f"{r[ref]:.2f} |" for r in part["rows"]]
        lines.append("")
    return "\n".join(lines)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    p.add_argument("--seeds", type=int, default=8, help="K for the multi-seed comparison")
    p.add_argument("--norms", default="none,batch",
                   help="comma-separated: none (plain CNN), batch (BatchNorm after each conv)")
    p.add_argument("--out", type=Path, default=None,
                   help="default: benchmarks/results (--quick: benchmarks/results/quick)")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="run under the allocator settings of the calling environment")
    p.add_argument("--no-torch", action="store_true",
                   help="skip the PyTorch candidates even when torch is installed")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    if args.out is None:
        args.out = results_dir(args.quick)
    if args.no_torch:
        os.environ["NORMJAX_BENCH_TORCH"] = "0"
    norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    if bad := [n for n in norms if n not in ("none", "batch")]:
        raise SystemExit(f"--norms: unknown {bad}; use none and/or batch.")
    if args.seeds < 2:
        raise SystemExit(f"--seeds must be >= 2, got {args.seeds}.")
    if not args.no_malloc_tuning:
        reexec_with_malloc_tuning("benchmarks.train_step", argv)
    steps, repeats = (10, 5) if args.quick else (25, 15)
    ds = synthetic_images()
    results = {"environment": environment(quick=args.quick, torch=torch_available()),
               "model": f"CNN {DEPTH}x(conv3x3/2, {WIDTH}) + Dense, 28x28x1, batch {BATCH}, "
                        f"SGD momentum {MOMENTUM}; {steps} steps per timed call",
               "parts": []}
    for norm in norms:
        print(f"timing one seed, norm={norm} ...", flush=True)
        _add(results, args.out, f"One seed, norm={norm}", single_seed(ds, norm, steps, repeats))
        print(f"timing {args.seeds} seeds, norm={norm} ...", flush=True)
        _add(results, args.out, f"{args.seeds} seeds, norm={norm}",
             *multi_seed(ds, norm, args.seeds, steps, repeats))
    for norm in norms:
        print(f"timing the example ResNet, norm={norm} ...", flush=True)
        _add(results, args.out, f"ResNet (examples/resnet.py, nn.Conv) through model.factory, "
             f"{RESNET_SEEDS} seeds, norm={norm}",
             *resnet_seeds(ds, norm, RESNET_SEEDS, steps, repeats))
    for norm in norms:
        print(f"timing {args.seeds} seeds, MLP, norm={norm} ...", flush=True)
        _add(results, args.out, f"{args.seeds} seeds, MLP 3x256, norm={norm}",
             *multi_seed(ds, norm, args.seeds, steps, repeats, model="mlp"))
    print((args.out / "train_step.md").read_text())
    return 0


def _add(results: dict[str, Any], out: Path, title: str, rows: list[dict[str, Any]],
         note: str | None = None) -> None:
    """Appends one part and rewrites ``out/train_step.{md,json}`` (a run cut short keeps the
    parts it finished)."""
    results["parts"].append({"title": title, "rows": rows, **({"note": note} if note else {})})
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_step.md").write_text(_markdown(results))
    (out / "train_step.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
