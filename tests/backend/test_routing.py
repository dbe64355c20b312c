"""Tests for the routing of the norms through normjax._fused and its switch.

With the switch on (the default) ``batch_norm`` (train), ``layer_norm``, ``rms_norm``,
``instance_norm`` and ``group_norm`` run :func:`normjax._fused.fused_normalize`; with it off they
run ``moments`` + ``standardize`` under plain autodiff, which is the reference here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import normjax as nj
from normjax._backend import fused_backward_enabled, normalize, routes_to_fused
from normjax._backend import switches as _fused_switch

STATE = nj.batch_norm_init(5)


class Case(NamedTuple):
    name: str
    shape: tuple[int, ...]
    channel_axis: int
    fn: Callable[..., Any]  # (x, scale, bias, mask) -> y or (y, state)


def _bn(axes: tuple[int, ...]) -> Callable[..., Any]:
    return lambda x, s, b, m: nj.batch_norm(x, STATE, scale=s, bias=b, reduction_axes=axes,
                                            train=True, decay=0.9, epsilon=1e-3, mask=m)


CASES = (
    Case("layer_last", (2, 3, 5), -1, lambda x, s, b, m: nj.layer_norm(x, s, b, mask=m)),
    Case("layer_chw", (2, 5, 3, 3), 1, lambda x, s, b, m: nj.layer_norm(
        x, s, b, reduction_axes=(1, 2, 3), feature_axes=1, mask=m)),
    Case("rms_last", (2, 3, 5), -1, lambda x, s, b, m: nj.rms_norm(x, s, mask=m)),
    Case("rms_chw", (2, 5, 3, 3), 1, lambda x, s, b, m: nj.rms_norm(
        x, s, reduction_axes=(1, 2, 3), feature_axes=1, mask=m)),
    Case("instance_nhwc", (2, 3, 3, 5), -1, lambda x, s, b, m: nj.instance_norm(
        x, s, b, epsilon=1e-3, mask=m)),
    Case("instance_nchw", (2, 5, 3, 3), 1, lambda x, s, b, m: nj.instance_norm(
        x, s, b, feature_axes=1, epsilon=1e-3, mask=m)),
    Case("group_nhwc", (2, 3, 3, 6), -1, lambda x, s, b, m: nj.group_norm(
        x, s, b, num_groups=3, mask=m)),
    Case("group_nchw", (2, 6, 3, 3), 1, lambda x, s, b, m: nj.group_norm(
        x, s, b, num_groups=2, feature_axes=1, mask=m)),
    Case("batch_nhwc", (4, 3, 3, 5), -1, _bn((0, 1, 2))),
    Case("batch_nchw", (4, 5, 3, 3), 1, _bn((0, 2, 3))),
)
IDS = [c.name for c in CASES]


def _inputs(case: Case, seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    c = case.shape[case.channel_axis]
    arrays = {
        "x": 2 * rng.standard_normal(case.shape) + 0.5,
        "s": 1 + 0.3 * rng.standard_normal(c),
        "b": 0.3 * rng.standard_normal(c),
        "ct": rng.standard_normal(case.shape),
    }
    out = {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}
    out["mask"] = jnp.asarray(rng.random(case.shape) < 0.7)
    return out


def _primal(out: Any) -> jax.Array:
    return out[0] if isinstance(out, tuple) else out


def _assert_rel(actual: Any, expected: Any, rtol: float) -> None:
    """max |actual - expected| <= rtol * max |expected| (relative to the array's scale)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    err = np.max(np.abs(actual - expected), initial=0.0)
    assert err <= rtol * max(np.max(np.abs(expected), initial=0.0), 1e-30), err


def _uses_custom_vjp(fn: Callable[..., Any], *args: Any) -> bool:
    """Whether ``fn`` runs the backend's differentiable normalization (a custom_jvp)."""
    return "custom_jvp_call" in str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_routed_values_and_gradients_match_unfused_autodiff(case: Case, masked: bool) -> None:
    d = _inputs(case)
    mask = d["mask"] if masked else None
    f = lambda x, s, b: case.fn(x, s, b, mask)  # noqa: E731
    loss = lambda x, s, b: jnp.sum(_primal(f(x, s, b)) * d["ct"])  # noqa: E731
    args = (d["x"], d["s"], d["b"])
    assert _uses_custom_vjp(f, *args)
    with nj.use_fused_backward(False):
        assert not _uses_custom_vjp(f, *args)

    def both(x, s, b):  # one compilation: the switch is read while tracing
        out = []
        for enabled in (True, False):
            with nj.use_fused_backward(enabled):
                out.append((f(x, s, b), jax.grad(loss, (0, 1, 2))(x, s, b)))
        return out

    got, want = jax.jit(both)(*args)
    leaves_got, leaves_want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(leaves_got) == len(leaves_want)
    for g, w in zip(leaves_got, leaves_want, strict=True):
        assert g.dtype == w.dtype
        _assert_rel(g, w, 1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_mode_agrees_with_the_closed_form_backward(case: Case) -> None:
    """<J t, ct> from forward mode == <t, J^T ct> from the closed-form backward (its
    transpose), with the default settings."""
    d = _inputs(case)
    t = jnp.asarray(np.random.default_rng(3).standard_normal(case.shape), jnp.float32)
    f = lambda x: _primal(case.fn(x, d["s"], d["b"], d["mask"]))  # noqa: E731

    def both(x, t, ct):
        y, y_dot = jax.jvp(f, (x,), (t,))
        _, vjp = jax.vjp(f, x)
        return y, jnp.vdot(y_dot, ct), jnp.vdot(t, vjp(ct)[0])

    y, forward, reverse = jax.jit(both)(d["x"], t, d["ct"])
    _assert_rel(y, f(d["x"]), 1e-6)
    np.testing.assert_allclose(float(forward), float(reverse), rtol=1e-4, atol=1e-4)


def test_linearize_works_with_the_default_settings() -> None:
    x = jnp.ones((2, 4)).at[0, 1].set(3.0)
    y, lin = jax.linearize(nj.layer_norm, x)
    np.testing.assert_allclose(lin(x), 0.0, atol=1e-5)  # scaling x leaves y unchanged
    _assert_rel(y, nj.layer_norm(x), 1e-6)


@pytest.mark.skipif(not hasattr(jax, "make_user_context"), reason="needs jax.make_user_context")
def test_flipping_the_switch_retraces_jitted_functions() -> None:
    x = jnp.ones((2, 4)).at[0, 1].set(3.0)
    traces = []

    @jax.jit
    def f(x):
        traces.append(fused_backward_enabled())
        return nj.layer_norm(x)

    f(x)
    with nj.use_fused_backward(False):
        _, y_dot = jax.jvp(f, (x,), (x,))  # compiled with the switch on, re-traced off
    assert traces == [True, False]
    np.testing.assert_allclose(y_dot, 0.0, atol=1e-5)  # layer_norm(x + e x) == layer_norm(x)
    f(x)
    assert traces == [True, False]  # the switch-on trace is still cached


def test_batch_norm_running_statistics_are_the_same_on_both_paths() -> None:
    case = CASES[-2]
    d = _inputs(case)
    states = []
    for enabled in (True, False):
        with nj.use_fused_backward(enabled):
            states.append(jax.jit(case.fn)(d["x"], d["s"], d["b"], d["mask"])[1])
    for a, b in zip(*states, strict=True):
        _assert_rel(a, b, 1e-6)
    assert np.all(np.asarray(states[0].count) == 1)


def test_context_manager_restores_the_switch_also_on_exceptions() -> None:
    assert fused_backward_enabled()
    with nj.use_fused_backward(False):
        assert not fused_backward_enabled()
        with nj.use_fused_backward(True):
            assert fused_backward_enabled()
        assert not fused_backward_enabled()
    assert fused_backward_enabled()
    with pytest.raises(RuntimeError, match="inside"), nj.use_fused_backward(False):
        raise RuntimeError("inside")
    assert fused_backward_enabled()


def test_set_fused_backward_sets_the_global_default() -> None:
    try:
        nj.set_fused_backward(False)
        assert not fused_backward_enabled()
        x = jnp.ones((2, 4)).at[0, 1].set(3.0)
        jax.jvp(nj.layer_norm, (x,), (x,))  # forward mode works globally now
        with nj.use_fused_backward(True):
            assert fused_backward_enabled()
        assert not fused_backward_enabled()
    finally:
        nj.set_fused_backward(True)
    assert fused_backward_enabled()


def test_fallback_flag_for_older_jax_restores_on_exceptions() -> None:
    flag = _fused_switch._Flag(True)
    with pytest.raises(KeyError), flag(False):
        assert flag.value is False
        raise KeyError
    assert flag.value is True
    flag.set_global(False)
    assert flag.value is False


@pytest.mark.parametrize("bad", [1, "no", None, jnp.array(True)])
def test_switch_rejects_non_bool(bad: Any) -> None:
    with pytest.raises(TypeError, match="enabled must be a bool"):
        nj.set_fused_backward(bad)
    with pytest.raises(TypeError, match="enabled must be a bool"), nj.use_fused_backward(bad):
        pass
    assert fused_backward_enabled()


def test_inputs_the_fused_path_does_not_take_use_the_unfused_path() -> None:
    x = jnp.arange(12.0).reshape(3, 4) ** 1.5
    eps = jnp.full((1, 4), 1e-3)  # an epsilon array (rank x.ndim)
    assert routes_to_fused(x, 1e-3) and not routes_to_fused(x, eps)
    f = lambda x: nj.batch_norm(x, nj.batch_norm_init(4), reduction_axes=0, train=True,  # noqa: E731
                                epsilon=eps)[0]
    assert not _uses_custom_vjp(f, x)
    want = (x - x.mean(0, keepdims=True)) / jnp.sqrt(x.var(0, keepdims=True) + eps)
    _assert_rel(f(x), want, 1e-6)
    xi = jnp.arange(8, dtype=jnp.int32).reshape(2, 4)  # promoted to float first, as flax does
    assert _uses_custom_vjp(nj.layer_norm, xi)
    assert nj.layer_norm(xi).dtype == jnp.float32
    xc = jnp.asarray(np.arange(8).reshape(2, 4) * (1 + 2j), jnp.complex64)  # E|x - mu|^2
    assert not routes_to_fused(xc, 1e-3) and not _uses_custom_vjp(nj.layer_norm, xc)


@pytest.mark.parametrize("keepdims", [True, False])
def test_normalize_moments_agree_between_paths(keepdims: bool) -> None:
    d = _inputs(CASES[4])
    kw = dict(reduction_axes=(1, 2), feature_axes=-1, epsilon=1e-3, mask=d["mask"],
              keepdims=keepdims)
    fused = normalize(d["x"], d["s"], d["b"], **kw)
    with nj.use_fused_backward(False):
        plain = normalize(d["x"], d["s"], d["b"], **kw)
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(plain), strict=True):
        _assert_rel(a, b, 1e-5)
    assert fused[1].mean.shape == ((2, 1, 1, 5) if keepdims else (2, 5))


@pytest.mark.parametrize("enabled", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: nj.layer_norm(x, reduction_axes=(5,)), r"reduction_axes=\(5,\) contains"),
        (lambda x: nj.layer_norm(x, mask=jnp.ones((5, 1), bool)), r"mask of shape \(5, 1\)"),
        (lambda x: nj.layer_norm(x, jnp.ones(3), mask=jnp.ones((5, 1), bool)), r"mask of shape"),
        (lambda x: nj.rms_norm(x, jnp.ones(3)), r"scale has shape \(3,\), expected \(4,\)"),
        (lambda x: nj.instance_norm(x, epsilon=-1.0), r"epsilon must be a finite number"),
        (lambda x: nj.group_norm(x, jnp.ones(3), num_groups=2), r"scale has shape \(3,\)"),
        (lambda x: nj.batch_norm(x, nj.batch_norm_init(4), reduction_axes=(0, 1), train=True,
                                 bias=jnp.ones(2)), r"bias has shape \(2,\), expected \(4,\)"),
    ],
)
def test_errors_are_the_same_on_both_paths(call: Callable, match: str, enabled: bool) -> None:
    x = jnp.ones((2, 3, 4)).at[0, 1, 2].set(3.0)
    with nj.use_fused_backward(enabled), pytest.raises(ValueError, match=match):
        call(x)
