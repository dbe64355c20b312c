"""Tests for experiments.registry_research: the research norms by name, wired into the runner."""

from __future__ import annotations

import math
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.config import technique
from experiments.errors import ConfigError
from experiments.models import CNN, MLP
from experiments.registry import NormContext, build_norm, check_norm, get_norm, known_norms
from experiments.registry_research import RESEARCH_NORMS
from experiments.runner import run
from experiments.testing import shrink, tiny_config
from experiments.writer import read_jsonl

STATEFUL = ("ghost_batch", "batch_renorm", "decorrelated_batch", "evonorm_b0", "switchable",
            "spectral")
# options that fit the width-8 tiny models (the defaults suit width 64, batch 64)
TINY_OPTIONS = {"ghost_batch": {"virtual_batch_size": 8},
                "decorrelated_batch": {"group_size": 4},
                "evonorm_s0": {"num_groups": 2},
                "weight_standardization": {"scaled": True, "gamma": 1.7}}
CNN_ONLY = ("evonorm_b0", "switchable")


def test_names_kinds_and_centering():
    assert set(RESEARCH_NORMS) <= set(known_norms())
    assert known_norms()[:7] == ("none", "batch", "layer", "rms", "group", "instance", "weight")
    weight = {n for n in RESEARCH_NORMS if get_norm(n).kind == "weight"}
    assert weight == {"weight_standardization", "spectral"}
    centering = {n for n in RESEARCH_NORMS if get_norm(n).centers}
    assert centering == {"ghost_batch", "batch_renorm", "decorrelated_batch"}


def _config(kind: str, names: tuple[str, ...]):
    techs = {name: technique(name, **TINY_OPTIONS.get(name, {})) for name in names}
    config = shrink(tiny_config(**techs))
    config.figures, config.model.depth, config.log_every = False, 1, 2
    if kind == "cnn":
        config.dataset.name, config.dataset.options = "digits", {}
        config.model.update(kind="cnn", stride=2)
    return config


@pytest.mark.parametrize("stateful", [True, False], ids=["stateful", "stateless"])
def test_runner_trains_every_research_norm(stateful, tmp_path):
    """Every research norm through the runner (CNN: every norm takes conv activations; two
    halves, so the two test workers share them)."""
    names = tuple(n for n in RESEARCH_NORMS if (n in STATEFUL) is stateful)
    summary = run(_config("cnn", names), tmp_path)
    assert sorted(summary["results"]) == sorted(names)
    for name in names:
        entry = summary["results"][name]
        assert (entry["status"], entry["step"]) == ("ok", 2), name
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert sorted(r["technique"] for r in rows) == sorted(names)
    for row in rows:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), row
        # running statistics / power-iteration state live in batch_stats
        assert ("test_batch_stats/accuracy" in row) is stateful


@pytest.mark.parametrize("name", [n for n in RESEARCH_NORMS if n not in CNN_ONLY])
def test_mlp_with_each_research_norm_trains_and_evaluates(name):
    """The MLP path (activations of rank 2): a training-mode and an eval-mode pass, jitted."""
    options = {**get_norm(name).defaults, **TINY_OPTIONS.get(name, {})}
    model = MLP(num_classes=3, norms=build_norm(name, options), depth=2, width=8)
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
    variables = jax.jit(partial(model.init, train=False))(jax.random.PRNGKey(1), x)
    logits, mutated = jax.jit(partial(model.apply, train=True, mutable=["batch_stats"]))(
        variables, x)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(
        {**variables, "params": p}, x, train=True, mutable=["batch_stats"])[0] ** 2)))(
        variables["params"])
    out = jax.jit(partial(model.apply, train=False))({**variables, **mutated}, x)
    for tree in (logits, grads, out):
        assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)), name
    assert bool(jax.tree_util.tree_leaves(variables.get("batch_stats", {}))) is (
        name in STATEFUL)


