"""Tests for experiments.registry: names, options, checks, registration of new norms."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import registry
from experiments.errors import ConfigError
from experiments.models import MLP
from experiments.registry import (
    NormContext,
    build_norm,
    check_norm,
    get_norm,
    known_norms,
    norm_defaults,
    register_norm,
)


def test_builtin_names():
    assert set(known_norms()) >= {"none", "batch", "layer", "rms", "group", "instance", "weight"}
    assert get_norm("weight").kind == "weight"
    assert norm_defaults("group") == {"num_groups": 8, "epsilon": 1e-6}


def test_unknown_norm_names_field():
    with pytest.raises(ConfigError, match=r"techniques.x.norm: unknown norm 'bacth'"):
        check_norm("bacth", {}, features=8, ndim=2, field_name="techniques.x")


def test_unknown_option_names_field():
    with pytest.raises(ConfigError, match=r"techniques.g.norm_options: unknown option.*'groups'"):
        check_norm("group", {"groups": 2}, features=8, ndim=2, field_name="techniques.g")


@pytest.mark.parametrize("groups", [3, 5])
def test_groups_must_divide_width(groups):
    with pytest.raises(ConfigError, match=rf"num_groups={groups} does not divide the 8"):
        check_norm("group", {"num_groups": groups}, features=8, ndim=2, field_name="t")


@pytest.mark.parametrize(("name", "options", "match"), [
    ("group", {"num_groups": 0}, "num_groups must be a positive integer"),
    ("batch", {"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ("layer", {"epsilon": 0.0}, "epsilon must be a number > 0"),
    ("instance", {}, "needs spatial axes"),
])
def test_option_checks(name, options, match):
    with pytest.raises(ConfigError, match=match):
        check_norm(name, options, features=8, ndim=2, field_name="t")


def test_instance_ok_on_conv_activations():
    check_norm("instance", {}, features=8, ndim=3, field_name="t")


def test_none_builds_nothing():
    assert build_norm("none", {}) == registry.NormLayers()


def test_group_norm_normalizes_groups_in_mlp():
    layers = build_norm("group", {"num_groups": 2, "epsilon": 1e-6})
    module = layers.norm(NormContext(2, 4, True), name="n")
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4)) * 5 + 2
    y, _ = module.init_with_output(jax.random.PRNGKey(1), x)
    groups = np.asarray(y).reshape(3, 2, 2)
    np.testing.assert_allclose(groups.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(groups.var(-1), 1.0, atol=1e-3)


def test_layer_norm_on_conv_runs_over_all_but_batch():
    module = build_norm("layer", {"epsilon": 1e-6}).norm(NormContext(3, 4, True), name="n")
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4)) * 3 + 1
    y, _ = module.init_with_output(jax.random.PRNGKey(1), x)
    np.testing.assert_allclose(np.asarray(y).reshape(2, -1).mean(-1), 0.0, atol=1e-5)


class _Scale(nn.Module):
    factor: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.factor


def test_register_norm_is_usable_by_models():
    def factory(ctx: NormContext, *, name: str, factor: float) -> nn.Module:
        return _Scale(factor, name=name)

    register_norm("test_scale", factory, defaults={"factor": 2.0}, overwrite=True)
    try:
        check_norm("test_scale", {"factor": 3.0}, features=8, ndim=2, field_name="t")
        model = MLP(num_classes=2, norms=build_norm("test_scale", {"factor": 0.0}), depth=1,
                    width=4, activation="identity")
        params = model.init(jax.random.PRNGKey(0), jnp.ones((2, 3)), train=False)
        out = model.apply(params, jnp.ones((2, 3)), train=False)
        np.testing.assert_allclose(out, jnp.broadcast_to(params["params"]["head"]["bias"],
                                                         (2, 2)))
    finally:
        registry._REGISTRY.pop("test_scale")


def test_register_norm_errors():
    with pytest.raises(ValueError, match="already registered"):
        register_norm("batch", lambda ctx, *, name: None)
    with pytest.raises(ValueError, match="kind must be one of"):
        register_norm("test_bad_kind", lambda ctx, *, name: None, kind="other")
    with pytest.raises(ValueError, match="non-empty identifier"):
        register_norm("bad name", lambda ctx, *, name: None)


def test_custom_check_message_is_reported():
    register_norm("test_checked", lambda ctx, *, name, k: None, defaults={"k": 1},
                  check=lambda opts, features, ndim: "k must be odd" if opts["k"] % 2 == 0
                  else None, overwrite=True)
    try:
        with pytest.raises(ConfigError, match=r"techniques.c.norm_options: k must be odd"):
            check_norm("test_checked", {"k": 2}, features=4, ndim=2, field_name="techniques.c")
    finally:
        registry._REGISTRY.pop("test_checked")
