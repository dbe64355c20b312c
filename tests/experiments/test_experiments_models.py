"""Tests for experiments.models: im2col convolution, MLP/CNN structure, injected norms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from experiments.models import CNN, MLP, kernel_init_name, patch_conv
from experiments.registry import build_norm

KEY = jax.random.PRNGKey(0)


def _init(model, x):
    return jax.jit(lambda x: model.init(KEY, x, train=False))(x)


def _apply(model, variables, x, **kwargs):
    """``model.apply(variables, x, train=False, **kwargs)``, jitted: one compile, not one per op."""
    return jax.jit(lambda v, x: model.apply(v, x, **{"train": False, **kwargs}))(variables, x)


@pytest.mark.parametrize(("shape", "kernel", "strides"), [
    ((3, 40, 2), (5,), (2,)), ((2, 7, 1), (4,), (3,)), ((2, 9, 9, 2), (3, 3), (2, 2)),
    ((2, 8, 7, 3), (3, 2), (1, 2)), ((1, 3, 1), (5,), (1,)),
])
def test_patch_conv_matches_lax_conv(shape, kernel, strides):
    x = jax.random.normal(KEY, shape)
    w = jax.random.normal(jax.random.PRNGKey(1), (*kernel, shape[-1], 4))
    dims = ("NWC", "WIO", "NWC") if len(kernel) == 1 else ("NHWC", "HWIO", "NHWC")
    ref = lax.conv_general_dilated(x, w, strides, "SAME", dimension_numbers=dims)
    out = jax.jit(patch_conv, static_argnums=2)(x, w, strides)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_cnn_im2col_equals_flax_conv():
    x = jax.random.normal(KEY, (3, 5, 5, 2))
    kwargs = {"num_classes": 3, "depth": 2, "width": 4, "kernel_size": 3, "stride": 2}
    fast, ref = CNN(**kwargs, conv_impl="im2col"), CNN(**kwargs, conv_impl="xla")
    variables = _init(fast, x)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
        jax.eval_shape(lambda: ref.init(KEY, x, train=False)))
    np.testing.assert_allclose(_apply(fast, variables, x), _apply(ref, variables, x),
                               rtol=1e-5, atol=1e-5)


def test_mlp_structure_and_intermediates():
    model = MLP(num_classes=5, depth=3, width=6)
    x = jnp.ones((2, 4, 4, 1))
    variables = _init(model, x)
    assert sorted(variables["params"]) == ["head", "layer_0", "layer_1", "layer_2"]
    assert variables["params"]["layer_0"]["linear"]["kernel"].shape == (16, 6)
    logits, state = _apply(model, variables, x, mutable=["intermediates"])
    assert logits.shape == (2, 5)
    assert state["intermediates"]["layer_2"]["activation"][0].shape == (2, 6)


def test_depth_zero_is_linear():
    model = MLP(num_classes=3, depth=0)
    x = jax.random.normal(KEY, (2, 5))
    variables = _init(model, x)
    assert list(variables["params"]) == ["head"]
    head = variables["params"]["head"]
    np.testing.assert_allclose(_apply(model, variables, x),
                               x @ head["kernel"] + head["bias"][None], rtol=1e-6)


@pytest.mark.parametrize(("shape", "out"), [((2, 40, 1), (2, 5, 8)), ((2, 8, 8, 1), (2, 1, 1, 8))])
def test_cnn_shapes(shape, out):
    model = CNN(num_classes=10, depth=3, width=8, kernel_size=5, stride=2)
    shapes = jax.eval_shape(lambda x: model.apply(model.init(KEY, x, train=False), x,
                                                  train=False, mutable=["intermediates"]),
                            jnp.ones(shape))
    logits, state = shapes
    assert logits.shape == (2, 10)
    assert state["intermediates"]["layer_2"]["activation"][0].shape == out


def test_cnn_rejects_flat_inputs():
    with pytest.raises(ValueError, match=r"CNN expects \(N, L, C\) or \(N, H, W, C\)"):
        CNN(num_classes=2).init(KEY, jnp.ones((2, 8)), train=False)


def _sown(model, x):
    variables = _init(model, x)
    _, state = _apply(model, variables, x, train=True, mutable=["batch_stats", "intermediates"])
    return np.asarray(state["intermediates"]["layer_0"]["activation"][0])


def test_norm_position():
    x = jax.random.normal(KEY, (32, 6)) * 3 + 2
    kwargs = {"num_classes": 2, "depth": 1, "width": 8, "norms": build_norm("batch", {})}
    before = _sown(MLP(**kwargs, norm_position="before_activation"), x)
    after = _sown(MLP(**kwargs, norm_position="after_activation"), x)
    assert before.min() >= 0  # relu last
    np.testing.assert_allclose(after.mean(0), 0.0, atol=1e-5)  # batch norm last


def test_batch_norm_modes_differ_and_eval_leaves_stats():
    model = MLP(num_classes=2, depth=1, width=4, norms=build_norm("batch", {}))
    x = jax.random.normal(KEY, (16, 3)) * 4 + 3
    variables = _init(model, x)
    running = _apply(model, variables, x)
    batch, state = _apply(model, variables, x, use_running_average=False,
                          mutable=["batch_stats"])
    assert not np.allclose(running, batch)
    # what BN computes with the batch's own statistics equals standardizing by them
    again = _apply(model, {**variables, "batch_stats": state["batch_stats"]}, x,
                   use_running_average=False, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(again, batch, rtol=1e-6)


def test_dropout_rate_is_a_traced_call_argument():
    model = MLP(num_classes=2, depth=1, width=64, use_dropout=True, activation="identity")
    x = jnp.ones((4, 3))
    variables = _init(model, x)

    @jax.jit
    def sown(rate):
        _, state = model.apply(variables, x, train=True, dropout_rate=rate,
                               rngs={"dropout": KEY}, mutable=["intermediates"])
        return state["intermediates"]["layer_0"]["activation"][0]

    def output(rate):
        return model.apply(variables, x, train=True, dropout_rate=rate, rngs={"dropout": KEY})

    rates = jnp.array([0.0, 0.5], jnp.float32)
    outs = jax.jit(jax.vmap(output))(rates)
    np.testing.assert_allclose(outs[0], _apply(model, variables, x), rtol=1e-6)
    assert not np.allclose(outs[1], outs[0])
    np.testing.assert_allclose(sown(0.5), sown(0.0))  # sown before dropout
    np.testing.assert_allclose(_apply(model, variables, x, dropout_rate=0.5), outs[0],
                               rtol=1e-6)


@pytest.mark.parametrize(("norm", "position", "bias"), [
    ("batch", "before_activation", False), ("group", "before_activation", False),
    ("batch", "after_activation", True), ("rms", "before_activation", True),
    ("none", "before_activation", True),
])
def test_linear_bias_dropped_before_centering_norms(norm, position, bias):
    options = {"num_groups": 2} if norm == "group" else {}
    model = MLP(num_classes=2, depth=1, width=4, norms=build_norm(norm, options),
                norm_position=position)
    shapes = jax.eval_shape(lambda: model.init(KEY, jnp.ones((2, 3)), train=False))
    assert ("bias" in shapes["params"]["layer_0"]["linear"]) is bias


@pytest.mark.parametrize(("activation", "expected"), [
    ("relu", "he_normal"), ("gelu", "he_normal"), ("leaky_relu", "he_normal"),
    ("tanh", "lecun_normal"), ("sigmoid", "lecun_normal")])
def test_auto_init_is_he_for_rectifiers(activation, expected):
    assert kernel_init_name("auto", activation) == expected
    assert kernel_init_name("glorot_normal", activation) == "glorot_normal"  # as asked
    # pinned by its formula: He normal has variance 2 / fan_in, LeCun 1 / fan_in
    model = MLP(num_classes=2, norms=build_norm("none", {}), depth=1, width=1000,
                activation=activation, kernel_init=kernel_init_name("auto", activation))
    params = model.init(jax.random.key(0), jnp.zeros((1, 500)), train=False,
                        use_running_average=True)["params"]
    var = float(jnp.var(params["layer_0"]["linear"]["kernel"]))
    assert var == pytest.approx((2.0 if expected == "he_normal" else 1.0) / 500, rel=0.03)
