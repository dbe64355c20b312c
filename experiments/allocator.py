"""glibc malloc settings that keep large freed buffers, applied by re-executing the process.

XLA hands every jitted call fresh output buffers.  With glibc's defaults, buffers above the
mmap threshold are returned to the kernel when freed, so the next call page-faults its outputs
in again; measured on a 2-core CPU this cost a flax CNN training step 24% of its speed and a
LayerNorm forward+backward 2.5x.  :data:`MALLOC_TUNING` keeps freed memory in the heap
(mallopt(3): ``M_MMAP_MAX=0``, ``M_TRIM_THRESHOLD`` 16 GiB).  glibc reads these variables only
at start-up, so the command-line entry points (``python -m experiments``,
``normjax-experiments``, the benchmarks) re-execute themselves once with them set.  Set
``NORMJAX_MALLOC_TUNING=0`` to keep the calling environment's allocator (e.g. when preloading
tcmalloc or jemalloc, which already reuse freed buffers).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["MALLOC_TUNING", "allocator_setting", "reexec_with_malloc_tuning"]

#: glibc settings that keep freed large buffers in the heap instead of unmapping them.
MALLOC_TUNING = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "17179869184"}
OPT_OUT = "NORMJAX_MALLOC_TUNING"
_REEXEC_MARK = "NORMJAX_MALLOC_REEXEC"


def allocator_setting() -> str:
    """A one-line description of the allocator setting this process runs under."""
    preload = os.environ.get("LD_PRELOAD", "")
    values = {k: os.environ.get(k) for k in MALLOC_TUNING}
    if any(lib in preload for lib in ("tcmalloc", "jemalloc", "mimalloc")):
        return f"preloaded: {preload}"
    if all(v is None for v in values.values()):
        return "glibc default (large buffers returned to the kernel: fresh outputs page-fault)"
    return "tuned: " + " ".join(f"{k}={v}" for k, v in values.items() if v is not None)


def _wanted() -> bool:
    if os.environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if os.environ.get(_REEXEC_MARK) or all(k in os.environ for k in MALLOC_TUNING):
        return False
    preload = os.environ.get("LD_PRELOAD", "")
    return not any(lib in preload for lib in ("tcmalloc", "jemalloc", "mimalloc"))


def reexec_with_malloc_tuning(module: str, argv: Sequence[str]) -> None:
    """Re-executes ``python -m module argv`` with :data:`MALLOC_TUNING` set.

    Does not return when it re-executes.  Does nothing when the variables are already set, when
    this process is the re-executed one, when another allocator is preloaded, on a platform
    without glibc, or when ``NORMJAX_MALLOC_TUNING=0``.
    """
    if not sys.platform.startswith("linux") or not _wanted():
        return
    env = {**os.environ, **MALLOC_TUNING, _REEXEC_MARK: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)