@pytest.mark.parametrize("name", STATEFUL)
def test_training_updates_state_and_evaluation_uses_it(name):
    model = CNN(num_classes=3, norms=build_norm(name, {**get_norm(name).defaults,
                                                       **TINY_OPTIONS.get(name, {})}),
                depth=1, width=8)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 5, 2))
    variables = jax.jit(partial(model.init, train=False))(jax.random.PRNGKey(1), x)
    _, mutated = jax.jit(partial(model.apply, train=True, mutable=["batch_stats"]))(
        variables, x)
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                     variables["batch_stats"], mutated["batch_stats"])
    assert any(jax.tree_util.tree_leaves(changed)), name
    trained = {**variables, **mutated}
    evaluate = jax.jit(partial(model.apply, train=False))  # needs no mutable collection
    out = evaluate(trained, x)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, evaluate(trained, x))


@pytest.mark.parametrize(("name", "has_bias"), [("ghost_batch", False), ("batch_renorm", False),
                                                ("decorrelated_batch", False), ("frn", True),
                                                ("evonorm_s0", True), ("switchable", True)])
def test_linear_bias_dropped_only_before_centering_norms(name, has_bias):
    opts = {**get_norm(name).defaults, **TINY_OPTIONS.get(name, {})}
    model = CNN(num_classes=3, norms=build_norm(name, opts), depth=1, width=8)
    params = jax.eval_shape(partial(model.init, train=False), jax.random.PRNGKey(0),
                            jnp.ones((2, 4, 1)))["params"]  # the structure only
    assert ("bias" in params["layer_0"]["linear"]) is has_bias


ACTIVATION_OPTIONS = [
    ("ghost_batch", {"virtual_batch_size": 4, "momentum": 0.8, "epsilon": 1e-3}),
    ("batch_renorm", {"r_max": 2.0, "d_max": 1.5, "momentum": 0.7, "epsilon": 1e-4}),
    ("decorrelated_batch", {"group_size": 2, "momentum": 0.6, "epsilon": 1e-3}),
    ("frn", {"epsilon": 1e-4, "learned_epsilon": False}),
    ("evonorm_b0", {"momentum": 0.5, "epsilon": 1e-3}),
    ("evonorm_s0", {"num_groups": 4, "epsilon": 1e-3}),
    ("switchable", {"momentum": 0.5, "epsilon": 1e-3}),
]


@pytest.mark.parametrize(("name", "options"), ACTIVATION_OPTIONS)
@pytest.mark.parametrize("use_running_average", [False, True])
def test_options_reach_the_layer(name, options, use_running_average):
    assert set(options) == set(get_norm(name).defaults)
    module = build_norm(name, options).norm(NormContext(3, 8, use_running_average), name="n")
    for key, value in options.items():
        assert getattr(module, key) == value, key
    if name in STATEFUL:
        assert module.use_running_average is use_running_average


@pytest.mark.parametrize(("name", "options"), [
    ("weight_standardization", {"scaled": True, "gamma": 1.5}),
    ("spectral", {"n_steps": 3, "epsilon": 1e-8}),
])
def test_weight_options_reach_the_wrapper(name, options):
    assert set(options) == set(get_norm(name).defaults)
    module = build_norm(name, options).wrap_linear(nn.Dense(3), name="w")
    for key, value in options.items():
        assert getattr(module, key) == value, key


