"""Probes on saved train states (experiments/probes.py), checked against direct computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import probes
from experiments.checkpoint import read_state
from experiments.config import technique
from experiments.runner import load_data, run
from experiments.testing import initial_state, tiny_config
from experiments.train import deterministic_model
from experiments.typed_config import typed_config
from experiments.writer import read_jsonl


def _config(**techniques):
    config = tiny_config(**techniques)
    with config.unlocked():
        config.figures = False
    return config


def _one_run(state, r=0):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[r], state)


def test_grad_norms_at_init_match_the_runners_first_step(tmp_path):
    config = _config(batch=technique("batch"))
    with config.unlocked():  # full batch: the runner's first batch is the whole training set
        config.steps, config.log_every, config.batch_size = 1, 1, 64
    ds = load_data(config)
    hook = probes.ProbeHook(config, ds, tmp_path, probes.grad_norm_probe(batch_size=64))
    run(config, tmp_path, hooks=[hook])
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    probed = [r for r in read_jsonl(tmp_path / "probes.jsonl") if r["step"] == 0]
    assert len(probed) == config.num_seeds
    for row, probe in zip(rows, probed, strict=True):
        for key in ("grad_norm/layer_0", "grad_norm/layer_1", "grad_norm/head"):
            assert probe[key] == pytest.approx(row[key], rel=1e-4), key


def test_hook_probes_every_chunk_and_resumes_without_duplicates(tmp_path):
    config = _config(none=technique())
    ds = load_data(config)
    with config.unlocked():
        config.checkpoint_every_s = 1e9  # saved when the run stops or ends only
    probe = probes.input_quantile_probe(64, 4)
    run(config, tmp_path, max_chunks=1, hooks=[probes.ProbeHook(config, ds, tmp_path, probe)])
    run(config, tmp_path, hooks=[probes.ProbeHook(config, ds, tmp_path, probe)])
    rows = read_jsonl(tmp_path / "probes.jsonl")
    assert [r["step"] for r in rows] == [0, 0, 2, 2, 4, 4]
    hook = probes.ProbeHook(config, ds, tmp_path, probe)  # a chunk redone after a crash
    hook.chunk("none", 2, read_state(tmp_path, "none"))
    assert len(read_jsonl(tmp_path / "probes.jsonl")) == len(rows)
    q = np.asarray(rows[0]["input_q/layer_0"])
    assert q.shape == (4, 3) and np.all(np.diff(q, axis=1) >= 0)


def test_input_quantiles_are_those_of_the_preactivations(tmp_path):
    config = _config(none=technique())
    ds = load_data(config)
    state = _one_run(initial_state(config, "none", ds))
    fn = probes.input_quantile_probe(num_examples=64, num_units=8)(
        deterministic_model(typed_config(config), "none", ds), config, ds)
    x = ds.x_train[np.random.default_rng(0).permutation(len(ds.x_train))]
    layer = jax.tree_util.tree_map(np.asarray, state["params"]["layer_0"]["linear"])
    h = x @ layer["kernel"] + layer["bias"][None]
    values = fn(state)
    np.testing.assert_allclose(values["input_q/layer_0"],
                               np.quantile(h, [0.15, 0.5, 0.85], axis=0).T, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(values["output_q/layer_0"],  # the next layer's input
                               np.quantile(np.maximum(h, 0), [0.15, 0.5, 0.85], axis=0).T,
                               rtol=1e-5, atol=1e-5)


def test_precise_batch_stats_of_the_first_layer_are_the_population_stats():
    config = _config(batch=technique("batch"))
    ds = load_data(config)
    state = _one_run(initial_state(config, "batch", ds))
    model = deterministic_model(typed_config(config), "batch", ds)
    x = jnp.asarray(ds.x_train)
    stats = probes.precise_batch_stats(model, probes._variables(state), x.reshape(4, 16, -1))
    h = ds.x_train.astype(np.float64) @ np.asarray(state["params"]["layer_0"]["linear"]["kernel"])
    first = stats["layer_0"]["norm"]
    np.testing.assert_allclose(first["mean"], h.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(first["var"], h.var(0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(stats["layer_1"]["norm"]["var"], 1.0)  # replaced, not the init


def test_precise_bn_probe_beats_an_untouched_ema_after_training(tmp_path):
    config = _config(batch=technique("batch", momentum=0.999))
    with config.unlocked():
        config.steps, config.log_every, config.batch_size = 40, 40, 16
        config.optimizer.learning_rate = 0.05
    ds = load_data(config)
    hook = probes.ProbeHook(config, ds, tmp_path, probes.precise_bn_probe(num_batches=4))
    summary = run(config, tmp_path, hooks=[hook])
    precise = np.mean([r["precise/test_accuracy"] for r in read_jsonl(tmp_path / "probes.jsonl")
                       if r["step"] == config.steps])
    ema = summary["results"]["batch"]["final"]["test/accuracy"]["mean"]
    assert precise > ema  # the EMA with decay 0.999 still holds mostly its init after 40 steps


def test_landscape_probe_first_order():
    """For tiny steps, L(theta - eta g) - L(theta - 2 eta g) ~ eta ||g||^2 and dg ~ 0."""
    config = _config(none=technique(learning_rate=1e-4))
    ds = load_data(config)
    state = _one_run(initial_state(config, "none", ds))
    model = deterministic_model(typed_config(config), "none", ds)
    fn = probes.landscape_probe(factors=(1.0, 2.0))(model, config, ds)
    with jax.numpy_dtype_promotion("standard"):
        out = jax.jit(fn)(state)
    eta, g = float(out["landscape/eta"][0]), float(out["landscape/grad_norm"])
    assert float(out["landscape/eta"][1]) == pytest.approx(2 * eta)
    drop = float(out["landscape/loss"][0] - out["landscape/loss"][1])
    assert drop == pytest.approx(eta * g**2, rel=0.05)
    assert float(out["landscape/grad_change"][0]) < 0.01 * g


def test_errors(tmp_path):
    config = _config()
    with pytest.raises(FileNotFoundError, match="no checkpoint for technique 'none'"):
        read_state(tmp_path, "none")
    with pytest.raises(ValueError, match="every must be >= 1"):
        probes.ProbeHook(config, load_data(config), tmp_path, probes.grad_norm_probe(), every=0)


def test_weight_probe_by_formula():
    config = _config(none=technique())
    ds = load_data(config)
    state = _one_run(initial_state(config, "none", ds))
    fn = probes.weight_probe(threshold=0.05, edges=(-2, -1, 0))(
        deterministic_model(typed_config(config), "none", ds), config, ds)
    values = fn(state)
    hidden = np.concatenate([np.asarray(state["params"][f"layer_{i}"]["linear"]["kernel"])
                             .ravel() for i in (0, 1)])  # the head is left out
    w = np.abs(hidden)
    assert float(values["weights/near_zero"]) == pytest.approx(np.mean(w < 0.05))
    assert float(values["weights/l1"]) == pytest.approx(w.sum(), rel=1e-5)
    assert float(values["weights/l2"]) == pytest.approx(np.sqrt((w**2).sum()), rel=1e-5)
    hist = np.asarray(values["weights/log10_hist"])
    expected = np.bincount(np.searchsorted([-2, -1, 0], np.log10(w), side="right"),
                           minlength=4)
    np.testing.assert_array_equal(hist, expected)
