"""WeightNorm's data-dependent init and its runner hook (experiments/data_init.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.checkpoint import read_state
from experiments.config import technique
from experiments.data_init import SCALE_KEY, DataInit, weight_norm_data_init
from experiments.hooks import Hook
from experiments.probes import preactivations
from experiments.runner import load_data, run
from experiments.testing import initial_state, tiny_config
from experiments.train import build_model
from experiments.typed_config import typed_config


def _setup(norm: str = "weight"):
    config = tiny_config(wn=technique(norm))
    with config.unlocked():
        config.figures = False
    ds = load_data(config)
    typed = typed_config(config)
    model = build_model(typed, typed.techniques["wn"], num_classes=ds.num_classes,
                        use_dropout=False)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8)), train=False)["params"]
    return config, ds, model, params


def test_every_layer_starts_standardized_on_the_batch():
    _, ds, model, params = _setup()
    x = jnp.asarray(ds.x_train)
    before = preactivations(model, {"params": params}, x)
    new = weight_norm_data_init(model, params, x)
    after = preactivations(model, {"params": new}, x)
    for name in ("layer_0", "layer_1"):
        h = np.asarray(after[name], np.float64)
        np.testing.assert_allclose(h.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(h.var(0), 1.0, rtol=1e-3)
        assert not np.allclose(np.asarray(before[name]).var(0), 1.0, rtol=1e-2)
    # only the WeightNorm scales and the biases change; v (the kernel) does not
    np.testing.assert_array_equal(new["layer_0"]["linear"]["kernel"],
                                  params["layer_0"]["linear"]["kernel"])
    assert not np.allclose(new["layer_0"]["weight_norm"][SCALE_KEY],
                           params["layer_0"]["weight_norm"][SCALE_KEY])


def test_rejects_models_without_weight_norm():
    _, ds, model, params = _setup("batch")
    with pytest.raises(ValueError, match="needs blocks 'layer_<i>' with a weight_norm scale"):
        weight_norm_data_init(model, params, jnp.asarray(ds.x_train))


def test_data_init_hook_sets_the_params_the_runner_trains_from(tmp_path):
    config, ds, _, _ = _setup()
    hook = DataInit(config, ds, ["wn"], weight_norm_data_init, num_examples=64)
    initial = initial_state(config, "wn", ds)
    seen = []

    class Record(Hook):  # sees the state after DataInit, in memory
        def init(self, technique, state):
            seen.append(jax.tree.map(np.asarray, state.params))
            return state

    summary = run(config, tmp_path, hooks=[hook, Record()])
    assert summary["results"]["wn"]["status"] == "ok"
    scales = seen[0]["layer_0"]["weight_norm"][SCALE_KEY]
    assert scales.shape == (config.num_seeds, config.model.width) and not np.allclose(scales, 1)
    x = jnp.asarray(ds.x_train[np.random.default_rng(0).permutation(len(ds.x_train))[:64]])
    typed = typed_config(config)
    model = build_model(typed, typed.techniques["wn"], num_classes=ds.num_classes,
                        use_dropout=False)
    for r in range(config.num_seeds):  # each run: the transform of its own initial params
        run_params = jax.tree.map(lambda a, r=r: a[r], initial["params"])
        want = weight_norm_data_init(model, run_params, x)
        np.testing.assert_allclose(seen[0]["layer_0"]["weight_norm"][SCALE_KEY][r],
                                   want["layer_0"]["weight_norm"][SCALE_KEY], rtol=1e-5)
    trained = read_state(tmp_path, "wn")
    assert np.all(np.asarray(trained["step"]) == config.steps)
    assert DataInit(config, ds, ["other"], weight_norm_data_init).init("wn", "s") == "s"
