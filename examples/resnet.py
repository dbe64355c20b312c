"""A small ResNet in plain flax (``nn.Conv``, skip connections), with its norm injected.

Written as a user would write it, then run by the experiments runner through its model factory
(``config.model.factory = "examples.resnet:resnet"``; see ``configs/resnet_digits.py`` and
:mod:`experiments.extensions`). As in flax's ImageNet example, the norm is a constructor
argument: ``norm()`` makes the normalization layer of the technique being compared.

Architecture (He et al., 2016, "Deep Residual Learning", pre-activation-free v1 blocks)::

    conv3x3(width, stride stem_stride) -> norm -> relu
    stages: for i, n in enumerate(blocks): n x BasicBlock(width * 2**i, stride 2 after stage 0)
    global average pool -> dropout -> dense(num_classes)

``BasicBlock``: ``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``, the shortcut a strided
1x1 conv + norm where the shape changes. Convolutions start He-normal (He et al. 2015, the
usual choice for ReLU networks; flax's own default is LeCun normal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["BasicBlock", "ResNet", "resnet"]


Conv = partial(nn.Conv, use_bias=False, kernel_init=nn.initializers.he_normal())


class BasicBlock(nn.Module):
    features: int
    strides: int
    norm: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = Conv(self.features, (3, 3), (self.strides, self.strides))
        y = nn.relu(self.norm()(conv(x)))
        y = self.norm()(Conv(self.features, (3, 3))(y))
        if x.shape != y.shape:
            x = Conv(self.features, (1, 1), (self.strides, self.strides))(x)
            x = self.norm()(x)
        return nn.relu(y + x)


class ResNet(nn.Module):
    blocks: Sequence[int]
    width: int
    num_classes: int
    norm: Callable[..., nn.Module]
    dropout_rate: float = 0.0
    stem_stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        stem = Conv(self.width, (3, 3), (self.stem_stride,) * 2)
        x = nn.relu(self.norm()(stem(x)))
        for i, n in enumerate(self.blocks):
            for j in range(n):
                strides = 2 if i > 0 and j == 0 else 1
                x = BasicBlock(self.width * 2**i, strides, self.norm)(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


def resnet(*, norm: Callable[..., nn.Module], dropout_rate: float, num_classes: int,
           input_shape: tuple[int, ...], blocks: Sequence[int] = (1, 1), width: int = 16,
           stem_stride: int = 1) -> ResNet:
    """The model factory: ``blocks`` residual blocks per stage, ``width`` channels first,
    the first convolution strided by ``stem_stride`` (2 halves 28x28 MNIST at once)."""
    if len(input_shape) != 3:
        raise ValueError(f"resnet needs (H, W, C) images, got input_shape {input_shape}")
    return ResNet(tuple(blocks), width, num_classes, norm, dropout_rate, stem_stride)
