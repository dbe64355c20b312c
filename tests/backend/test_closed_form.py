"""Tests for normjax/_fused.py: values and closed-form gradients of fused_normalize.

The reference is autodiff through ``normjax.moments`` + ``normjax.standardize`` (what the
technique functions compute); finite differences run in float64.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normjax._backend import fused_normalize
from normjax._numerics import pool_moments
from normjax.stats import moments, standardize


class Cfg(NamedTuple):
    name: str
    shape: tuple[int, ...]
    axes: tuple[int, ...]
    feat: tuple[int, ...]
    center: bool = True
    bias: bool = True


# The benchmark cases at small size (GroupNorm on its grouped view), plus LN with a
# per-channel scale (reduction axes that are partly feature axes).
CONFIGS = (
    Cfg("group_nhwc", (2, 3, 3, 4, 2), (1, 2, 4), (3, 4)),
    Cfg("group_nchw", (2, 4, 2, 3, 3), (2, 3, 4), (1, 2)),
    Cfg("layer", (2, 3, 8), (2,), (2,)),
    Cfg("batch_nhwc", (4, 3, 3, 5), (0, 1, 2), (3,)),
    Cfg("batch_nchw", (4, 5, 3, 3), (0, 2, 3), (1,)),
    Cfg("batch_mlp", (6, 5), (0,), (1,)),
    Cfg("instance_nhwc", (2, 4, 4, 5), (1, 2), (3,)),
    Cfg("instance_nchw", (2, 5, 4, 4), (2, 3), (1,)),
    Cfg("rms", (2, 3, 8), (2,), (2,), center=False, bias=False),
    Cfg("layer_chw_channel_scale", (2, 3, 4, 4), (1, 2, 3), (1,)),
)
IDS = [c.name for c in CONFIGS]


def _inputs(cfg: Cfg, dtype: Any = jnp.float32, seed: int = 0) -> dict[str, Any]:
    """Random inputs (NumPy-generated: no per-shape compilation of random ops)."""
    rng = np.random.default_rng(seed)
    fshape = tuple(cfg.shape[a] for a in cfg.feat)
    kshape = tuple(1 if a in cfg.axes else n for a, n in enumerate(cfg.shape))
    arrays = {
        "x": 2 * rng.standard_normal(cfg.shape) + 0.5,
        "scale": 1 + 0.3 * rng.standard_normal(fshape),
        "bias": 0.3 * rng.standard_normal(fshape) if cfg.bias else None,
        "ct": rng.standard_normal(cfg.shape),
        "cm": rng.standard_normal(kshape),
    }
    out = {k: None if v is None else jnp.asarray(v, dtype) for k, v in arrays.items()}
    out["mask"] = jnp.asarray(rng.random(cfg.shape) < 0.6)
    return out


def _reference(cfg: Cfg, x, scale, bias, eps, mask=None):
    st = moments(x, cfg.axes, mask=mask, center=cfg.center, keepdims=True)
    y = standardize(x, st.mean, st.var, epsilon=eps, scale=scale, bias=bias,
                    feature_axes=cfg.feat)
    return y, st


def _fused(cfg: Cfg, x, scale, bias, eps, mask=None):
    return fused_normalize(x, scale, bias, reduction_axes=cfg.axes, feature_axes=cfg.feat,
                           epsilon=eps, center=cfg.center, mask=mask, keepdims=True)


def _loss(impl, cfg: Cfg, ct, cm, mask=None):
    """Scalar loss touching y and both moments, so their cotangents are exercised too."""
    def loss(x, scale, bias, eps):
        y, st = impl(cfg, x, scale, bias, eps, mask)
        sdt, cms = st.mean.dtype, cm.astype(st.mean.dtype)
        return (jnp.sum(y * ct).astype(sdt) + jnp.sum(st.mean * cms)
                + 0.5 * jnp.sum(st.var * cms))
    return loss


def _assert_rel(actual, expected, rtol: float) -> None:
    """max |actual - expected| <= rtol * max |expected| (relative to the array's scale)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    err = np.max(np.abs(actual - expected), initial=0.0)
    assert err <= rtol * max(np.max(np.abs(expected), initial=0.0), 1e-30), err


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_values_and_gradients_match_autodiff(cfg: Cfg, masked: bool) -> None:
    d = _inputs(cfg)
    mask = d["mask"] if masked else None
    argnums = (0, 1, 2, 3) if cfg.bias else (0, 1, 3)

    def both(x, scale, bias, eps):  # one compilation for the fused path and the reference
        out = []
        for impl in (_fused, _reference):
            y, st = impl(cfg, x, scale, bias, eps, mask)
            grads = jax.grad(_loss(impl, cfg, d["ct"], d["cm"], mask), argnums)(x, scale, bias, eps)
            out.append((y, *st, *grads))
        return out

    got, want = jax.jit(both)(d["x"], d["scale"], d["bias"], jnp.float32(1e-3))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        _assert_rel(g, w, 1e-5)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_gradients_match_finite_differences_float64(cfg: Cfg) -> None:
    """Central differences along random directions of (x, scale, bias) vs the closed form."""
    with jax.enable_x64(True):
        d = _inputs(cfg, jnp.float64)
        mask = d["mask"] if cfg.name in ("batch_nhwc", "group_nhwc", "layer") else None
        loss = _loss(_fused, cfg, d["ct"], d["cm"], mask)
        params = tuple(d[k] for k in ("x", "scale", "bias") if d[k] is not None)
        f = lambda p: loss(p[0], p[1], p[2] if cfg.bias else None, 1e-3)  # noqa: E731
        rng = np.random.default_rng(1)
        dirs = [tuple(jnp.asarray(rng.standard_normal(p.shape)) for p in params)
                for _ in range(3)]

        @jax.jit
        def check(params, dirs, eps=1e-5):
            grads = jax.grad(f)(params)
            out = []
            for v in dirs:
                plus = [p + eps * t for p, t in zip(params, v, strict=True)]
                minus = [p - eps * t for p, t in zip(params, v, strict=True)]
                fd = (f(plus) - f(minus)) / (2 * eps)
                dot = sum(jnp.vdot(g, t) for g, t in zip(grads, v, strict=True))
                out.append((fd, dot))
            return out

        for fd, dot in check(params, dirs):
            np.testing.assert_allclose(float(dot), float(fd), rtol=1e-6, atol=1e-8)


def _grads_both(cfg: Cfg, d: dict, mask: Any, argnums: tuple[int, ...] = (0, 1, 2)):
    """Jitted gradients of the test loss through the fused path and the reference."""
    def both(x, scale, bias, eps):
        return [jax.grad(_loss(impl, cfg, d["ct"], d["cm"], mask), argnums)(x, scale, bias, eps)
                for impl in (_fused, _reference)]
    return jax.jit(both)(d["x"], d["scale"], d["bias"], 1e-3)


def test_second_order_reverse_matches_autodiff() -> None:
    cfg = CONFIGS[0]
    d = _inputs(cfg)
    v = jnp.asarray(np.random.default_rng(7).standard_normal(cfg.shape), jnp.float32)

    def hvp(impl):
        loss = _loss(impl, cfg, d["ct"], d["cm"], d["mask"])
        gx = lambda x: jax.grad(loss)(x, d["scale"], d["bias"], 1e-3)  # noqa: E731
        return jax.grad(lambda x: jnp.sum(gx(x) * v))(d["x"])

    got, want = jax.jit(lambda: (hvp(_fused), hvp(_reference)))()
    _assert_rel(got, want, 1e-4)


def test_hessian_forward_over_reverse_matches_autodiff() -> None:
    cfg = CONFIGS[2]
    d = _inputs(cfg)

    def hess(impl):
        return jax.hessian(lambda x: _loss(impl, cfg, d["ct"], d["cm"])(
            x, d["scale"], d["bias"], 1e-3))(d["x"])

    got, want = jax.jit(lambda: (hess(_fused), hess(_reference)))()
    _assert_rel(got, want, 1e-4)


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.name for c in CONFIGS])
def test_forward_mode_matches_autodiff_of_the_reference(cfg: Cfg) -> None:
    """jax.jvp through every input (x, scale, bias, epsilon): the closed-form tangent."""
    d = _inputs(cfg)
    rng = np.random.default_rng(5)
    primals = (d["x"], d["scale"], d["bias"], jnp.float32(1e-3))
    tangents = jax.tree.map(
        lambda p: jnp.asarray(rng.standard_normal(jnp.shape(p)), jnp.float32), primals)

    def jvp(impl):
        return jax.jvp(lambda *a: impl(cfg, *a), primals, tangents)[1]

    got, want = jax.jit(lambda: (jvp(_fused), jvp(_reference)))()
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        _assert_rel(g, w, 1e-4)


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_axis_name_under_vmap_pools_statistics(masked: bool) -> None:
    """Per-member BN over rows, statistics pooled across a vmapped axis == BN on all rows."""
    cfg = Cfg("batch_mlp", (4, 6, 3), (0, 1), (2,))
    d = _inputs(cfg)
    mask = d["mask"] if masked else None

    def pooled(x, s, b, m):
        return fused_normalize(x, s, b, reduction_axes=0, feature_axes=1, epsilon=1e-3,
                               mask=m, axis_name="batch")[0]

    def loss_vmap(x, s, b):
        in_axes = (0, None, None, None if mask is None else 0)
        y = jax.vmap(pooled, in_axes=in_axes, axis_name="batch")(x, s, b, mask)
        return jnp.sum(y * d["ct"])

    def loss_ref(x, s, b):
        return jnp.sum(_reference(cfg, x, s, b, 1e-3, mask)[0] * d["ct"])

    both = jax.jit(lambda *a: [jax.value_and_grad(f, (0, 1, 2))(*a)
                               for f in (loss_vmap, loss_ref)])
    got, want = both(d["x"], d["scale"], d["bias"])
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        _assert_rel(g, w, 1e-5)


