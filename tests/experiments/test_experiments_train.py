"""Tests for experiments.train / optim / runs / program: the pure step and its vmapped program."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.config import technique
from experiments.optim import lr_factor, make_optimizer
from experiments.program import Program, make_eval_set, make_experiment
from experiments.runner import load_data
from experiments.runs import make_grid
from experiments.testing import tiny_config
from experiments.train import batch_indices
from experiments.typed_config import typed_config


def test_batch_indices_cover_each_epoch_once():
    key = jax.random.PRNGKey(3)
    fn = jax.jit(batch_indices, static_argnums=(2, 3))
    epoch0 = np.concatenate([fn(key, jnp.int32(s), 10, 3) for s in range(3)])
    epoch1 = np.concatenate([fn(key, jnp.int32(s), 10, 3) for s in range(3, 6)])
    assert len(set(epoch0.tolist())) == 9 and len(set(epoch1.tolist())) == 9
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(fn(key, jnp.int32(4), 10, 3), epoch1[3:6])


def test_lr_factors():
    cosine = lr_factor("cosine", steps=10)
    assert float(cosine(0)) == 1.0 and abs(float(cosine(5)) - 0.5) < 1e-6
    assert abs(float(cosine(10))) < 1e-6
    warm = lr_factor("linear", steps=12, warmup_steps=2)
    assert [round(float(warm(t)), 4) for t in (0, 1, 2, 7, 12)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert float(lr_factor("constant", steps=5)(4)) == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_factor("step", steps=5)


def _update(name: str, wd: float, grads, params, **fields):
    config = tiny_config()
    config.optimizer.update(name=name, **fields)
    tx = make_optimizer(typed_config(config).optimizer, steps=10, learning_rate=0.1,
                        weight_decay=wd)
    with jax.numpy_dtype_promotion("standard"):
        return tx.update(grads, tx.init(params), params)


def test_sgd_with_decoupled_decay_on_kernels_only():
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    grads = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full(2, 2.0)}
    updates, state = _update("sgd", 0.5, grads, params)
    np.testing.assert_allclose(updates["kernel"], -0.1 * (2.0 + 0.5), rtol=1e-6)
    np.testing.assert_allclose(updates["bias"], -0.1 * 2.0, rtol=1e-6)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.1)


def test_adam_matches_optax():
    params = {"kernel": jnp.ones((2, 2))}
    grads = {"kernel": jnp.asarray([[1.0, -2.0], [0.5, 3.0]])}
    updates, _ = _update("adam", 0.0, grads, params)
    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes dtypes
        ref, _ = optax.adam(0.1).update(grads, optax.adam(0.1).init(params), params)
    np.testing.assert_allclose(updates["kernel"], ref["kernel"], rtol=1e-6)


def test_grad_clipping():
    params = {"kernel": jnp.ones((1, 2))}
    grads = {"kernel": jnp.asarray([[30.0, 40.0]])}
    updates, _ = _update("sgd", 0.0, grads, params, grad_clip_norm=1.0)
    np.testing.assert_allclose(updates["kernel"], [[-0.06, -0.08]], rtol=1e-5)


def test_grid_order_labels_and_overrides():
    config = tiny_config(t=technique(dropout=0.2, learning_rate=0.05))
    config.num_seeds, config.seed = 2, 7
    config.sweep.l2 = (0.0, 0.1)
    grid = make_grid(typed_config(config), "t")
    assert grid.seeds.tolist() == [7, 8, 7, 8] and grid.cell.tolist() == [0, 0, 1, 1]
    assert grid.labels == ["t[l2=0]", "t[l2=0.1]"]
    assert grid.hparams["l2"].tolist() == [0.0, 0.0, 0.1, 0.1]
    assert grid.hparams["learning_rate"].tolist() == [0.05] * 4
    assert grid.hparams["dropout"].tolist() == [0.2] * 4
    plain = make_grid(typed_config(tiny_config()), "none")
    assert plain.labels == ["none"] and plain.hparams["learning_rate"].tolist() == [0.01] * 2


def test_make_eval_set_pads_with_zero_weight():
    x, y = np.arange(10, dtype=np.float32)[:, None], np.arange(10, dtype=np.int32)
    padded = make_eval_set(x, y, 4)
    assert padded.x.shape == (3, 4, 1) and float(padded.weight.sum()) == 10
    dropped = make_eval_set(x, y, 4, drop_remainder=True)
    assert dropped.x.shape == (2, 4, 1) and float(dropped.weight.sum()) == 8


def _program(config, label="t"):
    ds = load_data(config)
    config = typed_config(config)
    return Program(make_experiment(config, label, ds), ds, make_grid(config, label))


def _trained(config, steps=3):
    program = _program(config)
    state, metrics, _ = program.train(program.init(), steps)
    return jax.device_get(state), metrics


def test_vmapped_runs_equal_single_runs():
    """Seeds x learning rates in one vmapped program == each run alone (to 1e-5)."""
    def config(seed, num_seeds, lrs):
        c = tiny_config(t=technique("batch", dropout=0.3, l2=1e-3))
        c.seed, c.num_seeds = seed, num_seeds
        c.sweep.learning_rate = lrs
        return c

    state, metrics = _trained(config(0, 2, (0.01, 0.03)))
    run = 3  # the second seed at the second learning rate
    alone_state, alone = _trained(config(1, 1, (0.03,)))
    for key in ("train/batch_loss", "grad_norm/layer_0", "act_std/layer_1"):
        np.testing.assert_allclose(metrics[key][run], alone[key][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(state.params),
                    jax.tree_util.tree_leaves(alone_state.params), strict=True):
        np.testing.assert_allclose(a[run], b[0], rtol=1e-5, atol=1e-6)
    losses = metrics["train/batch_loss"]
    assert not np.allclose(losses[2], losses[3]) and not np.allclose(losses[1], losses[3])


def test_step_metrics_init_scale_and_penalty():
    config = tiny_config(t=technique(l2=0.5))
    config.sweep.init_scale = (1.0, 2.0)
    config.num_seeds = 1
    program = _program(config)
    state = jax.device_get(program.init())
    k1, k2 = state.params["layer_0"]["linear"]["kernel"]
    np.testing.assert_allclose(k2, 2 * k1, rtol=1e-6)
    np.testing.assert_array_equal(*state.params["head"]["bias"])
    sq = sum(np.sum(np.square(p[0])) for path, p in jax.tree_util.tree_leaves_with_path(
        state.params) if path[-1].key == "kernel")
    _, metrics, _ = program.train(program.init(), 1)
    np.testing.assert_allclose(metrics["train/penalty"][0, 0], 0.5 * 0.5 * sq, rtol=1e-5)
    layers = [metrics[f"grad_norm/{n}"][:, 0] for n in ("layer_0", "layer_1", "head")]
    np.testing.assert_allclose(np.sqrt(np.sum(np.square(layers), 0)),
                               metrics["grad_norm/total"][:, 0], rtol=1e-5)
    assert set(metrics) >= {"train/batch_accuracy", "train/learning_rate", "act_mean/layer_0"}


def test_eval_modes_only_with_batch_stats():
    config = tiny_config(t=technique("layer"))
    program = _program(config)
    metrics, seconds = program.evaluate(program.init())
    assert sorted(metrics) == ["test/accuracy", "test/loss", "train/accuracy", "train/loss"]
    assert program.has_batch_stats is False and seconds >= 0
    assert np.all((metrics["test/accuracy"] >= 0) & (metrics["test/accuracy"] <= 1))
