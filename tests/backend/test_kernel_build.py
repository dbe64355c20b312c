"""Routing of the norms to the CPU kernels, the on/off switch, and the fallbacks (no compiler,
``NORMJAX_NATIVE=0``) and the build cache, each in a fresh process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import normjax
from normjax._backend import kernels as _native_ops
from normjax._backend.config import Config
from normjax._backend.routing import NATIVE_MAX_CHANNELS, TWO_SWEEP_BYTES, native_layout
from tests.native_oracle import needs_kernels, rand

ROOT = Path(__file__).resolve().parents[2]


def _cfg(axes: tuple, feat: tuple, **kw: Any) -> Config:
    base = dict(center=True, fast_variance=False, axis_name=None, axis_index_groups=None,
                dtype=np.dtype(np.float32))
    return Config(axes, feat, **{**base, **kw})


@needs_kernels
def test_native_layout_routing() -> None:
    x = jnp.zeros((2, 3, 4, 8), jnp.float32)
    assert native_layout(_cfg((0, 1, 2), (3,)), x, (None, None), None) == (1, 24, 8, 8)
    assert native_layout(_cfg((1, 2), (3,)), x, (None, None), None) == (2, 12, 8, 8)
    rows = native_layout(_cfg((3,), (3,)), x, (None, None), None)
    assert rows == (24, 1, 8, 1) and rows.rows and not rows.forward  # LayerNorm: rows kernel
    xg = x.reshape(2, 3, 4, 4, 2)  # GroupNorm's grouped view: 4 groups of 2 channels
    lay = native_layout(_cfg((1, 2, 4), (3, 4)), xg, (None, None), None)
    assert lay == (2, 12, 8, 4) and lay.forward
    # Not routed: channels-first, a mask, axis_name, float64/bfloat16, a broadcast parameter.
    assert native_layout(_cfg((2, 3), (1,)), x, (None, None), None) is None
    assert native_layout(_cfg((0, 2, 3), (1,)), x, (None, None), None) is None
    wide = jnp.zeros((4, NATIVE_MAX_CHANNELS + 1), jnp.float32)  # MLP BatchNorm, wide layer
    assert native_layout(_cfg((0,), (1,)), wide, (None, None), None) is None  # fits L2: XLA
    rows = TWO_SWEEP_BYTES // (8 * wide.shape[1]) + 1  # x and g larger than L2: two sweeps
    lay = native_layout(_cfg((0,), (1,)), jnp.zeros((rows, wide.shape[1])), (None, None), None)
    assert lay == (1, rows, wide.shape[1], wide.shape[1]) and not lay.forward  # backward only
    assert native_layout(_cfg((1,), (1,)), wide, (None, None), None) is not None  # LayerNorm
    assert native_layout(_cfg((0, 1, 2), (3,)), x, (None, None), jnp.ones(x.shape, bool)) is None
    assert native_layout(_cfg((0, 1, 2), (3,), axis_name="d"), x, (None, None), None) is None
    assert native_layout(_cfg((0, 1, 2), (3,)), x.astype(jnp.bfloat16), (None, None), None) is None
    lay = native_layout(_cfg((0, 1, 2), (3,)), x, (jnp.ones((1, 1, 1, 8)), None), None)
    assert lay is None
    assert native_layout(_cfg((0, 1, 2), (3,), native=False), x, (None, None), None) is None


@needs_kernels
def test_switch_applies_to_the_backward_of_the_norms_called_under_it() -> None:
    """The backward is traced after the ``with`` block has exited; it still follows the
    setting that was in force when the norm was called (and vice versa)."""
    x, ct = rand((2, 4, 4, 8), 40), rand((2, 4, 4, 8), 41)

    def loss(x: jax.Array, native: bool) -> jax.Array:
        with normjax.use_native_kernels(native):
            y = normjax.group_norm(x, num_groups=4)
        return jnp.sum(y * ct)

    off = jax.jit(jax.grad(loss), static_argnums=1).lower(x, False).as_text()
    assert "normjax_" not in off
    with normjax.use_native_kernels(False):
        on = jax.jit(jax.grad(loss), static_argnums=1).lower(x, True).as_text()
    assert "normjax_grad" in on


def test_two_sweep_threshold_matches_the_kernels() -> None:
    """The routing's L2 budget is the kernels' (the sample size above which they take two
    sweeps): a wide layout routed to them always takes the two-sweep backward."""
    src = (ROOT / "normjax" / "_backend" / "csrc" / "norm_kernels.cc").read_text()
    found = re.search(r"#define NORMJAX_SAMPLE_BYTES \((\d+) << (\d+)\)", src)
    assert found is not None
    assert TWO_SWEEP_BYTES == int(found[1]) << int(found[2])


def test_switch_rejects_non_bool() -> None:
    with pytest.raises(TypeError, match="must be a bool"):
        normjax.set_native_kernels("yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a bool"), normjax.use_native_kernels(1):  # type: ignore[arg-type]
        pass


def test_group_moments_rejects_groups_that_do_not_divide_channels() -> None:
    with pytest.raises(ValueError, match="divide"):
        _native_ops.group_moments(jnp.zeros((2, 3, 10)), 4, True)


_PROBE = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
import jax, jax.numpy as jnp, numpy as np, normjax
x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype(np.float32))
y = normjax.group_norm(x, num_groups=2)
print("available", normjax._backend.build.native_available())
print("status", normjax.native_status())
print("std", float(jnp.std(y)))
"""


