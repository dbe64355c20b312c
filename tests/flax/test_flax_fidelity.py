"""Where flax defines a behaviour, normjax's layers follow it; where they differ on purpose, the
difference is pinned here and listed in docs/switching_from_flax.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as fx

import normjax
import normjax.linen as nnn
import normjax.nnx as nx
from normjax._numerics import shifted_moments
from tests.flax_parity import KEY, assert_close, data, standard

BIAS = jax.nn.initializers.constant(0.25)


# --- nothing left to reduce: flax returns the bias ------------------------------------------

@pytest.mark.parametrize(("make", "shape"), [
    (lambda nn: nn.InstanceNorm(feature_axes=(1, 2, 3), bias_init=BIAS), (2, 3, 4, 5)),
    (lambda nn: nn.LayerNorm(reduction_axes=(), feature_axes=-1, bias_init=BIAS), (4, 6)),
    (lambda nn: nn.GroupNorm(num_groups=None, group_size=1, bias_init=BIAS), (4, 6)),
], ids=["instance", "layer", "group"])
def test_linen_degenerate_reductions_return_the_bias(make: Callable[[Any], Any],
                                                     shape: tuple[int, ...]) -> None:
    x = data(shape)
    y_t, v = standard(make(fnn).init_with_output, KEY, x)
    y_o = make(nnn).apply(v, x)
    assert_close(y_o, y_t)
    np.testing.assert_allclose(y_o, 0.25, atol=1e-6)


def test_nnx_instance_norm_without_spatial_axes_returns_the_bias() -> None:
    x = data((10, 6))
    ours, theirs = (lib.InstanceNorm(6, rngs=fx.Rngs(0)) for lib in (nx, fx))
    assert_close(ours(x), theirs(x))


def test_per_example_batch_norm_stays_loud() -> None:
    """The one degenerate case flax gets silently wrong: BatchNorm with one element per
    feature in training normalizes everything to 0 (a per-example model under vmap)."""
    bn = nnn.BatchNorm(use_running_average=False)
    with pytest.raises(ValueError, match="single element per feature"):
        bn.init(KEY, data((1, 4)))


# --- the same exception, flax's wording first -----------------------------------------------

def _error(call: Callable[[], Any]) -> BaseException:
    try:
        standard(call)
    except Exception as e:
        return e
    raise AssertionError("no exception")


def _conv_image() -> jax.Array:
    return data((1, 5, 5, 2))


MISUSES: list[tuple[str, Callable[[Any], Any]]] = [
    ("linen InstanceNorm on the batch axis",
     lambda m: m.InstanceNorm(feature_axes=(0, -1)).init(KEY, data((2, 3, 4)))),
    ("linen GroupNorm without the channel axis",
     lambda m: m.GroupNorm(num_groups=2, reduction_axes=(1, 2)).init(KEY, data((2, 3, 3, 4)))),
    ("linen GroupNorm with both group arguments",
     lambda m: m.GroupNorm(group_size=2).init(KEY, data((2, 4)))),
    ("linen GroupNorm with a non-divisor",
     lambda m: m.GroupNorm(num_groups=3).init(KEY, data((2, 4)))),
    ("linen GroupNorm with a bad group size",
     lambda m: m.GroupNorm(num_groups=None, group_size=3).init(KEY, data((2, 4)))),
    ("linen SpectralNorm on a conv kernel",
     lambda m: m.SpectralNorm(fnn.Conv(3, (3, 3)), error_on_non_matrix=True).init(
         KEY, _conv_image(), update_stats=False)),
    ("nnx InstanceNorm on the batch axis",
     lambda m: m.InstanceNorm(4, feature_axes=0, rngs=fx.Rngs(0))(data((2, 4)))),
    ("nnx GroupNorm with a non-divisor",
     lambda m: m.GroupNorm(4, num_groups=3, rngs=fx.Rngs(0))),
    ("nnx GroupNorm with a bad group size",
     lambda m: m.GroupNorm(4, num_groups=None, group_size=3, rngs=fx.Rngs(0))),
    ("nnx SpectralNorm on a conv kernel",
     lambda m: m.SpectralNorm(fx.Conv(2, 3, (3, 3), rngs=fx.Rngs(0)),
                              error_on_non_matrix=True, rngs=fx.Rngs(1))),
    ("nnx Dropout without keys",
     lambda m: m.Dropout(0.5)(data((2, 3)), deterministic=False)),
]


@pytest.mark.parametrize(("label", "misuse"), MISUSES, ids=[m[0] for m in MISUSES])
def test_errors_open_with_flax_wording(label: str, misuse: Callable[[Any], Any]) -> None:
    lib_ours, lib_theirs = (nnn, fnn) if label.startswith("linen") else (nx, fx)
    ours, theirs = _error(lambda: misuse(lib_ours)), _error(lambda: misuse(lib_theirs))
    assert type(ours) is type(theirs)
    flax_text = str(theirs).split("\n--------------------")[0]
    assert str(ours).startswith(flax_text), (str(ours), flax_text)
    assert len(str(ours).split("\n--------------------")[0]) > len(flax_text)  # plus a hint


# --- differences kept on purpose --------------------------------------------------------------

def test_constant_input_normalizes_to_exactly_zero_where_shifted_statistics_serve() -> None:
    """Zero variance: flax returns rounding noise times 1/sqrt(epsilon). normjax returns
    exactly 0 where its statistics are shifted by a group's first element (the CPU kernels;
    ``shifted_moments``, the formulation compiled for accelerators): ``x - k`` is exactly 0.
    On the CPU's XLA path (``NORMJAX_NATIVE=0``, dtypes and shapes the kernels do not take) the
    mean is ``sum(x) / n`` and the noise is flax's."""
    x = jnp.full((4, 8), 0.1)
    theirs = np.asarray(fnn.LayerNorm().init_with_output(KEY, x)[0])
    assert np.all(theirs != 0)  # flax's rounding noise, amplified by 1/sqrt(1e-6)
    stats = shifted_moments(x, (1,))
    assert np.all(stats.mean == x[:, :1]) and np.all(stats.var == 0)
    if normjax.native_status().startswith("loaded"):
        ours = nnn.LayerNorm().init_with_output(KEY, x)[0]
        np.testing.assert_array_equal(ours, np.zeros((4, 8)))
    with normjax.use_native_kernels(False):
        xla_path = np.asarray(nnn.LayerNorm().init_with_output(KEY, x)[0])
    assert np.max(np.abs(xla_path)) <= 1.01 * np.max(np.abs(theirs))


