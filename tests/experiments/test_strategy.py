"""Run strategies (vmap / sequential / interleaved): choice, equal results, recording."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from experiments.config import technique
from experiments.data import load_dataset
from experiments.errors import ConfigError
from experiments.program import Program, make_experiment
from experiments.runner import load_data, run
from experiments.runs import make_grid
from experiments.strategy import MEASURE_STEPS, RUN_STRATEGIES, resolve_strategy
from experiments.testing import tiny_config
from experiments.typed_config import typed_config
from experiments.validation import validate_config

STRATEGIES = RUN_STRATEGIES[1:]


def _cnn_config(strategy: str = "auto", num_seeds: int = 2):
    config = tiny_config(batch=technique("batch", dropout=0.1))
    config.dataset.name = "digits"
    config.dataset.options = {}
    config.model.update(kind="cnn", depth=2, width=4, stride=2)
    config.num_seeds, config.run_strategy = num_seeds, strategy
    config.eval_train_examples, config.eval_batch_size = 64, 512
    return config


@pytest.mark.parametrize(("kind", "runs", "backend", "expected"), [
    ("cnn", 4, "cpu", "sequential"), ("mlp", 4, "cpu", "vmap"), ("cnn", 4, "gpu", "vmap"),
    ("cnn", 1, "cpu", "vmap"), ("mlp", 3, "tpu", "vmap")])
def test_auto_picks_by_backend_and_model(kind, runs, backend, expected):
    config = tiny_config()
    config.model.kind = kind
    choice = resolve_strategy(typed_config(config), runs, backend)
    assert choice.name == expected
    assert choice.reason.startswith("auto")


@pytest.mark.parametrize(("backend", "runs", "expected"), [
    ("cpu", 3, "stepwise"), ("cpu", 1, "stepwise"), ("gpu", 3, "vmap")])
def test_auto_steps_models_with_xla_convolutions_on_cpu(backend, runs, expected):
    config = tiny_config()
    assert resolve_strategy(typed_config(config), runs, backend, convolutions=True).name == expected
    config.run_strategy = "measure"
    assert resolve_strategy(typed_config(config), 3, backend, convolutions=True).name == "measure"


@pytest.mark.cpu_only
@pytest.mark.parametrize(("conv_impl", "expected"), [("xla", "stepwise"),
                                                      ("im2col", "sequential")])
def test_convolutions_are_found_in_the_traced_step(conv_impl, expected):
    config = _cnn_config()
    config.model.conv_impl = conv_impl
    ds = load_dataset("digits", seed=0)
    typed = typed_config(config)
    program = Program(make_experiment(typed, "batch", ds), ds, make_grid(typed, "batch"))
    assert program.strategy.name == expected


def test_has_convolutions_reads_the_traced_program():
    import flax.linen as nn

    from experiments.strategy import has_convolutions

    x = jax.ShapeDtypeStruct((2, 8, 8, 3), np.float32)
    conv, dense = nn.Conv(4, (3, 3)), nn.Dense(4)
    assert has_convolutions(lambda x: conv.init_with_output(jax.random.key(0), x)[0], x)
    assert not has_convolutions(lambda x: dense.init_with_output(jax.random.key(0), x)[0], x)


@pytest.mark.parametrize("name", STRATEGIES[:4])
def test_explicit_strategy_is_used_as_given(name):
    config = tiny_config()
    config.run_strategy = name
    assert resolve_strategy(typed_config(config), 5, "gpu") == (name, "set in the config")


def test_unknown_strategy_is_a_config_error_naming_the_field():
    config = tiny_config()
    config.run_strategy = "parallel"
    with pytest.raises(ConfigError, match=r"run_strategy must be one of .*'parallel'"):
        validate_config(config)


def _mlp_config(strategy: str):
    """Two seeds of a BatchNorm + dropout MLP: what the strategies must keep apart (per-run
    state, running statistics, dropout keys) is the same as a CNN's, at a third of the
    compile time."""
    config = tiny_config(batch=technique("batch", dropout=0.1))
    config.run_strategy, config.eval_train_examples = strategy, 64
    config.steps = config.log_every = MEASURE_STEPS  # measure times chunks of MEASURE_STEPS
    return config


def _train(strategy: str, steps: int = MEASURE_STEPS):
    """``steps`` defaults to the measured chunk's length: the programs compiled here are the
    ones ``run_strategy='measure'`` times (one compilation between the tests, cached)."""
    config = _mlp_config(strategy)
    ds = load_data(config)
    typed = typed_config(config)
    program = Program(make_experiment(typed, "batch", ds), ds, make_grid(typed, "batch"))
    assert program.strategy.name == strategy
    state, metrics, _ = program.train(program.init(), steps)
    evals, _ = program.evaluate(state)
    return jax.device_get(state), metrics, evals


def test_strategies_compute_the_same_runs_and_measure_keeps_the_fastest():
    """Two seeds of a BatchNorm + dropout MLP: the four strategies agree step by step; then
    ``measure`` times the same four chunks (compiled above: the compilation cache serves them)
    and keeps the fastest."""
    ref_state, ref_metrics, ref_evals = _train("vmap")
    assert ref_metrics["train/objective"].shape == (2, MEASURE_STEPS)
    for name in ("sequential", "interleaved", "stepwise"):
        state, metrics, evals = _train(name)
        for key, value in ref_metrics.items():
            np.testing.assert_allclose(metrics[key], value, rtol=2e-4, atol=1e-5, err_msg=key)
        for key, value in ref_evals.items():
            np.testing.assert_allclose(evals[key], value, rtol=2e-4, atol=1e-5, err_msg=key)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5),
                     state, ref_state)
    # the seeds differ from each other (the runs are not collapsed into one)
    assert not np.allclose(ref_metrics["train/objective"][0], ref_metrics["train/objective"][1])

    config = _mlp_config("measure")
    ds = load_data(config)
    typed = typed_config(config)
    program = Program(make_experiment(typed, "batch", ds), ds, make_grid(typed, "batch"))
    reason = program.strategy.reason  # chosen when the program is built: it never changes
    assert set(program.evaluate(program.init())[0]) >= {"test/accuracy"}
    state, metrics, _ = program.train(program.init(), MEASURE_STEPS)
    assert program.strategy.reason == reason
    assert reason.startswith("measured:")
    times = dict(part.rsplit(" ", 1) for part in reason.split(": ", 2)[-1].split(", "))
    assert set(times) == {"vmap", "sequential", "interleaved", "stepwise"}
    # the kept strategy has the smallest printed time (ties after rounding allowed)
    assert float(times[program.strategy.name]) == min(float(v) for v in times.values())
    assert int(state.step[0]) == MEASURE_STEPS  # the probes ran on copies of the state
    np.testing.assert_allclose(metrics["train/objective"], ref_metrics["train/objective"],
                               rtol=2e-4, atol=1e-5)
    evals, _ = program.evaluate(state)
    assert set(evals) >= {"test/accuracy", "train/loss"}


@pytest.mark.cpu_only  # "auto" picks per backend; this pins the CPU's choice
def test_strategy_is_recorded_and_resume_may_switch(tmp_path):
    config = _cnn_config("auto")
    config.steps, config.log_every = 4, 2
    first = run(config, tmp_path, max_chunks=1)
    entry = first["results"]["batch"]
    assert entry["status"] == "incomplete (step 2 of 4)"
    assert entry["run_strategy"].startswith("sequential (auto: CNN on cpu")
    config.run_strategy = "vmap"  # not part of the checkpoint fingerprint
    summary = run(config, tmp_path)
    assert summary["results"]["batch"]["status"] == "ok"
    assert summary["results"]["batch"]["run_strategy"] == "vmap (set in the config)"
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["results"]["batch"]["run_strategy"] == "vmap (set in the config)"
    assert saved["allocator"]
    assert saved["cpu_kernels"].startswith(("loaded ", "off: "))
    assert "- runs of each technique executed: vmap (set in the config)" in (
        tmp_path / "report.md").read_text()


def test_measure_skips_interleaved_for_many_runs():
    from experiments.strategy import MAX_MEASURED_INTERLEAVED, measured_strategies

    assert measured_strategies(2) == ("vmap", "sequential", "interleaved", "stepwise")
    assert measured_strategies(MAX_MEASURED_INTERLEAVED + 1) == ("vmap", "sequential",
                                                                 "stepwise")


def test_measure_with_one_run_is_vmap():
    config = _cnn_config("measure", num_seeds=1)
    assert resolve_strategy(typed_config(config), 1) == ("vmap", "measure: a single run")


@pytest.mark.cpu_only  # four host devices
@pytest.mark.parametrize("name", ["sequential", "interleaved"])
def test_looped_strategies_shard_the_batch_like_vmap(name):
    """On 4 devices, a looped strategy trains the runs as vmap on one device does."""
    from experiments.parallel import from_config

    results = {}
    for strategy, devices in (("vmap", 1), (name, 4)):
        config = tiny_config(batch=technique("batch"))
        config.run_strategy, config.devices = strategy, devices
        ds = load_dataset("synthetic", seed=0, **config.dataset.options.to_dict())
        typed = typed_config(config)
        par = from_config(typed)
        exp = make_experiment(typed, "batch", ds, par if par.num_devices > 1 else None)
        program = Program(exp, ds, make_grid(typed, "batch"))
        _, metrics, _ = program.train(program.init(), 3)
        results[strategy] = metrics["train/objective"]
    np.testing.assert_allclose(results[name], results["vmap"], rtol=1e-5)