def test_ghost_batch_normalizes_each_virtual_batch():
    module = build_norm("ghost_batch", {"virtual_batch_size": 4, "momentum": 0.9,
                                        "epsilon": 1e-6}).norm(NormContext(2, 3, False), name="n")
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 3)) * 3 + jnp.arange(8.0)[:, None]
    y, _ = module.init_with_output(jax.random.PRNGKey(1), x)
    groups = np.asarray(y).reshape(2, 4, 3)
    np.testing.assert_allclose(groups.mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(groups.var(1), 1.0, atol=1e-4)


def _wrapped_dense(name: str, options: dict) -> nn.Module:
    return build_norm(name, options).wrap_linear(nn.Dense(3), name="w")


@pytest.mark.parametrize("scaled", [False, True])
def test_weight_standardization_matches_formula(scaled):
    gamma = 1.7 if scaled else 1.0
    module = _wrapped_dense("weight_standardization", {"scaled": scaled, "gamma": gamma})
    eye = jnp.eye(5)
    variables = module.init(jax.random.PRNGKey(0), eye)
    w = np.asarray(variables["params"]["layer_instance"]["kernel"], np.float64)
    mean, var = w.mean(0), w.var(0)
    expected = (gamma * (w - mean) / np.sqrt(np.maximum(5 * var, 1e-4)) if scaled
                else (w - mean) / np.sqrt(var + 1e-5))
    np.testing.assert_allclose(module.apply(variables, eye), expected, rtol=1e-5, atol=1e-6)


def test_spectral_updates_only_when_batch_stats_are_mutable():
    module = _wrapped_dense("spectral", {"n_steps": 1, "epsilon": 1e-12})
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 6))
    variables = module.init(jax.random.PRNGKey(1), x)
    sigma_key = "layer_instance/kernel/sigma"
    assert float(variables["batch_stats"][sigma_key]) == 1.0  # initializing: no update
    step = jax.jit(lambda v: module.apply(v, x, mutable=["batch_stats"])[1])
    for _ in range(30):
        variables = {**variables, **step(variables)}
    w = np.asarray(variables["params"]["layer_instance"]["kernel"], np.float64)
    top = np.linalg.svd(w, compute_uv=False)[0]
    np.testing.assert_allclose(variables["batch_stats"][sigma_key], top, rtol=1e-4)
    # immutable batch_stats: no update is attempted (flax would raise on one)
    np.testing.assert_allclose(module.apply(variables, x), x @ w / top, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "options", "ndim", "match"), [
    ("ghost_batch", {"virtual_batch_size": 0}, 2, "virtual_batch_size must be an integer >= 1"),
    ("ghost_batch", {"virtual_batch_size": 1}, 2, "virtual_batch_size=1 on MLP activations"),
    ("ghost_batch", {"momentum": 1.0}, 3, r"momentum must be a number in \[0.0, 1.0\)"),
    ("batch_renorm", {"r_max": 0.5}, 2, r"r_max must be a number in \[1.0, inf\)"),
    ("batch_renorm", {"d_max": -1.0}, 2, r"d_max must be a number in \[0.0, inf\)"),
    ("decorrelated_batch", {"group_size": 3}, 2, "group_size=3 does not divide the 8 channels"),
    ("decorrelated_batch", {"group_size": 2.0}, 2, "group_size must be an integer"),
    ("frn", {"epsilon": 0.0}, 3, r"epsilon must be a number in \(0.0, inf\)"),
    ("frn", {"learned_epsilon": 1}, 3, "learned_epsilon must be True or False"),
    ("evonorm_b0", {}, 2, "norm 'evonorm_b0' needs spatial axes"),
    ("evonorm_s0", {"num_groups": 3}, 3, "num_groups=3 does not divide the 8 channels"),
    ("evonorm_s0", {"num_groups": 8}, 2, "num_groups=8 puts one channel in each group"),
    ("switchable", {}, 2, "norm 'switchable' needs spatial axes"),
    ("weight_standardization", {"gamma": 1.7}, 2, "gamma=1.7 applies to scaled weight"),
    ("weight_standardization", {"scaled": "yes"}, 2, "scaled must be True or False"),
    ("spectral", {"n_steps": 0}, 2, "n_steps must be an integer >= 1"),
])
def test_bad_options_name_the_field(name, options, ndim, match):
    with pytest.raises(ConfigError, match=rf"techniques\.t\.norm_options: {match}"):
        check_norm(name, options, features=8, ndim=ndim, field_name="techniques.t")


def test_good_options_pass_the_checks():
    for name in RESEARCH_NORMS:
        check_norm(name, TINY_OPTIONS.get(name, {}), features=8, ndim=3, field_name="t")
    check_norm("evonorm_s0", {"num_groups": 8}, features=8, ndim=3, field_name="t")


def test_runner_rejects_bad_options_before_training(tmp_path):
    config = tiny_config(s0=technique("evonorm_s0", num_groups=3))
    with pytest.raises(ConfigError, match=r"techniques\.s0\.norm_options: num_groups=3 does "
                                          r"not divide the 8 channels"):
        run(config, tmp_path)
    assert not list(tmp_path.iterdir())


def test_ghost_batch_not_dividing_the_batch_fails_before_any_step(tmp_path):
    config = shrink(tiny_config(ghost=technique("ghost_batch", virtual_batch_size=5)))
    config.figures = False
    with pytest.raises(ConfigError, match=r"norm_options\.virtual_batch_size=5 does not divide "
                                          r"the batch of 16 examples"):
        run(config, tmp_path)
    metrics = tmp_path / "metrics.jsonl"
    assert not metrics.exists() or read_jsonl(metrics) == []
