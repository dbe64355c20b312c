"""Test configuration: the CPU backend with 8 host devices, strict JAX promotion.

The suite's contracts (eight host devices for the multi-device tests, float64 oracles at float32
tolerances, the CPU's choices such as the runner's multi-seed strategy) are those of the CPU
backend, where CI runs. So on a machine with an accelerator the tests still run on the CPU,
unless ``JAX_PLATFORMS`` names the accelerator (``JAX_PLATFORMS=cuda pytest``). Then float32
matmuls and convolutions run at full precision (no TF32, which the oracles' tolerances do not
allow for), and the tests marked ``cpu_only`` are skipped.
"""

import os

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_FLAG = "--xla_force_host_platform_device_count=8"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import jax  # noqa: E402  (XLA_FLAGS must be set before jax initializes its backends)

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cpu_only: needs the CPU backend (its eight host devices or its choices)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = jax.default_backend()
    if backend == "cpu":
        return
    skip = pytest.mark.skip(reason=f"cpu_only: the default backend is {backend}")
    for item in items:
        if item.get_closest_marker("cpu_only"):
            item.add_marker(skip)
