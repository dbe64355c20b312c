"""Tests for normjax/folding.py: folding eval-mode BatchNorm into Dense / Conv."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax
from jax.test_util import check_grads

from normjax.norms.batch_norm import batch_norm
from normjax.running import BatchNormState, batch_norm_init
from normjax.weights.folding import fold_batch_norm
from tests.reference_research import f64

C_IN, C_OUT = 3, 4
RNG = np.random.default_rng(0)


def _bn(c: int = C_OUT):
    state = BatchNormState(mean=jnp.asarray(RNG.normal(size=c), jnp.float32),
                           var=jnp.asarray(RNG.uniform(0.2, 3, size=c), jnp.float32),
                           count=jnp.asarray(10, jnp.int32))
    return state, jnp.asarray(RNG.uniform(0.5, 2, c), jnp.float32), jnp.asarray(
        RNG.normal(size=c), jnp.float32)


def _arr(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_folded_values_against_float64_formula():
    kernel, bias = _arr((C_IN, C_OUT), 1), _arr((C_OUT,), 2)
    state, scale, beta = _bn()
    k, b = fold_batch_norm(kernel, bias, state, scale, beta, epsilon=1e-3)
    s = f64(scale) / np.sqrt(f64(state.var) + 1e-3)
    np.testing.assert_allclose(k, f64(kernel) * s, rtol=1e-6)
    np.testing.assert_allclose(b, (f64(bias) - f64(state.mean)) * s + f64(beta), rtol=1e-5,
                               atol=1e-6)


def test_dense_folded_equals_unfolded():
    x, kernel, bias = _arr((5, C_IN), 3), _arr((C_IN, C_OUT), 4), _arr((C_OUT,), 5)
    state, scale, beta = _bn()
    y_ref, _ = batch_norm(x @ kernel + bias[None], state, scale=scale, bias=beta,
                          reduction_axes=0, train=False)
    k, b = fold_batch_norm(kernel, bias, state, scale, beta)
    np.testing.assert_allclose(x @ k + b[None], y_ref, rtol=1e-5, atol=1e-5)
    k0, b0 = fold_batch_norm(kernel, None, state)  # no layer bias, no BN affine
    y0, _ = batch_norm(x @ kernel, state, reduction_axes=0, train=False)
    np.testing.assert_allclose(x @ k0 + b0[None], y0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv_folded_equals_unfolded(layout):
    x = _arr((2, 6, 6, C_IN), 6)
    kernel = _arr((3, 3, C_IN, C_OUT), 7)  # HWIO
    state, scale, beta = _bn()
    feature_axis, axes = -1, (0, 1, 2)
    if layout == "NCHW":
        x, kernel = x.transpose(0, 3, 1, 2), kernel.transpose(3, 2, 0, 1)  # NCHW, OIHW
        feature_axis, axes = 0, (0, 2, 3)
    dims = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")

    def conv(k):
        return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dims)

    y_ref, _ = batch_norm(conv(kernel), state, scale=scale, bias=beta, reduction_axes=axes,
                          train=False)
    k, b = fold_batch_norm(kernel, None, state, scale, beta, feature_axis=feature_axis)
    bshape = (1, 1, 1, C_OUT) if layout == "NHWC" else (1, C_OUT, 1, 1)
    np.testing.assert_allclose(conv(k) + b.reshape(bshape), y_ref, rtol=1e-4, atol=1e-4)


def test_flax_dense_batch_norm_folds_into_one_dense():
    class Unfolded(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.BatchNorm(use_running_average=True)(nn.Dense(C_OUT)(x))

    x = _arr((5, C_IN), 8)
    model = Unfolded()
    variables = model.init(jax.random.key(0), x)
    state, scale, beta = _bn()
    variables = {"params": {**variables["params"],
                            "BatchNorm_0": {"scale": scale, "bias": beta}},
                 "batch_stats": {"BatchNorm_0": {"mean": state.mean, "var": state.var}}}
    dense = variables["params"]["Dense_0"]
    k, b = fold_batch_norm(dense["kernel"], dense["bias"], state, scale, beta)
    y_folded = nn.Dense(C_OUT).apply({"params": {"kernel": k, "bias": b}}, x)
    np.testing.assert_allclose(y_folded, model.apply(variables, x), rtol=1e-5, atol=1e-5)


def test_jit_vmap_grad_and_dtype():
    kernel, bias = _arr((C_IN, C_OUT), 9), _arr((C_OUT,), 10)
    state, scale, beta = _bn()
    fold = jax.jit(lambda k, g: fold_batch_norm(k, bias, state, g, beta))
    k, b = fold(kernel, scale)
    ks, bs = jax.vmap(fold, in_axes=(0, None))(jnp.stack([kernel, 2 * kernel]), scale)
    np.testing.assert_allclose(ks[1], 2 * k, rtol=1e-6)
    np.testing.assert_allclose(bs[1], b, rtol=1e-6)
    check_grads(jax.jit(lambda k, g: fold_batch_norm(k, bias, state, g, beta)), (kernel, scale),
                order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    kb, bb = fold_batch_norm(kernel.astype(jnp.bfloat16), bias, state, scale, beta)
    assert kb.dtype == bb.dtype == jnp.bfloat16


def test_errors():
    kernel = jnp.ones((C_IN, C_OUT))
    state = batch_norm_init(C_OUT)
    with pytest.raises(ValueError, match=r"bias has shape \(3,\), expected \(4,\)"):
        fold_batch_norm(kernel, jnp.ones(C_IN), state)
    with pytest.raises(ValueError, match=r"state.mean has shape \(3,\)"):
        fold_batch_norm(kernel, None, batch_norm_init(C_IN))
    with pytest.raises(ValueError, match="scale has shape"):
        fold_batch_norm(kernel, None, state, jnp.ones(2))
    with pytest.raises(ValueError, match="rank >= 2"):
        fold_batch_norm(jnp.ones(C_OUT), None, state)
    with pytest.raises(TypeError, match="state must be a BatchNormState"):
        fold_batch_norm(kernel, None, {"mean": jnp.zeros(C_OUT)})
    with pytest.raises(ValueError, match="out of range"):
        fold_batch_norm(kernel, None, state, feature_axis=2)
    with pytest.raises(ValueError, match="epsilon must be"):
        fold_batch_norm(kernel, None, state, epsilon=-1.0)
