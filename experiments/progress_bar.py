"""A progress bar per technique (tqdm): steps done, steps/s, ETA, and the compile phase.

The bar reads ``<label>: compiling`` until the technique's first chunk has run (compiling its
programs takes seconds to minutes before any step), then ``<label>`` with the running step
rate, the time left and the last chunk's train loss and test accuracy. It is drawn only when
stderr is a terminal (``enabled=None``); in a log file the runner's one line per chunk says the
same. While a bar is shown, the runner's log lines are printed above it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from types import TracebackType
from typing import Any

from tqdm import tqdm

__all__ = ["ProgressBar"]


class ProgressBar:
    """``with ProgressBar(label, total, initial) as bar: ... bar.chunk(n, loss, accuracy)``."""

    def __init__(self, label: str, total: int, initial: int = 0, *,
                 enabled: bool | None = None) -> None:
        self.label = label
        disable = None if enabled is None else not enabled  # None: tqdm asks isatty()
        self.bar = tqdm(total=total, initial=initial, desc=f"{label}: compiling", unit="step",
                        disable=disable, file=sys.stderr, dynamic_ncols=True, leave=True)
        self._logs = contextlib.ExitStack()

    def __enter__(self) -> ProgressBar:
        if not self.bar.disable:
            # imported here: the module imports tqdm.auto, which warns in a notebook without
            # ipywidgets even when no bar is drawn
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._logs.enter_context(logging_redirect_tqdm([logging.getLogger("experiments")]))
        return self

    def chunk(self, steps: int, loss: float, accuracy: float) -> None:
        """``steps`` more steps done; the chunk's mean train loss and test accuracy."""
        self.bar.set_description(self.label, refresh=False)
        self.bar.set_postfix({"train/loss": f"{loss:.4f}", "test/acc": f"{accuracy:.4f}"},
                             refresh=False)
        self.bar.update(steps)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> Any:
        self.bar.close()
        self._logs.close()
