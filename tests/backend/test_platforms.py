"""The accelerator formulation (:mod:`normjax._platform`), tested on the CPU.

Off the CPU the norms' forward statistics and :func:`normjax.moments` are the shifted one-pass
moments and no optimization barrier is emitted. ``off_cpu`` makes the trace take that
formulation here, so its values and gradients are checked against float64 and autodiff without
a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import normjax
from normjax import _platform
from normjax._numerics import shifted_moments
from normjax._platform import cpu_barrier, cpu_target


@pytest.fixture
def off_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # (the norms record the platform in their static Config, so no CPU trace is reused)
    monkeypatch.setattr(_platform, "cpu_target", lambda: False)
    yield


def _data(shape: tuple[int, ...], offset: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 2 + offset).astype(np.float32)


@pytest.mark.parametrize("offset", [0.0, 30.0, 3000.0])
def test_shifted_moments_match_float64(offset: float) -> None:
    x = _data((256, 4, 8), offset)
    m = shifted_moments(jnp.asarray(x), (0, 1))
    x64 = x.astype(np.float64)
    assert m.mean.shape == m.var.shape == m.count.shape == (1, 1, 8)
    np.testing.assert_allclose(m.mean.ravel(), x64.mean((0, 1)), rtol=0, atol=1e-6 * (offset + 2))
    # no E[x^2] - E[x]^2 cancellation: at mean 3000, std 2 that form loses every digit
    np.testing.assert_allclose(m.var.ravel(), x64.var((0, 1)), rtol=30 * 2**-23)
    np.testing.assert_array_equal(m.count.ravel(), 1024.0)


def test_shifted_moments_of_a_constant_group_are_exact() -> None:
    x = jnp.full((16, 3), 7.25, jnp.float32)
    m = shifted_moments(x, (0,))
    np.testing.assert_array_equal(m.mean.ravel(), 7.25)
    np.testing.assert_array_equal(m.var.ravel(), 0.0)


def test_cpu_target_follows_the_default_device() -> None:
    assert cpu_target() == (jax.default_backend() == "cpu")
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS without the CPU
        cpu = None
    if cpu is not None:
        with jax.default_device(cpu):
            assert cpu_target()
    tree = (jnp.ones(2), jnp.zeros(3))
    assert cpu_barrier(tree, False) is tree
    text = jax.jit(lambda a, b: cpu_barrier((a, b), True)).lower(*tree).as_text()
    assert "optimization_barrier" in text


def _norms() -> dict[str, Callable[..., jax.Array]]:
    state = normjax.batch_norm_init(16)
    return {
        "batch": lambda x, s, b: normjax.batch_norm(x, state, scale=s, bias=b, train=True,
                                                    reduction_axes=(0, 1, 2))[0],
        "batch_cf": lambda x, s, b: normjax.batch_norm(
            jnp.moveaxis(x, -1, 1), state, scale=s, bias=b, train=True,
            reduction_axes=(0, 2, 3))[0],
        "group": lambda x, s, b: normjax.group_norm(x, s, b, num_groups=4),
        "instance": lambda x, s, b: normjax.instance_norm(x, s, b),
        "layer": lambda x, s, b: normjax.layer_norm(x, s, b),
        "rms": lambda x, s, b: normjax.rms_norm(x, s),
    }


@pytest.mark.parametrize("name", list(_norms()))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_off_cpu_values_and_gradients_match_autodiff(off_cpu: None, name: str, dtype: str
                                                     ) -> None:
    fn = _norms()[name]
    x = jnp.asarray(_data((4, 6, 6, 16), 30.0), dtype)
    ct = jnp.asarray(_data((4, 6, 6, 16), 0.0, seed=1), dtype)
    s, b = jnp.linspace(0.5, 1.5, 16), jnp.linspace(-0.2, 0.2, 16)
    ct = ct if name != "batch_cf" else jnp.moveaxis(ct, -1, 1)

    def loss(x: jax.Array, s: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.sum((fn(x, s, b) * ct).astype(jnp.float32))

    text = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, s, b).as_text()
    assert "conditional" not in text and "optimization_barrier" not in text
    assert "normjax_" not in text  # no custom call (float32 rows: the kernel's pure-JAX twin)
    both = lambda *a: (fn(*a), jax.grad(loss, (0, 1, 2))(*a))  # noqa: E731
    got_y, got = jax.jit(both)(x, s, b)
    with normjax.use_fused_backward(False):  # a new function: no trace of the first is reused
        want_y, want = jax.jit(lambda *a: both(*a))(x, s, b)
    tol = 1e-5 if dtype == "float32" else 2e-2
    scale = lambda a: float(jnp.max(jnp.abs(a.astype(jnp.float32))))  # noqa: E731
    assert scale(got_y - want_y) <= tol * scale(want_y)
    for g, w in zip(got, want, strict=True):
        assert scale(g - w) <= tol * max(scale(w), 1e-6)


def test_off_cpu_keeps_the_guarded_branch_across_devices(off_cpu: None) -> None:
    """With ``axis_name`` the forward keeps the guarded formulation (one collective round)."""
    x = jnp.asarray(_data((2, 8, 4), 30.0))
    state = normjax.batch_norm_init(4)

    def f(x: jax.Array) -> jax.Array:
        return normjax.batch_norm(x, state, train=True, reduction_axes=(0,),
                                  axis_name="d")[0]

    text = jax.jit(jax.vmap(f, axis_name="d")).lower(x).as_text()
    assert "conditional" in text or "case" in text


def test_off_cpu_rows_backward_needs_no_compiled_kernels(off_cpu: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The LayerNorm backward off the CPU is the kernel's pure-JAX twin, compiled kernels or
    not (a GPU machine without a C++ compiler gets the same program), switch or not."""
    from normjax._backend import build as _native

    x = jnp.asarray(_data((8, 32), 3.0))

    def loss(x: jax.Array) -> jax.Array:
        return jnp.sum(normjax.layer_norm(x) ** 3)

    with_kernels = jax.make_jaxpr(jax.grad(loss))(x)
    monkeypatch.setattr(_native, "native_available", lambda: False)
    without = jax.make_jaxpr(jax.grad(loss))(x)
    with normjax.use_native_kernels(False):  # a switch for the CPU kernels: no effect here
        switched_off = jax.make_jaxpr(jax.grad(loss))(x)
    assert str(with_kernels) == str(without) == str(switched_off)
    assert "normjax_" not in str(without)


def test_off_cpu_moments_take_the_shifted_form(off_cpu: None) -> None:
    """``normjax.moments`` with its defaults: one pass, no branch, stable at a large mean; with
    ``axis_name`` or a mask it keeps its CPU forms."""
    x = jnp.asarray(_data((512, 8), 3000.0))
    text = jax.jit(lambda x: normjax.moments(x, 0)).lower(x).as_text()
    assert "conditional" not in text and "case" not in text
    got = normjax.moments(x, 0)
    x64 = np.asarray(x, np.float64)
    np.testing.assert_allclose(got.var, x64.var(0), rtol=30 * 2**-23)
    np.testing.assert_allclose(got.mean, x64.mean(0), rtol=1e-7)
    grad = jax.grad(lambda x: jnp.sum(normjax.moments(x, 0).var * jnp.arange(8.0)))(x)
    want = 2 * (x64 - x64.mean(0)) / 512 * np.arange(8.0)
    np.testing.assert_allclose(grad, want, rtol=0, atol=1e-3 * np.abs(want).max())
    masked = jax.jit(lambda x: normjax.moments(x, 0, mask=x > 0)).lower(x).as_text()
    assert "conditional" not in masked  # a mask takes the two-pass form on every platform