def test_axis_name_under_shard_map_pools_statistics() -> None:
    devices = np.array(jax.devices()[:4])
    if devices.size < 4:
        pytest.skip("needs 4 devices (tests/conftest.py sets 8 host devices)")
    mesh = jax.sharding.Mesh(devices, ("data",))
    spec = jax.sharding.PartitionSpec("data")
    cfg = Cfg("batch_mlp", (8, 5), (0,), (1,))
    d = _inputs(cfg)

    rep = jax.sharding.PartitionSpec()

    @functools.partial(jax.shard_map, mesh=mesh, in_specs=(spec, rep, rep, spec),
                       out_specs=(spec, rep, rep))
    def grads(x, s, b, ct):
        def loss(x, s, b):
            y, _ = fused_normalize(x, s, b, reduction_axes=0, feature_axes=1, epsilon=1e-3,
                                   axis_name="data")
            return jnp.sum(y * ct)
        return jax.grad(loss, (0, 1, 2))(x, s, b)

    def grads_ref(x, s, b, ct):
        return jax.grad(lambda x, s, b: jnp.sum(_reference(cfg, x, s, b, 1e-3)[0] * ct),
                        (0, 1, 2))(x, s, b)

    args = (d["x"], d["scale"], d["bias"], d["ct"])
    for g, w in zip(jax.jit(grads)(*args), jax.jit(grads_ref)(*args), strict=True):
        _assert_rel(g, w, 1e-5)


