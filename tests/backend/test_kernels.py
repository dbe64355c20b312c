"""Tests for the CPU kernels (normjax/_backend/csrc/norm_kernels.cc, build.py, kernels.py).

The kernels are checked against a float64 NumPy oracle of the same formulas, against their
pure-JAX twins, and through the public norms against the XLA path (native kernels off):
values, gradients, vmap with per-seed and shared parameters, hessian, determinism, stability.
Routing, the switch and the fallbacks: ``tests/backend/test_kernel_build.py``. Where no C++
compiler is available the kernel tests are skipped.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import normjax
from normjax._backend import kernels as _native_ops
from tests.native_oracle import close, needs_kernels, oracle_grad, oracle_moments, rand

# (B, R, C, G): GroupNorm-like, InstanceNorm-like, LayerNorm-like (R = 1), BatchNorm-like
# inputs larger than L2 (the two-sweep path; 192 channels: the register-blocked sums plus a
# tail, 300: the unblocked wide rows), 128 channels in one sample (blocked sums), odd sizes;
# wide rows of a multiple of 16 channels (dx four rows per read of its coefficients; blocks of
# 409 / 341 and 212 / 218 rows leave remainders), per channel and in groups of 16.
LAYOUTS = [(3, 20, 12, 4), (2, 33, 8, 8), (5, 1, 24, 1), (1, 9000, 40, 40), (2, 700, 300, 3),
           (1, 1, 7, 7), (2, 50, 128, 32), (1, 1500, 200, 200), (2, 1030, 320, 320),
           (1, 900, 384, 24)]


@needs_kernels
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_moments_kernel_matches_float64_oracle(layout: tuple, center: bool) -> None:
    b, r, c, g = layout
    x = rand((b, r, c), 0, loc=1.5, sd=2.0)
    mean, var = jax.jit(_native_ops.group_moments, static_argnums=(1, 2))(x, g, center)
    want_mean, want_var = oracle_moments(np.asarray(x), g, center)
    close(mean, want_mean)
    close(var, want_var)
    ref = _native_ops.ref_group_moments(x, g, center)
    close(var, ref[1])


@needs_kernels
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_grad_kernel_matches_float64_oracle(layout: tuple, center: bool) -> None:
    b, r, c, g = layout
    x, gy = rand((b, r, c), 1, loc=0.5, sd=2.0), rand((b, r, c), 2)
    eps = jnp.full((b, g), 1e-3, jnp.float32)
    scale, gm, gv = rand((1, c), 3, loc=1.0), rand((b, g), 4), rand((b, g), 5)
    args = (gy, x, eps, scale, gm, gv)
    got = jax.jit(_native_ops.normalize_grad, static_argnums=6)(*args, center)
    want = oracle_grad(*(np.asarray(a) for a in args), center)
    for a, w in zip(got, want, strict=True):
        close(a, w)
    for a, w in zip(got, _native_ops.ref_normalize_grad(*args, center), strict=True):
        close(a, w)


@needs_kernels
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("rows", [(5, 24, 1, 1), (6, 768, 3, 3), (4, 7, 7, 2), (9, 130, 2, 1)],
                         ids=str)
def test_rows_kernel_matches_float64_oracle(rows: tuple, center: bool) -> None:
    """LayerNorm / RMSNorm forward rows: per-row groups, parameter rows per seed (S > 1)."""
    b, c, g, s = rows
    x = rand((b, 1, c), 50, loc=0.5, sd=2.0)
    scale, bias = rand((s, c), 51, loc=1.0), rand((s, c), 52)
    eps = jnp.full((b, g), 1e-3, jnp.float32)
    got = jax.jit(_native_ops.rows_forward, static_argnums=4)(x, scale, bias, eps, center)
    mean, var = oracle_moments(np.asarray(x), g, center)
    k = c // g
    per = lambda a: np.repeat(a, k, axis=-1)[:, None, :]  # noqa: E731
    rows_of = lambda p: np.repeat(np.asarray(p, np.float64), b // s, axis=0)[:, None, :]  # noqa: E731
    y = (np.asarray(x, np.float64) - per(mean)) / np.sqrt(per(var) + 1e-3) * rows_of(scale)
    y = y + rows_of(bias)
    for a, w in zip(got, (y, mean, var), strict=True):
        close(a, w)
    for a, w in zip(got, _native_ops.ref_rows_forward(x, scale, bias, eps, center), strict=True):
        close(a, w)
    with pytest.raises(ValueError, match=r"x\[\.\.\., 1, C\]"):
        _native_ops.rows_forward(x.reshape(b, c, 1), scale[:, :1], bias[:, :1], eps, center)


@needs_kernels
def test_grad_kernel_sums_parameters_per_row_of_scale() -> None:
    """``scale`` [S, C] with S < B: dscale/dbias are summed per parameter row (vmapped seeds)."""
    b, r, c, g = 6, 10, 8, 2
    x, gy = rand((b, r, c), 6), rand((b, r, c), 7)
    args = (gy, x, jnp.full((b, g), 1e-5, jnp.float32), rand((3, c), 8, loc=1.0),
            rand((b, g), 9), rand((b, g), 10))
    got = _native_ops.normalize_grad(*args, True)
    want = oracle_grad(*(np.asarray(a) for a in args), True)
    assert got[1].shape == (3, c)
    for a, w in zip(got, want, strict=True):
        close(a, w)


@needs_kernels
def test_kernels_are_deterministic_and_stable() -> None:
    """Bitwise-equal reruns; float32 data at mean 1e4, std 1 keeps its variance to 1e-5 (no
    ``E[x^2] - E[x]^2`` cancellation, which would lose it entirely, and the corrected
    two-pass per chunk: its float chunk means alone cost about 1e-4 there)."""
    x = rand((1, 20000, 16), 11, loc=1e4, sd=1.0)
    f = jax.jit(_native_ops.group_moments, static_argnums=(1, 2))
    a, b = f(x, 16, True), f(x + 0, 16, True)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    _, want = oracle_moments(np.asarray(x), 16, True)
    np.testing.assert_allclose(np.asarray(a[1]), want, rtol=1e-5)


def _norms() -> dict[str, Any]:
    return {
        "group_nhwc": (lambda x, s, b: normjax.group_norm(x, s, b, num_groups=4), (2, 5, 6, 8)),
        "instance_nhwc": (lambda x, s, b: normjax.instance_norm(x, s, b), (2, 5, 6, 8)),
        "layer": (lambda x, s, b: normjax.layer_norm(x, s, b), (3, 4, 8)),
        "rms": (lambda x, s, b: normjax.rms_norm(x, s), (3, 4, 8)),
        "batch_nhwc": (lambda x, s, b: normjax.batch_norm(
            x, normjax.batch_norm_init(8), scale=s, bias=b, reduction_axes=(0, 1, 2),
            train=True)[0], (4, 5, 6, 8)),
        "instance_nchw": (lambda x, s, b: normjax.instance_norm(x, s, b, feature_axes=1),
                          (2, 8, 5, 6)),
        "group_nchw": (lambda x, s, b: normjax.group_norm(x, s, b, num_groups=4, feature_axes=1),
                       (2, 8, 5, 6)),
        "batch_mlp": (lambda x, s, b: normjax.batch_norm(
            x, normjax.batch_norm_init(8), scale=s, bias=b, reduction_axes=(0,),
            train=True)[0], (300, 8)),
        "batch_large": (lambda x, s, b: normjax.batch_norm(
            x, normjax.batch_norm_init(8), scale=s, bias=b, reduction_axes=(0, 1, 2),
            train=True)[0], (64, 40, 40, 8)),
        # Wider than NATIVE_MAX_CHANNELS and larger than L2: XLA forward, kernel backward.
        "batch_mlp_wide": (lambda x, s, b: normjax.batch_norm(
            x, normjax.batch_norm_init(264), scale=s, bias=b, reduction_axes=(0,),
            train=True)[0], (520, 264)),
        "instance_wide": (lambda x, s, b: normjax.instance_norm(x, s, b), (2, 24, 24, 272)),
    }


def _values_and_grads(fn: Any, x: jax.Array, s: jax.Array, b: jax.Array, ct: jax.Array
                      ) -> tuple:
    loss = lambda x, s, b: jnp.sum(fn(x, s, b) * ct)  # noqa: E731
    return jax.jit(fn)(x, s, b), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, s, b)


@needs_kernels
@pytest.mark.parametrize("name", list(_norms()))
def test_public_norms_match_the_xla_path(name: str) -> None:
    fn, shape = _norms()[name]
    x, ct = rand(shape, 12, loc=0.7, sd=1.5), rand(shape, 13)
    c = shape[1] if name.endswith("nchw") else shape[-1]
    s, b = rand((c,), 14, loc=1.0), rand((c,), 15)
    y, grads = _values_and_grads(fn, x, s, b, ct)
    with normjax.use_native_kernels(False):
        y_ref, grads_ref = _values_and_grads(fn, x, s, b, ct)
    close(y, y_ref, 1e-5)
    for g, r in zip(grads, grads_ref, strict=True):
        close(g, r, 1e-5)


@needs_kernels
def test_public_norms_use_the_kernels_on_cpu() -> None:
    x = rand((2, 4, 4, 8), 16)
    hlo = jax.jit(jax.grad(lambda x: jnp.sum(normjax.group_norm(x, num_groups=2) ** 3))
                  ).lower(x).as_text()
    assert "normjax_moments" in hlo and "normjax_grad" in hlo
    hlo = jax.jit(jax.grad(lambda x: jnp.sum(normjax.layer_norm(x) ** 3))).lower(x).as_text()
    assert "normjax_moments" not in hlo and "normjax_rows" in hlo and "normjax_grad" in hlo
    with normjax.use_native_kernels(False):
        hlo = jax.jit(lambda x: normjax.group_norm(x, num_groups=2)).lower(x).as_text()
    assert "normjax_" not in hlo


@needs_kernels
def test_gradient_only_programs_drop_the_forward_statistics() -> None:
    """The kernel backward recomputes the statistics, so where ``y`` itself is not needed (the
    gradient of ``sum(y * ct)``) the compiled program has no forward pass over ``x`` left."""
    x, ct = rand((2, 4, 4, 8), 17), rand((2, 4, 4, 8), 18)
    hlo = jax.jit(jax.grad(lambda x: jnp.sum(normjax.group_norm(x, num_groups=2) * ct))
                  ).lower(x).compile().as_text()
    assert "normjax_moments" not in hlo and "normjax_grad" in hlo


@needs_kernels
def test_wide_norms_take_the_kernel_backward_only() -> None:
    """More than NATIVE_MAX_CHANNELS channels: the forward statistics stay in XLA; the backward
    takes the kernel where x and g exceed L2 (two sweeps), else XLA too."""
    def hlo(shape: tuple) -> str:
        def loss(x: jax.Array) -> jax.Array:
            y, _ = normjax.batch_norm(x, normjax.batch_norm_init(shape[-1]),
                                      reduction_axes=(0,), train=True)
            return jnp.sum(jnp.tanh(y))
        return jax.jit(jax.value_and_grad(loss)).lower(rand(shape, 24)).as_text()

    big, small = hlo((520, 264)), hlo((64, 264))
    assert "normjax_grad" in big and "normjax_moments" not in big
    assert "normjax_" not in small


@needs_kernels
@pytest.mark.parametrize("outlier", [False, True], ids=["far_from_zero", "outlying_first_rows"])
def test_wide_rows_statistics_stay_accurate(outlier: bool) -> None:
    """Rows wider than 256 channels take one shifted read per block of rows, shifted by the
    mean of the block's first rows; where the block's mean lies more than 4 standard
    deviations from that shift (first rows far off the rest) the block is recomputed with the
    corrected two-pass. Both routes: the variance to 1e-5 of a float64 oracle, the gradient as
    accurate as the pure-JAX twin, bitwise-equal reruns."""
    b, r, c = 1, 15000, 272  # three blocks of 5000 rows
    x = np.random.default_rng(25).normal(1e4, 1.0, (b, r, c)).astype(np.float32)
    if outlier:  # 5000-row blocks; their first rows 1e3 off: 12 sigma from the block's mean
        x[:, np.arange(r) % 5000 < 32] += 1e3
    x = jnp.asarray(x)
    f = jax.jit(_native_ops.group_moments, static_argnums=(1, 2))
    mean, var = f(x, c, True)
    again = f(x + 0, c, True)
    assert np.array_equal(var, again[1]) and np.array_equal(mean, again[0])
    want_mean, want_var = oracle_moments(np.asarray(x), c, True)
    np.testing.assert_allclose(np.asarray(var), want_var, rtol=1e-5)
    close(mean, want_mean, 1e-7)
    gy = rand((b, r, c), 26)
    args = (gy, x, jnp.full((b, c), 1e-5, jnp.float32), rand((1, c), 27, loc=1.0),
            rand((b, c), 28), rand((b, c), 29))
    want = oracle_grad(*(np.asarray(a) for a in args), True)
    got = _native_ops.normalize_grad(*args, True)
    ref = _native_ops.ref_normalize_grad(*args, True)
    for k, t, w in zip(got, ref, want, strict=True):
        scale = np.max(np.abs(w))
        assert np.max(np.abs(np.asarray(k, np.float64) - w)) <= (
            2 * np.max(np.abs(np.asarray(t, np.float64) - w)) + 1e-5 * scale)


@needs_kernels
@pytest.mark.parametrize("layout", [(2, 1024, 128, 32), (1, 20000, 16, 16), (1, 600, 512, 512)],
                         ids=["per_sample", "two_sweeps", "wide_rows"])
def test_grad_kernel_is_as_accurate_as_the_xla_formulas_far_from_zero(layout: tuple) -> None:
    """Data at mean 1e4, std 1: the recomputed statistics and ``sum g (x - mean)`` (accumulated
    as ``sum g x`` in double, minus ``mean * sum g``) lose no more than the pure-JAX twin."""
    b, r, c, g = layout
    x, gy = rand((b, r, c), 19, loc=1e4, sd=1.0), rand((b, r, c), 20)
    args = (gy, x, jnp.full((b, g), 1e-5, jnp.float32), rand((1, c), 21, loc=1.0),
            rand((b, g), 22), rand((b, g), 23))
    want = oracle_grad(*(np.asarray(a) for a in args), True)
    err = lambda got, w: float(np.max(np.abs(np.asarray(got, np.float64) - w))  # noqa: E731
                               / np.max(np.abs(w)))
    got = _native_ops.normalize_grad(*args, True)
    ref = _native_ops.ref_normalize_grad(*args, True)
    for k, t, w in zip(got, ref, want, strict=True):
        assert err(k, w) <= 2 * err(t, w) + 1e-5
        assert err(k, w) < 2e-3


@needs_kernels
@pytest.mark.parametrize("shared", [False, True], ids=["per_seed_params", "shared_params"])
def test_vmap_matches_the_xla_path(shared: bool) -> None:
    """vmap over seeds (batched parameters) and over examples (shared parameters)."""
    x, ct = rand((3, 4, 5, 5, 8), 17), rand((3, 4, 5, 5, 8), 18)
    s = rand((8,) if shared else (3, 8), 19, loc=1.0)
    b = rand((8,) if shared else (3, 8), 20)
    axes = (0, None, None, 0) if shared else (0, 0, 0, 0)

    def loss(x: jax.Array, s: jax.Array, b: jax.Array, ct: jax.Array) -> jax.Array:
        y, _ = normjax.batch_norm(x, normjax.batch_norm_init(8), scale=s, bias=b,
                                  reduction_axes=(0, 1, 2), train=True)
        return jnp.sum(y * ct)

    f = jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1, 2)), in_axes=axes))
    got = f(x, s, b, ct)
    with normjax.use_native_kernels(False):
        want = f(x, s, b, ct)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        close(g, w, 1e-5)


@needs_kernels
def test_vmap_over_seeds_of_a_wide_layer_matches_the_xla_path() -> None:
    """Two seeds of an MLP BatchNorm wider than 256 channels (kernel backward, two sweeps per
    seed) with per-seed parameters."""
    x, ct = rand((2, 520, 264), 60, loc=0.3), rand((2, 520, 264), 61)
    s, b = rand((2, 264), 62, loc=1.0), rand((2, 264), 63)

    def loss(x: jax.Array, s: jax.Array, b: jax.Array, ct: jax.Array) -> jax.Array:
        y, _ = normjax.batch_norm(x, normjax.batch_norm_init(264), scale=s, bias=b,
                                  reduction_axes=(0,), train=True)
        return jnp.sum(jnp.tanh(y) * ct)

    f = jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1, 2))))
    assert "normjax_grad" in f.lower(x, s, b, ct).as_text()
    got = f(x, s, b, ct)
    with normjax.use_native_kernels(False):
        want = f(x, s, b, ct)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        close(g, w, 1e-5)


@needs_kernels
def test_hessian_uses_the_pure_jax_tangents() -> None:
    x = rand((2, 3, 4), 21)
    f = lambda v: jnp.sum(jnp.sin(normjax.layer_norm(x.at[0, 0, :].set(v))))  # noqa: E731
    h = jax.jit(jax.hessian(f))(x[0, 0])
    with normjax.use_native_kernels(False):
        h_ref = jax.jit(jax.hessian(f))(x[0, 0])
    close(h, h_ref, 1e-4)


@needs_kernels
def test_concurrent_kernel_calls_in_one_program() -> None:
    """Independent norms in one jitted program (XLA may run them at once) finish correctly."""
    xs = [rand((8, 16, 16, 32), 30 + i) for i in range(6)]
    cts = [rand((8, 16, 16, 32), 40 + i) for i in range(6)]

    def many(*xs: jax.Array) -> jax.Array:
        return sum(jnp.sum(normjax.group_norm(x, num_groups=8) * ct)
                   for x, ct in zip(xs, cts, strict=True))

    got = jax.jit(jax.grad(many, argnums=tuple(range(6))))(*xs)
    with normjax.use_native_kernels(False):
        want = jax.jit(jax.grad(many, argnums=tuple(range(6))))(*xs)
    for g, w in zip(got, want, strict=True):
        close(g, w, 1e-5)
