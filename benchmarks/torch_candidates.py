"""PyTorch (eager) counterparts of the benchmark cases, used only when torch is installed.

They run where JAX runs: on the CPU, or on CUDA when JAX's backend is a GPU and torch sees one
(there torch's BatchNorm calls cuDNN; its timers then wait with ``torch.cuda.synchronize``).

Channels-last cases hand torch a permuted view (logical NCHW over NHWC memory), the same bytes
the JAX candidates read. Parameters take the input dtype (torch's kernels want them equal).

Importing this module sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set): torch's OpenMP threads
otherwise spin for milliseconds after each call, taking the cores from whatever the interleaved
timing runs next (measured: normjax's GroupNorm forward 2-3x slower right after a torch call).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from benchmarks.candidates import BN_DECAY, NUM_GROUPS, Case
from benchmarks.timing import with_block

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (and its OpenMP) loads

__all__ = ["torch_available", "torch_device", "torch_timers"]


def torch_available() -> bool:
    """Whether the torch candidates run: ``import torch`` would succeed (checked without
    importing it) and ``--no-torch`` (``NORMJAX_BENCH_TORCH=0``) was not given."""
    if os.environ.get("NORMJAX_BENCH_TORCH") == "0":
        return False
    return importlib.util.find_spec("torch") is not None


def torch_device() -> str:
    """``"cuda"`` when JAX runs on a GPU and torch sees one, else ``"cpu"``."""
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_version() -> str:
    """torch's version and device (with cuDNN's version on CUDA) for the results."""
    import torch

    if torch_device() == "cpu":
        return f"{torch.__version__} (cpu)"
    return (f"{torch.__version__} (cuda {torch.version.cuda}, "
            f"cudnn {torch.backends.cudnn.version()})")


def _functional(case: Case, torch: Any, dtype: Any, device: str) -> Callable[..., Any]:
    f = torch.nn.functional
    eps, c = case.epsilon, case.channels
    if case.kind == "layer":
        return lambda x, w, b: f.layer_norm(x, (c,), w, b, eps)
    if case.kind == "rms":
        return lambda x, w, b: f.rms_norm(x, (c,), w, eps)
    if case.kind == "group":
        return lambda x, w, b: f.group_norm(x, NUM_GROUPS, w, b, eps)
    if case.kind == "instance":
        return lambda x, w, b: f.instance_norm(x, weight=w, bias=b, eps=eps)
    mean = torch.zeros(c, dtype=dtype, device=device)
    var = torch.ones(c, dtype=dtype, device=device)
    return lambda x, w, b: f.batch_norm(x, mean, var, w, b, training=True,
                                        momentum=1 - BN_DECAY, eps=eps)


def _to_channels_first(case: Case, a: Any) -> Any:
    """NHWC data as a logical NCHW tensor (no copy) when the case is channels-last."""
    if case.kind in ("layer", "rms") or a.ndim == 2 or case.channel_axis % a.ndim == 1:
        return a
    return a.permute(0, a.ndim - 1, *range(1, a.ndim - 1))


def torch_timers(case: Case, x: np.ndarray, ct: np.ndarray) -> dict[str, Callable[[], Any]]:
    """``{"fwd": ..., "fwd+bwd": ..., "value+grad": ...}`` zero-argument callables for ``case``
    (inputs float32)."""
    import torch

    device = torch_device()
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    dtype = getattr(torch, case.dtype)

    def tensor(a: np.ndarray) -> Any:
        t = torch.from_numpy(np.asarray(a, np.float32)).to(device=device, dtype=dtype)
        return _to_channels_first(case, t)

    xt, ctt = tensor(x), tensor(ct)
    w = torch.ones(case.channels, dtype=dtype, device=device)
    b = torch.zeros(case.channels, dtype=dtype, device=device)
    fn = _functional(case, torch, dtype, device)
    xg, wg, bg = (t.detach().clone().requires_grad_(True) for t in (xt, w, b))

    def forward() -> Any:
        with torch.no_grad():
            return fn(xt, w, b)

    inputs = (xg, wg) if case.kind == "rms" else (xg, wg, bg)

    def forward_backward() -> Any:
        return torch.autograd.grad(fn(xg, wg, bg), inputs, ctt)

    def value_and_grad() -> Any:
        y = fn(xg, wg, bg)
        return (y.detach() * ctt).sum(), torch.autograd.grad(y, inputs, ctt)

    # torch's backward always runs after its forward (no mode drops it); value+grad also
    # computes the loss sum(y * ct) from y, as the JAX programs of that mode do.
    timers = {"fwd": forward, "fwd+bwd": forward_backward, "value+grad": value_and_grad}
    if device == "cpu":
        return timers
    sync = lambda _: torch.cuda.synchronize()  # noqa: E731
    return {mode: with_block(t, sync) for mode, t in timers.items()}