def test_fully_masked_group_gets_finite_direct_gradient() -> None:
    cfg = CONFIGS[2]  # layer norm over the last axis
    d = _inputs(cfg)
    mask = jnp.ones(cfg.shape, bool).at[0, 1].set(False)
    got, want = _grads_both(cfg, d, mask)
    for g, w in zip(got, want, strict=True):
        assert np.all(np.isfinite(g))
        _assert_rel(g, w, 1e-5)


def test_bfloat16_input_keeps_dtypes_and_matches_float32() -> None:
    cfg = CONFIGS[0]
    d = _inputs(cfg, jnp.bfloat16)
    d32 = {k: v.astype(jnp.float32) for k, v in d.items()}

    @jax.jit
    def run(d, d32):
        y = _fused(cfg, d["x"], d["scale"], d["bias"], 1e-3)[0]
        y_ref = _reference(cfg, d32["x"], d32["scale"], d32["bias"], 1e-3)[0]
        g = jax.grad(_loss(_fused, cfg, d["ct"], d["cm"]), (0, 1, 2))(
            d["x"], d["scale"], d["bias"], 1e-3)
        g_ref = jax.grad(_loss(_reference, cfg, d32["ct"], d32["cm"]), (0, 1, 2))(
            d32["x"], d32["scale"], d32["bias"], 1e-3)
        return (y, *g), (y_ref, *g_ref)

    got, want = run(d, d32)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == jnp.bfloat16
        _assert_rel(g, w, 5e-2)


