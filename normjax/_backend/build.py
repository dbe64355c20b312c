"""Building, loading and switching the CPU kernels of ``normjax/csrc/norm_kernels.cc``.

The kernels are XLA FFI custom calls (``jax.ffi``). On first use they are compiled with the
system's C++ compiler (``$CXX`` or ``c++``, C++17, ``-O3 -march=native``) against the FFI
headers that ship with jaxlib, into a cache folder (``$NORMJAX_CACHE_DIR``, else
``~/.cache/normjax``) under a name that hashes the source, the flags, the compiler, jaxlib's
version and this CPU; later processes load the cached library (milliseconds). Compilation
takes a few seconds, once per machine and jaxlib release.

Where no compiler is found or compilation fails, or with ``NORMJAX_NATIVE=0`` in the
environment, :func:`native_available` is ``False``, the reason is logged once (logger
``normjax``) and kept in :func:`native_status`, and the norms run on their pure-JAX path: the
same values, slower on the CPU. :func:`set_native_kernels` / :func:`use_native_kernels` turn
the kernels off and on at trace time.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jaxlib

from normjax._backend.switches import _check_enabled, _Flag

__all__ = [
    "native_available",
    "native_kernels_enabled",
    "native_status",
    "set_native_kernels",
    "use_native_kernels",
]

SOURCE = Path(__file__).parent / "csrc" / "norm_kernels.cc"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
TARGETS = {"normjax_moments": "NormjaxMoments", "normjax_grad": "NormjaxGrad",
           "normjax_rows": "NormjaxRows"}
_LOG = logging.getLogger("normjax")

_ENABLED = (jax.make_user_context(True) if hasattr(jax, "make_user_context") else _Flag(True))
_STATE: dict[str, Any] = {"loaded": None, "status": ""}


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$NORMJAX_CACHE_DIR``, else ``~/.cache/normjax``."""
    env = os.environ.get("NORMJAX_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "normjax"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(sorted(set(keep))) + platform.machine()


def _compiler() -> str | None:
    name = os.environ.get("CXX", "c++")
    return shutil.which(name)


def library_path(compiler: str) -> Path:
    """The cached library's path for this source, compiler, jaxlib and CPU."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), compiler.encode(),
                 jaxlib.__version__.encode(), _cpu_signature().encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"norm_kernels-{key.hexdigest()[:20]}.so"


def _compile(compiler: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        os.replace(tmp, out)  # atomic: concurrent processes never load a partial file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> bool:
    if os.environ.get("NORMJAX_NATIVE", "1") == "0":
        _STATE["status"] = "off: NORMJAX_NATIVE=0"
        return False
    compiler = _compiler()
    if compiler is None:
        _STATE["status"] = ("off: no C++ compiler found (set CXX or install g++/clang++); the "
                            "norms use their pure-JAX path")
        return False
    path = library_path(compiler)
    if not path.exists():
        _compile(compiler, path)
    lib = ctypes.cdll.LoadLibrary(str(path))
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform="cpu")
    _STATE["lib"] = lib
    _STATE["status"] = f"loaded {path}"
    return True


def native_available() -> bool:
    """Whether the CPU kernels are compiled and registered (builds them on first call)."""
    if _STATE["loaded"] is None:
        try:
            _STATE["loaded"] = _load()
        except Exception as err:  # any failure: the XLA path, never a crash
            _STATE["loaded"] = False
            _STATE["status"] = f"off: {type(err).__name__}: {err}"
        if not _STATE["loaded"]:
            _LOG.warning("normjax CPU kernels not in use (%s)", _STATE["status"])
    return bool(_STATE["loaded"])


def native_status() -> str:
    """One line: whether the kernels are loaded, from where, or why not (builds or loads them
    first, as :func:`native_available` does)."""
    native_available()
    return str(_STATE["status"])


def native_switch_on() -> bool:
    """Whether the switch (:func:`use_native_kernels`, ``NORMJAX_NATIVE``) is on, kernels built
    or not (off the CPU their pure-JAX twins need none)."""
    return bool(_ENABLED.value)


def native_kernels_enabled() -> bool:
    """Whether the norms use the CPU kernels where they apply (switch on and kernels built)."""
    return bool(_ENABLED.value) and native_available()


def set_native_kernels(enabled: bool) -> None:
    """Turns the CPU kernels of the norms on (the default) or off globally.

    Off, the norms compute everything with XLA operations (the same values up to float32
    rounding). The setting is read at trace time and, where jax has ``jax.make_user_context``,
    is part of ``jax.jit``'s cache key.
    """
    _ENABLED.set_global(_check_enabled(enabled))


@contextlib.contextmanager
def use_native_kernels(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_native_kernels`; restores the setting on exit."""
    with _ENABLED(_check_enabled(enabled)):
        yield
