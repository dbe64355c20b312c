"""The workdir of a run: where it is, and one live run at a time in it.

:func:`resolve_workdir` turns the command line's ``--workdir`` into a path or an error that says
what to do: an empty value (``--workdir=$UNSET``) would scatter checkpoints into the current
directory, so it is refused; ``~`` and ``$VARS`` are expanded as a shell would; a path that is a
file is refused.

:class:`WorkdirLock` holds an exclusive ``flock`` on ``<workdir>/.lock`` for the length of a run.
A second run on the same workdir fails at once and names the process that holds it; the lock is
the kernel's, so it goes away with its process (``kill -9`` included) and a rerun resumes.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from experiments.errors import ConfigError

__all__ = ["WorkdirLock", "resolve_workdir"]

LOCK_NAME = ".lock"


def resolve_workdir(raw: str | os.PathLike[str] | None) -> Path:
    """``raw`` with ``~`` and environment variables expanded; refuses empty values and files."""
    text = "" if raw is None else os.fspath(raw)
    if not text.strip():
        raise ConfigError("--workdir is empty (an unset shell variable?); give the directory "
                          "for this run's outputs, e.g. --workdir=runs/my_study")
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    if "$" in str(path):
        raise ConfigError(f"--workdir {text!r}: the variable in it is not set; set it or give "
                          "the directory itself")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--workdir {str(path)!r} is a file, not a directory; give a new or "
                          "existing directory (the run writes several files into it)")
    return path


class WorkdirLock:
    """An exclusive lock on a workdir for one run (a context manager).

    Raises :class:`~experiments.errors.ConfigError` naming the holder (pid, host, start time,
    command) when another live process holds it.
    """

    def __init__(self, workdir: str | Path, command: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_NAME
        self.command = command
        self._fh: int | None = None

    def __enter__(self) -> WorkdirLock:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(
                f"--workdir {str(self.workdir)!r} is in use by another run ({holder}); wait for "
                "it to finish, or give another --workdir") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": self.command or ""}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fh = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._fh is not None:
            os.ftruncate(self._fh, 0)
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            os.close(self._fh)
            self._fh = None


def _read_holder(fd: int) -> str:
    """The holder's record as text (``pid 123 on host, since ..., running: ...``)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        info = {}
    if not info:
        return "a process that has not written its details yet"
    text = f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started')}"
    return text + (f", running: {info['command']}" if info.get("command") else "")
