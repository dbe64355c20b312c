"""Per-technique checkpoints: train state and progress (metrics so far, statuses, timings).

``<workdir>/checkpoints/<technique>.msgpack`` holds, msgpack-encoded
(``flax.serialization``)::

    {"version": 1, "progress": <Progress as JSON text>, "state": <TrainState as a state dict>}

It is rewritten atomically after every chunk, and kept when the technique is done (then it
holds the final parameters of every run).  ``Progress.fingerprint`` is the part of the config
the technique's results depend on; resuming with a different one is an error, so results made
with different settings are never mixed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import flax.serialization
import ml_collections

from experiments.errors import ConfigError
from experiments.train import TrainState
from experiments.writer import atomic_write, jsonable

__all__ = ["CheckpointStore", "Progress", "fingerprint"]

VERSION = 1
# fields that change only what is reported, never the numbers of a technique
#: Fields results do not depend on (run_strategy: the same numbers up to float rounding).
_NOT_FINGERPRINTED = ("name", "notes", "figures", "only", "techniques", "run_strategy")


def fingerprint(config: ml_collections.ConfigDict, label: str) -> dict[str, Any]:
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


class CheckpointStore:
    """Reads and writes ``<workdir>/checkpoints/<technique>.msgpack``."""

    def __init__(self, workdir: str | Path) -> None:
        self.dir = Path(workdir) / "checkpoints"

    def path(self, label: str) -> Path:
        return self.dir / f"{label}.msgpack"

    def _read(self, label: str) -> dict[str, Any] | None:
        path = self.path(label)
        if not path.exists():
            return None
        try:
            data = flax.serialization.msgpack_restore(path.read_bytes())
        except Exception as e:  # msgpack raises ValueError, ExtraData, TypeError, ...
            raise ConfigError(
                f"checkpoint {path} cannot be read ({type(e).__name__}: {e}): the file is "
                f"truncated or corrupt; delete it to retrain technique {label!r} from the "
                "start (the other techniques' results are kept)") from e
        if not isinstance(data, dict) or data.get("version") != VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise ConfigError(f"checkpoint {path}: unsupported format (version {version!r}); "
                              f"delete it to retrain technique {label!r}")
        return data

    def load_progress(self, label: str, expected: dict[str, Any]) -> Progress | None:
        """The stored progress of ``label`` (``None`` if none); checks its fingerprint."""
        data = self._read(label)
        if data is None:
            return None
        progress = Progress(**json.loads(data["progress"]))
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
        """The stored train state of ``label``, restored into the structure of ``template``."""
        data = self._read(label)
        if data is None:
            raise FileNotFoundError(f"no checkpoint for technique {label!r} in {self.dir}")
        return flax.serialization.from_state_dict(template, data["state"])

    def save(self, progress: Progress, state: TrainState) -> None:
        """Atomically write ``progress`` and ``state``."""
        payload = {"version": VERSION,
                   "progress": json.dumps(jsonable(asdict(progress)), allow_nan=False),
                   "state": flax.serialization.to_state_dict(state)}
        atomic_write(self.path(progress.technique),
                     flax.serialization.msgpack_serialize(payload))