def test_residuals_hold_no_full_size_temporary() -> None:
    cfg = CONFIGS[0]
    d = _inputs(cfg)
    f = lambda x: _fused(cfg, x, d["scale"], d["bias"], 1e-3)[0]  # noqa: E731
    _, vjp = jax.vjp(jax.jit(f), d["x"])
    sizes = [leaf.size for leaf in jax.tree.leaves(vjp)]
    assert sizes.count(d["x"].size) == 1  # the input itself, nothing derived from it


@pytest.mark.parametrize("params", ["scale", "bias", "none"])
def test_optional_parameters(params: str) -> None:
    cfg = CONFIGS[3]
    d = _inputs(cfg)
    scale = d["scale"] if params == "scale" else None
    bias = d["bias"] if params == "bias" else None

    def both(x):
        out = []
        for impl in (_fused, _reference):
            f = lambda x, impl=impl: impl(cfg, x, scale, bias, 1e-3)[0]  # noqa: E731
            out.append((f(x), jax.grad(lambda x, f=f: jnp.sum(f(x) * d["ct"]))(x)))
        return out

    got, want = jax.jit(both)(d["x"])
    for g, w in zip(got, want, strict=True):
        _assert_rel(g, w, 1e-5)


def test_keepdims_false_squeezes_moments() -> None:
    cfg = CONFIGS[3]
    d = _inputs(cfg)
    _, st = jax.jit(lambda x: fused_normalize(x, reduction_axes=cfg.axes, feature_axes=cfg.feat,
                                              epsilon=0.0))(d["x"])
    assert st.mean.shape == st.var.shape == st.count.shape == (5,)
    np.testing.assert_allclose(st.count, 36.0)


def test_pool_moments_over_channels_equals_moments_over_all_axes() -> None:
    d = _inputs(CONFIGS[0])

    @jax.jit
    def both(x, mask):
        merged = pool_moments(moments(x, (1, 2), mask=mask, keepdims=True), (4,), keepdims=True)
        return merged, moments(x, (1, 2, 4), mask=mask, keepdims=True)

    merged, direct = both(d["x"], d["mask"])
    for a, b in zip(merged, direct, strict=True):
        _assert_rel(a, b, 1e-6)


def test_traced_epsilon_gradient() -> None:
    cfg = CONFIGS[2]
    d = _inputs(cfg)

    def grad_eps(impl):
        return jax.grad(lambda e: jnp.sum(impl(cfg, d["x"], d["scale"], d["bias"], e)[0]
                                          * d["ct"]))(0.5)

    got, want = jax.jit(lambda: (grad_eps(_fused), grad_eps(_reference)))()
    _assert_rel(got, want, 1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(x=jnp.ones((3, 4), jnp.int32)), TypeError, "floating-point input"),
        (dict(epsilon=jnp.ones(2)), ValueError, "epsilon must be a scalar"),
        (dict(epsilon=-1.0), ValueError, "epsilon must be a finite number"),
        (dict(scale=jnp.ones(3)), ValueError, "scale has shape"),
        (dict(bias=jnp.ones((2, 2))), ValueError, "bias has shape"),
        (dict(reduction_axes=()), ValueError, "reduce over no axes"),
        (dict(reduction_axes=5), ValueError, "out of range"),
        (dict(feature_axes=(1, 1)), ValueError, "more than once"),
        (dict(mask=np.ones((2, 4), bool)), ValueError, "mask of shape"),
    ],
)
def test_bad_input_raises(kwargs: dict, error: type, match: str) -> None:
    base = dict(x=jnp.ones((3, 4)), scale=jnp.ones(4), bias=None, reduction_axes=1,
                feature_axes=1, epsilon=1e-5)
    base.update(kwargs)
    x = base.pop("x")
    with pytest.raises(error, match=match):
        fused_normalize(x, **base)
