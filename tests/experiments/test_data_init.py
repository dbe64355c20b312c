"""WeightNorm's data-dependent init and seeded checkpoints (experiments/data_init.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.config import technique
from experiments.data_init import SCALE_KEY, seed_checkpoint, weight_norm_data_init
from experiments.probes import preactivations, read_state
from experiments.runner import load_data, run
from experiments.testing import tiny_config
from experiments.train import build_model


def _setup(norm: str = "weight"):
    config = tiny_config(wn=technique(norm))
    with config.unlocked():
        config.figures = False
    ds = load_data(config)
    model = build_model(config, config.techniques.wn, num_classes=ds.num_classes,
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


def test_seeded_checkpoint_is_resumed_by_the_runner_and_not_overwritten(tmp_path):
    config, ds, _, _ = _setup()
    seed_checkpoint(config, "wn", ds, tmp_path, weight_norm_data_init, num_examples=64)
    seeded = read_state(tmp_path, "wn")
    assert np.all(np.asarray(seeded["step"]) == 0)
    scales = np.asarray(seeded["params"]["layer_0"]["weight_norm"][SCALE_KEY])
    assert scales.shape == (config.num_seeds, config.model.width) and not np.allclose(scales, 1)
    summary = run(config, tmp_path)
    assert summary["results"]["wn"]["status"] == "ok"
    trained = read_state(tmp_path, "wn")
    assert np.all(np.asarray(trained["step"]) == config.steps)
    seed_checkpoint(config, "wn", ds, tmp_path, weight_norm_data_init)  # resuming: kept
    assert np.all(np.asarray(read_state(tmp_path, "wn")["step"]) == config.steps)
