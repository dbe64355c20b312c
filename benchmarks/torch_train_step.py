"""The training-step benchmark's CNN in PyTorch (eager, channels-last); used only when torch is
installed (see :mod:`benchmarks.train_step`). It runs where JAX runs: on CUDA when JAX's backend
is a GPU and torch sees one (:func:`benchmarks.torch_candidates.torch_device`), else on the CPU."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.torch_candidates import torch_device
from experiments.data import Dataset

__all__ = ["torch_call"]


def _model(torch: Any, use_bn: bool, width: int, depth: int, num_classes: int,
           image: tuple[int, ...]) -> Any:
    nn = torch.nn
    layers: list[Any] = []
    channels, size = image[-1], image[0]
    for _ in range(depth):
        layers.append(nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=not use_bn))
        if use_bn:
            layers.append(nn.BatchNorm2d(width, momentum=0.01))
        layers.append(nn.ReLU())
        channels, size = width, (size + 1) // 2
    layers += [nn.Flatten(), nn.Linear(width * size * size, num_classes)]
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def torch_call(ds: Dataset, use_bn: bool, steps: int, batch: int, width: int, depth: int,
               lr: float, momentum: float) -> Callable[[], Any]:
    """``steps`` SGD-momentum steps of the benchmark CNN per call, batches drawn at random."""
    import torch

    device = torch_device()
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    model = _model(torch, use_bn, width, depth, ds.num_classes, ds.input_shape).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    # NHWC memory viewed as NCHW: the same bytes the JAX steps read.
    x_all = torch.from_numpy(np.ascontiguousarray(ds.x_train)).to(device).permute(0, 3, 1, 2)
    y_all = torch.from_numpy(ds.y_train.astype(np.int64)).to(device)
    gen = torch.Generator(device=device).manual_seed(1)

    def call() -> Any:
        for _ in range(steps):
            idx = torch.randint(0, len(x_all), (batch,), generator=gen, device=device)
            x = x_all[idx].contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return loss.item()

    return call
