"""MLP and CNN classifiers whose normalization is injected from the registry.

Each hidden block is::

    linear (Dense, or Conv 'SAME' with stride) -> norm -> activation -> dropout
                                    (norm after the activation if norm_position="after_activation")

The norm comes in as :class:`experiments.registry.NormLayers`: an activation-norm factory
(BatchNorm, LayerNorm, ...) and/or a wrapper of the linear layer (WeightNorm).  A linear layer
directly followed by a mean-subtracting norm has no bias (it would be redundant).  Blocks are named
``layer_0 ... layer_{depth-1}`` and the output layer ``head``, so per-layer statistics (gradient
norms, activation moments) can be read off the parameter tree by name.  Each block ``sow``s its
post-activation output (before dropout) into the ``intermediates`` collection.

Convolutions use 'SAME' padding.  By default (``conv_impl="im2col"``) they are computed as patch
extraction + one matmul, ``y[n, o] = sum_{j, c} x_pad[n, o * s + j, c] * kernel[j, c, :]``: XLA:CPU
runs ``lax.conv`` inside a ``lax.scan`` several times slower than outside it, whereas matmuls
stay fast, and under ``vmap`` over runs a matmul becomes a batched matmul rather than a
grouped convolution.  ``conv_impl="xla"`` uses ``flax.linen.Conv``; both have the same
parameters (``kernel (*k, C_in, C_out)``, ``bias``) and outputs.

``depth=0`` gives a linear (logistic-regression) classifier.  The dropout rate is a call
argument so that it can be a traced scalar (vmapped over a grid of rates); whether dropout
layers exist at all is the static ``use_dropout``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

import normjax
from experiments.registry import NormContext, NormLayers

__all__ = ["ACTIVATIONS", "CNN", "CONV_IMPLS", "KERNEL_INITS", "MLP", "NORM_POSITIONS",
           "RECTIFIERS", "Block", "PatchConv", "kernel_init_name", "patch_conv"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "elu": nn.elu,
    "silu": nn.silu,
    "leaky_relu": nn.leaky_relu,
    "identity": lambda x: x,
}
KERNEL_INITS: dict[str, Callable[..., Any]] = {
    "lecun_normal": nn.initializers.lecun_normal(),
    "he_normal": nn.initializers.he_normal(),
    "glorot_normal": nn.initializers.glorot_normal(),
}
#: ``model.kernel_init="auto"``: He (Kaiming) normal for the rectifier family, whose
#: half-zero outputs halve the variance (He et al. 2015), LeCun normal for the others.
RECTIFIERS = ("relu", "leaky_relu", "elu", "gelu", "silu")
NORM_POSITIONS = ("before_activation", "after_activation")


def kernel_init_name(kernel_init: str, activation: str) -> str:
    """The initializer ``kernel_init`` names, with ``"auto"`` resolved for ``activation``."""
    if kernel_init != "auto":
        return kernel_init
    return "he_normal" if activation in RECTIFIERS else "lecun_normal"
CONV_IMPLS = ("im2col", "xla")


def _same_padding(size: int, k: int, stride: int) -> tuple[int, int, int]:
    """'SAME' padding as in ``lax.conv``: (low, high, output size); the extra pad goes high."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2, out


def patch_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...]) -> jax.Array:
    """'SAME' convolution of ``x (N, *spatial, C)`` with ``kernel (*k, C, F)`` as one matmul."""
    ks, (n, *spatial, c) = kernel.shape[:-2], x.shape
    pads = [_same_padding(size, k, s) for size, k, s in zip(spatial, ks, strides, strict=True)]
    x = jnp.pad(x, [(0, 0), *[(lo, hi) for lo, hi, _ in pads], (0, 0)])
    cols = []
    for offset in itertools.product(*(range(k) for k in ks)):
        limit = [o + (out - 1) * s + 1 for o, (_, _, out), s in zip(offset, pads, strides,
                                                                     strict=True)]
        cols.append(lax.slice(x, (0, *offset, 0), (n, *limit, c), (1, *strides, 1)))
    patches = jnp.concatenate(cols, axis=-1)  # (N, *out, prod(k) * C), offsets major
    return patches @ kernel.reshape(-1, kernel.shape[-1])


class PatchConv(nn.Module):
    """``flax.linen.Conv`` with 'SAME' padding, computed by :func:`patch_conv`."""

    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        y = patch_conv(x, kernel, self.strides)
        if not self.use_bias:
            return y
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return y + bias.reshape((1,) * (y.ndim - 1) + (-1,))


# Dropout layers by config name (``technique(dropout_kind=...)``): inverted Bernoulli dropout,
# channel-wise (spatial) dropout, alpha dropout for SELU nets, multiplicative Gaussian noise.
DROPOUTS: dict[str, Callable[..., jax.Array]] = {
    "bernoulli": normjax.dropout, "spatial": normjax.spatial_dropout,
    "alpha": normjax.alpha_dropout, "gaussian": normjax.gaussian_dropout}


