"""Test configuration: the CPU backend with 8 host devices, strict JAX promotion.

The suite's contracts (eight host devices for the multi-device tests, float64 oracles at float32
tolerances, the CPU's choices such as the runner's multi-seed strategy) are those of the CPU
backend, where CI runs. So on a machine with an accelerator the tests still run on the CPU,
unless ``JAX_PLATFORMS`` names the accelerator (``JAX_PLATFORMS=cuda pytest``). Then float32
matmuls and convolutions run at full precision (no TF32, which the oracles' tolerances do not
allow for), and the tests marked ``cpu_only`` are skipped.
"""

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Eight host devices; and XLA:CPU's cheapest code generation: the programs the tests compile are
# small and run a few steps, so compiling dominates. The LLVM back end at its lowest optimization
# cut the suite's CPU time by about a third; XLA:CPU's older fusion code generator (LLVM IR
# emitted directly, instead of the MLIR fusion emitters) compiles a one-operation program in
# about half the time, which cut it by another third (17.6 -> 12.0 CPU-minutes), as most tests
# call the functions eagerly, one compilation per operation. The HLO passes (fusion,
# simplification) and IEEE float semantics are those of a default build, and every jaxlib from
# 0.7 (the oldest supported) knows these flags; any flag already in XLA_FLAGS wins.
_FLAGS = {"xla_force_host_platform_device_count": "8", "xla_backend_optimization_level": "0",
          "xla_llvm_disable_expensive_passes": "true", "xla_cpu_use_fusion_emitters": "false"}
_given = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
    [_given, *(f"--{k}={v}" for k, v in _FLAGS.items() if k not in _given)]).strip()

import jax  # noqa: E402  (XLA_FLAGS must be set before jax initializes its backends)

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_default_matmul_precision", "highest")

# Many tests compile the same programs (the runner's steps for the shipped configs, the studies):
# one compilation cache per test session, shared by the xdist workers (they inherit the variable
# from the controlling process, which made the folder and removes it at the end).
_CACHE_VAR = "NORMJAX_TEST_JAX_CACHE"
_OWN_CACHE = _CACHE_VAR not in os.environ
if _OWN_CACHE:
    os.environ[_CACHE_VAR] = tempfile.mkdtemp(prefix="normjax-test-jax-cache-")
jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_VAR])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


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


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWN_CACHE:
        shutil.rmtree(os.environ.pop(_CACHE_VAR), ignore_errors=True)
