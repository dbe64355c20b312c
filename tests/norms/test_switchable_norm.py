"""Tests for normjax/switchable_norm.py: Switchable Normalization."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from normjax.norms.batch_norm import batch_norm
from normjax.norms.instance_norm import instance_norm
from normjax.norms.layer_norm import layer_norm
from normjax.norms.switchable_norm import switchable_norm
from normjax.running import batch_norm_init
from tests.reference_research import ema_np, switchable_norm_np

N, H, C = 3, 4, 5
EPS = 1e-5


def _x(shape=(N, H, H, C), seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=shape) * rng.uniform(0.5, 3, size=shape[-1])
                       + rng.normal(size=shape[-1]), jnp.float32)


def _params():
    return jnp.linspace(0.5, 2.0, C), jnp.linspace(-1.0, 1.0, C)


def _state():
    return batch_norm_init(C)._replace(mean=jnp.linspace(-1, 1, C), var=jnp.linspace(0.5, 2, C))


def _one_hot(k: int) -> jax.Array:
    return jnp.where(jnp.arange(3) == k, 0.0, -jnp.inf)


def test_one_hot_weights_give_instance_layer_and_batch_norm():
    x, state = _x(), _state()
    scale, bias = _params()
    kw = dict(scale=scale, bias=bias, epsilon=EPS)

    def sn(k, train):
        return switchable_norm(x, state, mean_logits=_one_hot(k), var_logits=_one_hot(k),
                               train=train, decay=0.9, **kw)

    np.testing.assert_allclose(sn(0, True)[0], instance_norm(x, **kw), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sn(1, True)[0],
                               layer_norm(x, reduction_axes=(1, 2, 3), feature_axes=-1, **kw),
                               rtol=1e-6, atol=1e-6)
    for train in (True, False):
        y, s = sn(2, train)
        y_ref, s_ref = batch_norm(x, state, reduction_axes=(0, 1, 2), train=train, decay=0.9,
                                  **kw)
        np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
        for a, b in zip(s, s_ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("train", [True, False])
def test_mixture_against_float64_oracle(train):
    x, state = _x(seed=1), _state()
    scale, bias = _params()
    ml, vl = jnp.array([0.3, -0.2, 0.5]), jnp.array([-1.0, 0.4, 0.1])
    y, s = switchable_norm(x, state, scale=scale, bias=bias, mean_logits=ml, var_logits=vl,
                           train=train, decay=0.9, epsilon=1e-3)
    wm, wv = np.asarray(jax.nn.softmax(ml)), np.asarray(jax.nn.softmax(vl))
    bn = {} if train else dict(bn_mean=state.mean, bn_var=state.var)
    ref = switchable_norm_np(x, wm, wv, 1e-3, scale=scale, bias=bias, **bn)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    if train:
        xf = np.asarray(x, np.float64)
        np.testing.assert_allclose(s.mean, ema_np(state.mean, xf.mean((0, 1, 2)), 0.9),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.var, ema_np(state.var, xf.var((0, 1, 2)), 0.9), rtol=1e-5)
    else:
        assert s is state


def test_channels_first():
    x, state = _x(seed=2), _state()
    ml, vl = jnp.array([0.1, 0.2, 0.3]), jnp.array([0.3, 0.2, 0.1])
    y, s = switchable_norm(x, state, mean_logits=ml, var_logits=vl, train=True)
    y1, s1 = switchable_norm(x.transpose(0, 3, 1, 2), state, mean_logits=ml, var_logits=vl,
                             train=True, feature_axes=1)
    np.testing.assert_allclose(y1.transpose(0, 2, 3, 1), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s1.var, s.var, rtol=1e-6)


def test_jit_vmap_axis_name_and_grad():
    x, state = _x(seed=3), _state()
    scale, bias = _params()
    ml, vl = jnp.array([0.3, -0.2, 0.5]), jnp.array([-1.0, 0.4, 0.1])

    @partial(jax.jit, static_argnames="train")
    def f(x, scale, bias, ml, vl, *, train):
        return switchable_norm(x, state, scale=scale, bias=bias, mean_logits=ml,
                               var_logits=vl, train=train)[0]

    per_example = jax.jit(jax.vmap(
        lambda x: switchable_norm(x, state, scale=scale, bias=bias, mean_logits=ml,
                                  var_logits=vl, train=True, batch_axes=(), axis_name="b")[0],
        axis_name="b"))(x)
    np.testing.assert_allclose(per_example, f(x, scale, bias, ml, vl, train=True), rtol=1e-5,
                               atol=1e-5)
    check_grads(jax.jit(partial(f, train=True)), (x, scale, bias, ml, vl), order=1,
                modes=["rev"], atol=2e-2, rtol=2e-2)


def test_errors():
    x, state = _x(), _state()
    kw = dict(mean_logits=jnp.zeros(3), var_logits=jnp.zeros(3), train=True)
    with pytest.raises(ValueError, match=r"mean_logits has shape \(2,\), expected \(3,\)"):
        switchable_norm(x, state, **{**kw, "mean_logits": jnp.zeros(2)})
    with pytest.raises(ValueError, match="needs at least one spatial axis"):
        switchable_norm(jnp.ones((N, C)), state, **kw)
    with pytest.raises(ValueError, match="no batch to take the BN statistics over"):
        switchable_norm(x[0], state, batch_axes=(), **kw)
    with pytest.raises(ValueError, match="state.mean has shape"):
        switchable_norm(x, batch_norm_init(C + 1), **kw)
    with pytest.raises(ValueError, match="is also a batch axis"):
        switchable_norm(x, state, feature_axes=0, **kw)
    with pytest.raises(TypeError, match="train must be a Python bool"):
        switchable_norm(x, state, mean_logits=jnp.zeros(3), var_logits=jnp.zeros(3), train=0)