def _probe(env: dict[str, str]) -> str:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          env=full, timeout=300, check=True)
    return done.stdout


def test_kernels_off_by_environment_and_norms_still_work() -> None:
    out = _probe({"NORMJAX_NATIVE": "0"})
    assert "available False" in out and "NORMJAX_NATIVE=0" in out
    assert _std(out) == pytest.approx(1.0, abs=1e-3)


def _std(out: str) -> float:
    return float(next(ln for ln in out.splitlines() if ln.startswith("std ")).split()[1])


def test_no_compiler_falls_back_with_a_reason(tmp_path: Path) -> None:
    out = _probe({"CXX": str(tmp_path / "no-such-compiler"),
                  "NORMJAX_CACHE_DIR": str(tmp_path / "cache")})
    assert "available False" in out and "no C++ compiler" in out
    assert "normjax CPU kernels not in use" in out
    assert _std(out) == pytest.approx(1.0, abs=1e-3)


def test_failed_build_falls_back_with_a_reason(tmp_path: Path) -> None:
    """A compiler that fails (here ``false``) costs one log line, never the program."""
    out = _probe({"CXX": shutil.which("false") or "/bin/false",
                  "NORMJAX_CACHE_DIR": str(tmp_path / "cache")})
    assert "available False" in out and "failed" in out
    assert "normjax CPU kernels not in use" in out
    assert _std(out) == pytest.approx(1.0, abs=1e-3)


@needs_kernels
def test_build_goes_to_the_cache_once(tmp_path: Path) -> None:
    """A build from an empty cache, then none. The compiler is wrapped to build without
    optimization (a later -O wins): the same build path, a few seconds instead of ~15."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    wrapper = tmp_path / "cxx-O0"
    wrapper.write_text(f'#!/bin/sh\nexec "{compiler}" "$@" -O0\n')
    wrapper.chmod(0o755)
    env = {"NORMJAX_CACHE_DIR": str(tmp_path / "cache"), "CXX": str(wrapper)}
    out = _probe(env)
    assert "available True" in out
    assert _std(out) == pytest.approx(1.0, abs=1e-3)
    built = list((tmp_path / "cache").glob("norm_kernels-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    assert "available True" in _probe(env)
    assert built[0].stat().st_mtime_ns == stamp
