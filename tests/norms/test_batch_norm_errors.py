"""batch_norm's error paths: each bad input raises a clear message."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import normjax as nj


def _data(shape: tuple[int, ...], seed: int = 0, loc: float = 1.0, std: float = 2.0):
    return jnp.asarray(np.random.default_rng(seed).normal(loc, std, size=shape), jnp.float32)


def test_bad_train_raises():
    x, state = jnp.ones((4, 2)), nj.batch_norm_init(2)
    for train in (1, jnp.asarray(True), None):
        with pytest.raises(TypeError, match=r"train must be a Python bool"):
            nj.batch_norm(x, state, reduction_axes=0, train=train)


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5, np.float32(1.0), jnp.asarray(1.0)])
def test_decay_out_of_range_raises(decay):
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\) \(the weight on the old"):
        nj.batch_norm(jnp.ones((4, 2)), nj.batch_norm_init(2), reduction_axes=0, train=True,
                      decay=decay)


def test_unknown_running_var_raises():
    with pytest.raises(ValueError, match=r"running_var must be one of .*got 'foo'"):
        nj.batch_norm(_data((4, 2)), nj.batch_norm_init(2), reduction_axes=0, train=True,
                      running_var="foo")


def test_state_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"state.mean has shape \(3,\), expected \(2,\)"):
        nj.batch_norm(jnp.ones((4, 2)), nj.batch_norm_init(3), reduction_axes=0, train=False)
    with pytest.raises(ValueError, match=r"state.mean has shape \(4,\), expected \(3,\)"):
        nj.batch_norm(jnp.ones((2, 3, 5, 5)), nj.batch_norm_init(4), reduction_axes=(0, 2, 3),
                      train=True)
    with pytest.raises(TypeError, match=r"state must be a BatchNormState"):
        nj.batch_norm(jnp.ones((4, 2)), (jnp.zeros(2), jnp.ones(2), 0), reduction_axes=0,
                      train=True)


@pytest.mark.parametrize("name", ["scale", "bias"])
def test_param_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match=rf"{name} has shape \(3,\), expected \(2,\)"):
        nj.batch_norm(_data((4, 2)), nj.batch_norm_init(2), reduction_axes=0, train=True,
                      **{name: jnp.ones(3)})


def test_bad_axes_raise():
    with pytest.raises(ValueError, match=r"names the same axis more than once"):
        nj.batch_norm(jnp.ones((2, 3, 4, 5)), nj.batch_norm_init(5), reduction_axes=(1, -3),
                      train=True)
    with pytest.raises(ValueError, match=r"out of range for an input of rank 2"):
        nj.batch_norm(jnp.ones((4, 2)), nj.batch_norm_init(2), reduction_axes=2, train=True)


def test_per_example_under_vmap_without_axis_name_raises_at_trace_time():
    state = nj.batch_norm_init(3)
    per_example = lambda x: nj.batch_norm(x, state, reduction_axes=(), train=True)  # noqa: E731
    with pytest.raises(ValueError, match=r"reduce over no axes.*pass axis_name="):
        jax.eval_shape(jax.vmap(per_example), jax.ShapeDtypeStruct((8, 3), jnp.float32))


def test_batch_of_one_in_train_mode_raises():
    with pytest.raises(ValueError, match=r"single element per feature.*batch larger than 1"):
        nj.batch_norm(jnp.ones((1, 3)), nj.batch_norm_init(3), reduction_axes=0, train=True)
    y, _ = nj.batch_norm(jnp.ones((1, 3)), nj.batch_norm_init(3), reduction_axes=0,
                         train=False)
    assert y.shape == (1, 3)


def test_empty_batch_raises():
    with pytest.raises(ValueError, match=r"hold no elements"):
        nj.batch_norm(jnp.ones((0, 3)), nj.batch_norm_init(3), reduction_axes=0, train=True)


def test_mask_not_broadcastable_raises():
    with pytest.raises(ValueError, match=r"mask of shape \(3,\) does not broadcast"):
        nj.batch_norm(jnp.ones((4, 2)), nj.batch_norm_init(2), reduction_axes=0, train=True,
                      mask=jnp.ones(3, bool))


@pytest.mark.parametrize("train", [True, False])
def test_negative_epsilon_raises(train):
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0, got -1"):
        nj.batch_norm(_data((4, 2)), nj.batch_norm_init(2), reduction_axes=0, train=train,
                      epsilon=-1.0)


def test_bad_init_and_momentum_raise():
    for features in ((2, 0), -1):
        with pytest.raises(ValueError, match=r"features must be positive ints, got"):
            nj.batch_norm_init(features)
    for features in ((2.0,), True, 4.0, None, "4"):
        with pytest.raises(TypeError, match=r"features must be a positive int or a sequence"):
            nj.batch_norm_init(features)
    assert nj.batch_norm_init(np.int64(3)).mean.shape == (3,)
    for momentum in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"PyTorch momentum must be in \(0, 1\]"):
            nj.decay_from_momentum(momentum)
