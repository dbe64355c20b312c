"""Per-technique checkpoints with orbax: the train state and the progress (metrics so far,
statuses, timings).

``<workdir>/checkpoints/<technique>/`` is an ``orbax.checkpoint.CheckpointManager``
directory holding the last saved step only::

    <step>/state      the TrainState of every run (leading axis = runs), orbax's PyTree format
    <step>/progress   Progress as JSON

orbax writes a step into a temporary directory and renames it when complete, so a run killed
while saving leaves the previous step readable (the runner saves as often as
``config.checkpoint_every_s`` allows, at the end of a technique and when it stops).  Restoring
into the structure and dtypes of a freshly initialized state gives the saved arrays bit for
bit.  The state is saved from, and restored to, host memory: in a multi-process
run every process holds the whole (replicated) state and writes its own workdir.
``Progress.fingerprint`` is the part of the config the technique's
results depend on; resuming with a different one is an error, so results made with different
settings are never mixed.

Workdirs written before orbax hold ``checkpoints/<technique>.msgpack``
(``flax.serialization``); they are still read, and the first orbax save of the technique
replaces the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from experiments.errors import ConfigError
from experiments.train import TrainState
from experiments.typed_config import StudyConfig
from experiments.writer import jsonable

__all__ = ["CheckpointStore", "Progress", "fingerprint", "read_state"]

#: The version of the pre-orbax msgpack files still read.
LEGACY_VERSION = 1
#: Fields results do not depend on (run_strategy: the same numbers up to float rounding).
_NOT_FINGERPRINTED = ("name", "notes", "figures", "only", "techniques", "run_strategy",
                      "checkpoint_every_s")


def fingerprint(config: StudyConfig, label: str) -> dict[str, Any]:
    """The config a technique's results depend on, as plain JSON data."""
    shared = {k: v for k, v in config.to_dict().items() if k not in _NOT_FINGERPRINTED}
    data = {"config": shared, "technique": config.techniques[label].to_dict()}
    return json.loads(json.dumps(jsonable(data)))


@dataclass
class Progress:
    """How far a technique got and what it recorded (everything but the train state)."""

    technique: str
    fingerprint: dict[str, Any]
    cell_labels: list[str]
    cell_status: list[str]  # "running", "ok" or "diverged at step N"
    step: int = 0
    done: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    compile_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    run_strategy: str = ""  # e.g. "sequential (auto: CNN on cpu ...)", see experiments.strategy


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _state_dict(tree: Any) -> Any:
    """orbax's template-free restore (sequences as lists, empty nodes as None) in
    ``to_state_dict`` form."""
    if tree is None:
        return {}
    if isinstance(tree, list | tuple):
        tree = {str(i): v for i, v in enumerate(tree)}
    if isinstance(tree, dict):
        return {k: _state_dict(v) for k, v in tree.items()}
    return tree


def _ocp() -> Any:
    """``orbax.checkpoint``, imported when first needed (it takes seconds to import)."""
    import orbax.checkpoint

    return orbax.checkpoint


def _unreadable(path: Path, label: str, error: Exception) -> ConfigError:
    return ConfigError(
        f"checkpoint {path} cannot be read ({type(error).__name__}: {error}): it is "
        f"truncated or corrupt; delete it to retrain technique {label!r} from the start (the "
        "other techniques' results are kept)")