def test_fast_variance_is_honoured_on_every_path() -> None:
    """use_fast_variance=True is flax's one-pass formula with the CPU kernels on or off."""
    x = data((2, 4, 4, 8)) + 1e3  # where the one-pass form visibly loses digits
    layer = nnn.GroupNorm(num_groups=2, use_fast_variance=True)
    v = layer.init(KEY, x)
    with_kernels = jax.jit(layer.apply)(v, x)
    with normjax.use_native_kernels(False):
        without = jax.jit(layer.apply)(v, x)
    np.testing.assert_allclose(with_kernels, without, rtol=1e-6, atol=1e-6)
    stable = nnn.GroupNorm(num_groups=2).apply(v, x)
    assert np.max(np.abs(np.asarray(with_kernels) - np.asarray(stable))) > 1e-4


def test_nnx_spectral_norm_keeps_the_wrapped_weights() -> None:
    """flax.nnx overwrites the layer's kernel with W / sigma on every call (a second call
    divides again); normjax uses the normalized weight for the call only."""
    x = data((3, 4))
    ours, theirs = (lib.SpectralNorm(fx.Linear(4, 5, rngs=fx.Rngs(0)), rngs=fx.Rngs(1))
                    for lib in (nx, fx))
    kernel = ours.layer_instance.kernel[...]
    assert_close(ours(x), theirs(x))
    np.testing.assert_array_equal(ours.layer_instance.kernel[...], kernel)
    assert not np.allclose(theirs.layer_instance.kernel[...], kernel)
