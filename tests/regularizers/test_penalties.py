"""Tests for L1 / L2 / elastic-net penalties and their relation to optax weight decay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import normjax as nj
from tests import reference as ref


def _params() -> dict:
    rng = np.random.default_rng(0)
    arr = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return {
        "dense": {"kernel": arr(3, 4), "bias": arr(4)},
        "blocks": [{"conv": arr(3, 3, 2, 4), "scale": arr(4)}, (arr(2, 2), arr(2))],
        "temperature": jnp.asarray(0.5, jnp.float32),
    }


def _kernels(p: dict) -> list[jax.Array]:
    return [p["dense"]["kernel"], p["blocks"][0]["conv"], p["blocks"][1][0]]


def test_default_mask_selects_kernels():
    mask = nj.default_penalty_mask(_params())
    assert mask == {
        "dense": {"kernel": True, "bias": False},
        "blocks": [{"conv": True, "scale": False}, (True, False)],
        "temperature": False,
    }


def test_values_match_reference_with_default_mask():
    p = _params()
    np.testing.assert_allclose(nj.l1_penalty(p), ref.l1_penalty(_kernels(p)), rtol=1e-6)
    np.testing.assert_allclose(nj.l2_penalty(p), ref.l2_penalty(_kernels(p)), rtol=1e-6)
    np.testing.assert_allclose(nj.elastic_net_penalty(p, l1=0.3, l2=2.0),
                               ref.elastic_net_penalty(_kernels(p), l1=0.3, l2=2.0), rtol=1e-6)
    assert nj.l2_penalty(p).dtype == jnp.float32
    np.testing.assert_allclose(jax.jit(nj.l2_penalty)(p), nj.l2_penalty(p), rtol=1e-6)


def test_custom_mask_as_pytree_and_callable():
    p = _params()
    mask = jax.tree.map(lambda _: False, p)
    mask["dense"]["bias"] = True
    mask["temperature"] = True
    chosen = [p["dense"]["bias"], p["temperature"]]
    np.testing.assert_allclose(nj.l2_penalty(p, mask=mask), ref.l2_penalty(chosen), rtol=1e-6)
    everything = lambda params: jax.tree.map(lambda _: True, params)  # noqa: E731
    np.testing.assert_allclose(nj.l1_penalty(p, mask=everything),
                               ref.l1_penalty(jax.tree.leaves(p)), rtol=1e-6)
    np_bools = jax.tree.map(lambda leaf: np.bool_(jnp.ndim(leaf) == 1), p)
    np.testing.assert_allclose(nj.l1_penalty(p, mask=np_bools),
                               ref.l1_penalty([p["dense"]["bias"], p["blocks"][0]["scale"],
                                               p["blocks"][1][1]]), rtol=1e-6)


def test_gradients_are_w_and_sign_w_on_selected_leaves():
    p = _params()
    mask = nj.default_penalty_mask(p)
    g2, g1 = jax.grad(nj.l2_penalty)(p), jax.grad(nj.l1_penalty)(p)
    for leaf, m, d2, d1 in zip(*(jax.tree.leaves(t) for t in (p, mask, g2, g1)), strict=True):
        np.testing.assert_allclose(d2, leaf if m else 0.0, rtol=1e-6)
        np.testing.assert_allclose(d1, jnp.sign(leaf) if m else 0.0)


def test_check_grads():
    with jax.enable_x64(True):
        p = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(3, 2))), "b": jnp.ones(2)}
        check_grads(jax.jit(lambda q: nj.elastic_net_penalty(q, l1=0.1, l2=2.0)), (p,), order=2,
                    modes=["rev"], atol=1e-3, rtol=1e-3)


def test_mask_structure_mismatch_raises():
    p = _params()
    with pytest.raises(ValueError, match=r"mask must have the same tree structure as params"):
        nj.l2_penalty(p, mask={"dense": {"kernel": True, "bias": False}})
    with pytest.raises(ValueError, match=r"mask must have the same tree structure as params"):
        nj.l1_penalty(p, mask=lambda params: [True])


def test_non_bool_mask_leaf_raises():
    mask = jax.tree.map(lambda _: 1.0, _params())
    with pytest.raises(TypeError, match=r"mask leaves must be Python or scalar bools, got 1.0"):
        nj.l2_penalty(_params(), mask=mask)


@pytest.mark.parametrize("name", ["l1", "l2"])
def test_negative_coefficient_raises(name):
    coeffs = {"l1": 0.1, "l2": 0.1, name: -0.5}
    with pytest.raises(ValueError, match=rf"{name} must be >= 0, got -0.5"):
        nj.elastic_net_penalty(_params(), **coeffs)


def _task_grads(params: dict) -> dict:
    """Gradient of a small data loss (the penalty is added separately)."""
    x = jnp.linspace(-1.0, 1.0, 3)[None]
    loss = lambda p: jnp.sum(jnp.tanh(x @ p["dense"]["kernel"] + p["dense"]["bias"][None]))  # noqa: E731
    return jax.grad(loss)(params)


def _updates(opt: optax.GradientTransformation, grads: dict, params: dict) -> dict:
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts with floats
        updates, _ = opt.update(grads, opt.init(params), params)
    return updates


def test_coupled_l2_equals_decoupled_weight_decay_under_sgd():
    p, lr, lam = {"dense": _params()["dense"]}, 0.1, 0.05
    coupled_grads = jax.tree.map(jnp.add, _task_grads(p),
                                 jax.grad(lambda q: lam * nj.l2_penalty(q))(p))
    coupled = _updates(optax.sgd(lr), coupled_grads, p)
    decoupled = _updates(optax.chain(optax.add_decayed_weights(lam, nj.default_penalty_mask),
                                     optax.sgd(lr)), _task_grads(p), p)
    for a, b in zip(jax.tree.leaves(coupled), jax.tree.leaves(decoupled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_coupled_l2_differs_from_decoupled_weight_decay_under_adam():
    p, lr, lam, eps = {"dense": _params()["dense"]}, 0.1, 0.05, 1e-8
    g, w = _task_grads(p), p["dense"]["kernel"]
    gk = g["dense"]["kernel"]
    coupled_grads = jax.tree.map(jnp.add, g, jax.grad(lambda q: lam * nj.l2_penalty(q))(p))
    coupled = _updates(optax.adam(lr, eps=eps), coupled_grads, p)["dense"]["kernel"]
    decoupled = _updates(optax.adamw(lr, eps=eps, weight_decay=lam,
                                     mask=nj.default_penalty_mask), g, p)["dense"]["kernel"]
    # First Adam step: the update is -lr * grad / |grad|. The coupled penalty's gradient lam*w
    # goes through that normalization; decoupled decay adds lr * lam * w after it.
    total = gk + lam * w
    np.testing.assert_allclose(coupled, -lr * total / (jnp.abs(total) + eps), rtol=1e-5)
    np.testing.assert_allclose(decoupled, -lr * (gk / (jnp.abs(gk) + eps) + lam * w), rtol=1e-5)
    assert np.max(np.abs(coupled - decoupled)) > 0.5 * lr * lam * np.max(np.abs(w))