class CheckpointStore:
    """Reads and writes ``<workdir>/checkpoints/<technique>/`` (and reads legacy msgpack)."""

    def __init__(self, workdir: str | Path) -> None:
        self.dir = Path(workdir).absolute() / "checkpoints"  # orbax needs absolute paths
        self._managers: dict[str, Any] = {}

    def path(self, label: str) -> Path:
        """The orbax directory of ``label``."""
        return self.dir / label

    def legacy_path(self, label: str) -> Path:
        """The pre-orbax checkpoint file of ``label``."""
        return self.dir / f"{label}.msgpack"

    def _manager(self, label: str) -> Any:
        if label not in self._managers:
            ocp, me = _ocp(), jax.process_index()
            # every process keeps its own workdir: no barriers with the others
            local = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
            self.path(label).mkdir(parents=True, exist_ok=True)
            options = ocp.CheckpointManagerOptions(max_to_keep=1, create=False,
                                                   enable_async_checkpointing=False,
                                                   multiprocessing_options=local)
            self._managers[label] = ocp.CheckpointManager(self.path(label), options=options)
        return self._managers[label]

    def _latest(self, label: str) -> int | None:
        """The last complete step saved with orbax (``None``: none)."""
        if not self.path(label).is_dir():
            return None
        return self._manager(label).latest_step()

    def _restore(self, label: str, **items: Any) -> Any:
        """The items (``state=``, ``progress=``: orbax restore args) of the last step."""
        step = self._latest(label)
        try:
            return self._manager(label).restore(step, args=_ocp().args.Composite(**items))
        except Exception as e:  # orbax / tensorstore raise many types for a damaged file
            raise _unreadable(self.path(label) / str(step), label, e) from e

    def _read_legacy(self, label: str) -> dict[str, Any] | None:
        path = self.legacy_path(label)
        if not path.exists():
            return None
        try:
            data = flax.serialization.msgpack_restore(path.read_bytes())
        except Exception as e:  # msgpack raises ValueError, ExtraData, TypeError, ...
            raise _unreadable(path, label, e) from e
        if not isinstance(data, dict) or data.get("version") != LEGACY_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise ConfigError(f"checkpoint {path}: unsupported format (version {version!r}); "
                              f"delete it to retrain technique {label!r}")
        return data

    def exists(self, label: str) -> bool:
        """Whether ``label`` has a checkpoint (orbax or legacy)."""
        return self._latest(label) is not None or self.legacy_path(label).exists()

    def load_progress(self, label: str, expected: dict[str, Any]) -> Progress | None:
        """The stored progress of ``label`` (``None`` if none); checks its fingerprint."""
        if self._latest(label) is not None:
            stored = self._restore(label, progress=_ocp().args.JsonRestore()).progress
        else:
            legacy = self._read_legacy(label)
            if legacy is None:
                return None
            stored = json.loads(legacy["progress"])
        progress = Progress(**stored)
        if progress.fingerprint != expected:
            old, new = _flat(progress.fingerprint), _flat(expected)
            diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
            raise ConfigError(
                f"the workdir already holds results of technique {label!r} made with a "
                f"different config ({shown}); use a new --workdir, or delete "
                f"{self.path(label)} to retrain it")
        return progress

    def load_state(self, label: str, template: TrainState) -> TrainState:
        """The stored train state of ``label`` as host arrays in the structure and dtypes of
        ``template`` (the caller places it on devices)."""
        if self._latest(label) is not None:
            host = jax.tree.map(np.asarray, template)
            return self._restore(label, state=_ocp().args.StandardRestore(host)).state
        legacy = self._read_legacy(label)
        if legacy is None:
            raise FileNotFoundError(f"no checkpoint for technique {label!r} in {self.dir}")
        return flax.serialization.from_state_dict(template, legacy["state"])

    def read_state(self, label: str) -> dict[str, Any]:
        """The stored train state of ``label`` as nested dicts of arrays, without a template
        (the form of ``flax.serialization.to_state_dict``: sequences as ``{"0": ...}``)."""
        if self._latest(label) is not None:
            return _state_dict(self._restore(label, state=_ocp().args.StandardRestore()).state)
        legacy = self._read_legacy(label)
        if legacy is None:
            raise FileNotFoundError(f"no checkpoint for technique {label!r} in {self.dir}")
        return legacy["state"]

    def save(self, progress: Progress, state: TrainState) -> None:
        """Save ``progress`` and ``state`` as step ``progress.step`` (replacing the last)."""
        ocp = _ocp()
        label, manager = progress.technique, self._manager(progress.technique)
        if manager.latest_step() == progress.step:  # saved already (runs are deterministic)
            return
        data = json.loads(json.dumps(jsonable(asdict(progress)), allow_nan=False))
        host = jax.tree.map(np.asarray, state)  # this process's copy of the replicated state
        manager.save(progress.step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(host), progress=ocp.args.JsonSave(data)))
        manager.wait_until_finished()
        self.legacy_path(label).unlink(missing_ok=True)

    def close(self) -> None:
        """Release orbax's resources (threads); the store can be used again afterwards."""
        for manager in self._managers.values():
            manager.close()
        self._managers.clear()


def read_state(workdir: str | Path, label: str) -> dict[str, Any]:
    """The saved train state of every run of ``label`` in ``workdir`` (leading axis = runs),
    as nested dicts of arrays: ``params``, ``batch_stats``, ``opt_state``, ``seed``, ``step``,
    ``hparams``."""
    store = CheckpointStore(workdir)
    try:
        if not store.exists(label):
            raise FileNotFoundError(f"no checkpoint for technique {label!r} in {store.dir}; "
                                    "run the study first")
        return store.read_state(label)
    finally:
        store.close()