class Block(nn.Module):
    """One hidden layer: linear -> norm -> activation -> dropout (see the module docstring)."""

    features: int
    norms: NormLayers
    activation: str = "relu"
    norm_position: str = "before_activation"
    use_dropout: bool = False
    dropout_kind: str = "bernoulli"
    kernel_init: str = "lecun_normal"
    conv_kernel: tuple[int, ...] = ()  # () -> Dense; (k,) -> 1-D conv; (k, k) -> 2-D conv
    stride: int = 1
    conv_impl: str = "im2col"

    def _linear(self) -> nn.Module:
        init = KERNEL_INITS[self.kernel_init]
        bias = not (self.norms.centers and self.norm_position == "before_activation")
        if not self.conv_kernel:
            return nn.Dense(self.features, kernel_init=init, use_bias=bias, name="linear")
        strides = (self.stride,) * len(self.conv_kernel)
        if self.conv_impl == "im2col":
            return PatchConv(self.features, self.conv_kernel, strides, init, bias, name="linear")
        return nn.Conv(self.features, self.conv_kernel, strides=strides, padding="SAME",
                       kernel_init=init, use_bias=bias, name="linear")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, use_running_average: bool,
                 dropout_rate: float | jax.Array = 0.0) -> jax.Array:
        layer = self._linear()
        if self.norms.wrap_linear is not None:
            layer = self.norms.wrap_linear(layer, name="weight_norm")
        x = layer(x)
        act = ACTIVATIONS[self.activation]
        ctx = NormContext(x.ndim, self.features, use_running_average)
        norm = self.norms.norm(ctx, name="norm") if self.norms.norm is not None else None
        if norm is not None and self.norm_position == "before_activation":
            x = act(norm(x))
        elif norm is not None:
            x = norm(act(x))
        else:
            x = act(x)
        self.sow("intermediates", "activation", x)
        if self.use_dropout:
            key = self.make_rng("dropout") if train else None
            x = DROPOUTS[self.dropout_kind](key, x, rate=dropout_rate, train=train)
        return x


class _Classifier(nn.Module):
    """Shared body of :class:`MLP` and :class:`CNN`: ``depth`` blocks, then a Dense head."""

    num_classes: int
    norms: NormLayers = NormLayers()
    depth: int = 2
    width: int = 64
    activation: str = "relu"
    norm_position: str = "before_activation"
    use_dropout: bool = False
    dropout_kind: str = "bernoulli"
    kernel_init: str = "lecun_normal"

    def _block_kwargs(self) -> dict[str, Any]:
        return {"features": self.width, "norms": self.norms, "activation": self.activation,
                "norm_position": self.norm_position, "use_dropout": self.use_dropout,
                "dropout_kind": self.dropout_kind, "kernel_init": self.kernel_init}

    def _body(self, x: jax.Array, make_block: Callable[[int], Block], *, train: bool,
              use_running_average: bool | None, dropout_rate: float | jax.Array) -> jax.Array:
        ura = (not train) if use_running_average is None else use_running_average
        for i in range(self.depth):
            x = make_block(i)(x, train=train, use_running_average=ura, dropout_rate=dropout_rate)
        x = x.reshape((x.shape[0], -1))
        head = nn.Dense(self.num_classes, kernel_init=KERNEL_INITS[self.kernel_init],
                        name="head")
        return head(x)


class MLP(_Classifier):
    """Multi-layer perceptron on flattened inputs: ``(N, ...) -> (N, num_classes)`` logits.

    ``use_running_average`` (BatchNorm mode) defaults to ``not train``; pass it explicitly to
    evaluate with batch statistics (``train=False, use_running_average=False``).
    """

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, use_running_average: bool | None = None,
                 dropout_rate: float | jax.Array = 0.0) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        kwargs = self._block_kwargs()
        return self._body(x, lambda i: Block(**kwargs, name=f"layer_{i}"), train=train,
                          use_running_average=use_running_average, dropout_rate=dropout_rate)


class CNN(_Classifier):
    """Convolutional classifier, channels-last: 1-D on ``(N, L, C)``, 2-D on ``(N, H, W, C)``.

    Convolutions use 'SAME' padding and ``stride`` (2 halves the length each block); the last
    feature map is flattened into the Dense head.
    """

    kernel_size: int = 3
    stride: int = 1
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, use_running_average: bool | None = None,
                 dropout_rate: float | jax.Array = 0.0) -> jax.Array:
        if x.ndim not in (3, 4):
            raise ValueError(f"CNN expects (N, L, C) or (N, H, W, C) inputs, got shape "
                             f"{x.shape}; use the MLP for flat inputs")
        kwargs = {**self._block_kwargs(), "stride": self.stride, "conv_impl": self.conv_impl,
                  "conv_kernel": (self.kernel_size,) * (x.ndim - 2)}
        return self._body(x, lambda i: Block(**kwargs, name=f"layer_{i}"), train=train,
                          use_running_average=use_running_average, dropout_rate=dropout_rate)
