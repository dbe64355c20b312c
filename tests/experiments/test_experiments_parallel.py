"""Tests for experiments.parallel: data parallelism over 8 host devices, global vs local BN.

A run split over 8 devices with synchronized BatchNorm must reproduce the 1-device run; with
per-device ("local") statistics it must differ, in the way a float64 oracle predicts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import normjax as nj
from configs import quickstart
from experiments.config import technique
from experiments.errors import ConfigError
from experiments.parallel import (
    DataParallel,
    data_parallel,
    from_config,
    initialize_distributed,
    resolve_devices,
)
from experiments.program import Program, make_experiment
from experiments.runner import load_data, run
from experiments.runs import make_grid
from experiments.testing import shrink, tiny_config
from experiments.train import batch_indices
from experiments.typed_config import typed_config
from experiments.validation import validate_config
from experiments.writer import read_jsonl
from tests.once import computed_once

pytestmark = pytest.mark.cpu_only  # eight host devices

TOL = {"rtol": 1e-5, "atol": 1e-5}
STEPS = 3


def _quickstart(devices: int, bn_sync: str) -> Any:
    config = shrink(quickstart.get_config(), steps=STEPS)
    config.devices, config.bn_sync, config.only, config.figures = devices, bn_sync, "batch", False
    return config


@pytest.fixture(scope="module")
def quickstart_runs(tmp_path_factory):
    """Shrunk quickstart, BatchNorm: on 1 and 8 devices, and with local BN on 8; made once per
    session (the workdirs are shared: copy one before writing)."""
    def compute(folder):
        out = {}
        for name, devices, sync in (("one", 1, "global"), ("eight", 8, "global"),
                                    ("local", 8, "local")):
            summary = run(_quickstart(devices, sync), folder / name)
            out[name] = (str(folder / name), summary, read_jsonl(folder / name / "metrics.jsonl"))
        return out

    runs = computed_once(tmp_path_factory, "parallel_quickstart_runs", compute)
    return {name: (Path(w), summary, rows) for name, (w, summary, rows) in runs.items()}


def _per_step(rows: list[dict[str, Any]], technique_: str, key: str) -> np.ndarray:
    return np.asarray([r[key] for r in rows if r["technique"] == technique_])


def test_eight_devices_with_synced_bn_equal_one_device(quickstart_runs):
    _, one, one_rows = quickstart_runs["one"]
    _, eight, eight_rows = quickstart_runs["eight"]
    losses = _per_step(eight_rows, "batch", "train/batch_loss")
    assert len(losses) == STEPS
    np.testing.assert_allclose(losses, _per_step(one_rows, "batch", "train/batch_loss"), **TOL)
    final_8, final_1 = eight["results"]["batch"]["final"], one["results"]["batch"]["final"]
    assert final_8.keys() == final_1.keys() and "test_batch_stats/loss" in final_1
    for metric, stats in final_1.items():
        np.testing.assert_allclose(final_8[metric]["values"], stats["values"], **TOL,
                                   err_msg=metric)


def test_layout_is_recorded(quickstart_runs):
    for name, devices, sync in (("one", 1, "global"), ("eight", 8, "global"),
                                ("local", 8, "local")):
        workdir, summary, _ = quickstart_runs[name]
        assert summary["parallel"] == {"devices": devices, "processes": 1, "bn_sync": sync,
                                       "bn_groups": 8 if sync == "local" else 1,
                                       "platform": "cpu"}
        assert json.loads((workdir / "summary.json").read_text())["parallel"] == \
            summary["parallel"]
        recorded = json.loads((workdir / "config.json").read_text())
        assert (recorded["devices"], recorded["bn_sync"]) == (devices, sync)


def test_local_bn_differs_measurably(quickstart_runs):
    _, _, one_rows = quickstart_runs["one"]
    _, local, local_rows = quickstart_runs["local"]
    local_loss = _per_step(local_rows, "batch", "train/batch_loss")
    gap = np.abs(local_loss - _per_step(one_rows, "batch", "train/batch_loss"))
    assert gap[0] > 1e-3 and gap.max() > 1e-2  # 8 examples per device: noisy statistics
    assert local["results"]["batch"]["status"] == "ok"


def test_local_bn_results_refuse_to_resume_on_another_device_count(quickstart_runs,
                                                                   tmp_path):
    shutil.copytree(quickstart_runs["local"][0], tmp_path, dirs_exist_ok=True)
    with pytest.raises(ConfigError, match=r"different config \(config\.devices: 8 -> 4\)"):
        run(_quickstart(4, "local"), tmp_path)


class _Probe:
    """A model whose training-mode ``apply`` records the sharding of its input batch."""

    def __init__(self, model: Any) -> None:
        self.model, self.seen = model, []

    def init(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.init(*args, **kwargs)

    def apply(self, variables: Any, x: jax.Array, **kwargs: Any) -> Any:
        if kwargs["train"]:
            jax.debug.inspect_array_sharding(x, callback=lambda s: self.seen.append(
                (s, x.shape)))
        return self.model.apply(variables, x, **kwargs)


def _program(config: Any, parallel: DataParallel | None) -> tuple[Program, _Probe]:
    ds = load_data(config)
    config = typed_config(config)
    experiment = make_experiment(config, "batch", ds, parallel)
    probe = _Probe(experiment.model)
    experiment = dataclasses.replace(experiment, model=probe)
    return Program(experiment, ds, make_grid(config, "batch")), probe


@pytest.fixture(scope="module")
def tiny():
    """Tiny config (64 examples, batch 16 = 2 per device, 40 test examples in eval batches
    of 32, so the padded last eval batch has valid rows on devices 0 and 1 only); BatchNorm
    and dropout, whose masks must not depend on the device layout."""
    return tiny_config(batch=technique("batch", dropout=0.2))


@pytest.fixture(scope="module")
def programs(tiny):
    """One step of the tiny config with global and local BN (8 devices) and on 1 device."""
    out = {}
    for name, parallel in (("global", data_parallel(8, "global")),
                           ("local", data_parallel(8, "local")), ("one", None)):
        program, probe = _program(tiny, parallel)
        state = program.init()
        before = jax.device_get(state)
        compiled = program._compile(("train", 1), program._chunk, state, program._x,
                                     program._y, 1)
        with jax.transfer_guard("disallow"):  # inputs already live on the devices
            after, metrics, _ = program.train(state, 1)
            evals, _ = program.evaluate(after)
        out[name] = {"program": program, "probe": probe, "before": before,
                     "after": jax.device_get(after), "metrics": metrics, "evals": evals,
                     "hlo": compiled.as_text()}
    return out


def test_batch_is_sharded_over_the_eight_devices(programs):
    (sharding, shape), = programs["global"]["probe"].seen
    assert isinstance(sharding, NamedSharding) and sharding.spec == P(None, "data")
    assert len(sharding.device_set) == 8 and shape == (16, 8)  # (batch, features) per run
    (sharding, shape), = programs["local"]["probe"].seen  # vmapped over the device blocks
    assert sharding.spec == P(None, "data") and len(sharding.device_set) == 8
    assert shape == (2, 8)
    assert programs["one"]["probe"].seen == [(programs["one"]["probe"].seen[0][0], (16, 8))]
    # Per device, the first layer multiplies (runs, 16 / 8, features) by the kernel.
    assert re.search(r"f32\[2,2,8\]\{[0-9,]+\} dot\(", programs["global"]["hlo"])


def test_step_is_one_device_program_without_host_transfers(programs):
    for name in ("global", "local"):
        hlo = programs[name]["hlo"].lower()
        assert "all-reduce" in hlo  # gradients (and global BN sums) are reduced on device
        for op in ("custom-call", "outfeed", "infeed", " send(", " recv(", "host"):
            assert op not in hlo, f"{name}: {op}"


def _layer0_oracle(tiny, before: Any, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 running mean/var of layer_0's BatchNorm after the first step."""
    ds = load_data(tiny)
    seed = int(before.seed[0])
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    idx = np.asarray(batch_indices(key, jnp.int32(0), len(ds.x_train), tiny.batch_size))
    x = ds.x_train[idx].reshape(len(idx), -1).astype(np.float64)
    kernel = np.asarray(before.params["layer_0"]["linear"]["kernel"][0], np.float64)
    blocks = (x @ kernel).reshape(groups, len(idx) // groups, -1)
    mean, var = blocks.mean(axis=1).mean(axis=0), blocks.var(axis=1).mean(axis=0)
    decay = tiny.techniques.batch.norm_options.momentum
    return (1 - decay) * mean, decay * 1.0 + (1 - decay) * var


@pytest.mark.parametrize(("name", "groups"), [("global", 1), ("local", 8), ("one", 1)])
def test_running_statistics_match_oracle(programs, tiny, name, groups):
    run_ = programs[name]
    want_mean, want_var = _layer0_oracle(tiny, run_["before"], groups)
    stats = run_["after"].batch_stats["layer_0"]["norm"]
    np.testing.assert_allclose(stats["mean"][0], want_mean, **TOL)
    np.testing.assert_allclose(stats["var"][0], want_var, **TOL)
    assert set(stats) == {"mean", "var"}  # flax's BatchNorm variables, no count


def test_global_step_and_padded_eval_equal_one_device(programs):
    one, eight = programs["one"], programs["global"]
    for key, value in one["metrics"].items():
        np.testing.assert_allclose(eight["metrics"][key], value, **TOL, err_msg=key)
    for key, value in one["evals"].items():
        np.testing.assert_allclose(eight["evals"][key], value, **TOL, err_msg=key)
    weight = eight["program"]._sets["test"].weight  # (2, 32): the last batch is padded
    per_device = [float(s.data.sum()) for s in sorted(
        weight.addressable_shards, key=lambda s: s.index[1].start)]
    assert per_device == [8.0, 8.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]  # unequal valid counts
    assert np.any(np.abs(programs["local"]["metrics"]["train/batch_loss"]
                         - one["metrics"]["train/batch_loss"]) > 1e-4)


def _masked_oracle(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    valid = x[mask[:, 0]].astype(np.float64)
    return valid.mean(axis=0), valid.var(axis=0)


def test_masked_statistics_are_count_weighted_across_devices():
    # Device d (2 rows each) holds d % 3 valid rows: 0, 1 or 2, never a mean of means.
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(16, 3)).astype(np.float32)
    mask = np.asarray([r % 2 < d % 3 for d in range(8) for r in range(2)])[:, None]
    want_mean, want_var = _masked_oracle(x, mask)
    parallel = data_parallel(8, "global")
    xs, ms = parallel.place((x, mask), parallel.batch_sharding())

    def bn(x, m, axis_name=None):
        return nj.batch_norm(x, nj.batch_norm_init(3), reduction_axes=0, train=True,
                             decay=0.0, mask=m, axis_name=axis_name)[1]

    by_jit = jax.jit(bn)(xs, ms)  # sharded arrays: XLA reduces the sums and counts
    by_shard_map = jax.jit(jax.shard_map(
        lambda x, m: bn(x, m, "data"), mesh=parallel.mesh, in_specs=(P("data"), P("data")),
        out_specs=P()))(xs, ms)
    for state in (by_jit, by_shard_map):
        np.testing.assert_allclose(state.mean, want_mean, **TOL)
        np.testing.assert_allclose(state.var, want_var, **TOL)


def test_indivisible_batch_fails_before_training(tmp_path, tiny):
    config = tiny_config()
    config.batch_size, config.devices = 12, 8
    with pytest.raises(ConfigError, match=r"batch_size \(12\) is not divisible by the number "
                                          r"of devices \(8\)"):
        run(config, tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_bad_device_settings_are_rejected(tiny):
    config = tiny_config()
    config.devices = 16
    with pytest.raises(ConfigError, match=r"devices=16 but only 8 device\(s\) are available"):
        from_config(typed_config(config))
    config.devices, config.batch_size, config.bn_sync = 8, 8, "local"
    with pytest.raises(ConfigError, match=r"bn_sync='local' .* = 1 example"):
        from_config(typed_config(config))
    config.devices, config.bn_sync = -1, "global"
    with pytest.raises(ConfigError, match=r"devices must be an integer >= 0, got -1"):
        validate_config(config)
    config.devices, config.bn_sync = 0, "sync"
    with pytest.raises(ConfigError, match=r"bn_sync must be one of \['global', 'local'\]"):
        validate_config(config)
    with pytest.raises(ConfigError, match=r"bn_sync must be one of"):
        DataParallel(data_parallel(2).mesh, "sync")
    mesh = jax.make_mesh((2,), ("batch",), devices=jax.devices()[:2])
    with pytest.raises(ValueError, match=r"one axis 'data'"):
        DataParallel(mesh)


def test_all_devices_by_default_or_the_largest_divisor(caplog):
    assert resolve_devices(0, 8, 64) == 8 and resolve_devices(3, 8, 64) == 3
    with caplog.at_level(logging.WARNING, logger="experiments"):
        assert resolve_devices(0, 8, 100) == 5
    assert "batch_size (100) does not split evenly over the 8 available devices; using 5" \
        in caplog.text


@pytest.mark.parametrize(("env", "match"), [
    ({"NORMJAX_COORDINATOR_ADDRESS": "127.0.0.1:1234"}, r"missing \['NORMJAX_NUM_PROCESSES', "
                                                        r"'NORMJAX_PROCESS_ID'\]"),
    ({"NORMJAX_COORDINATOR_ADDRESS": "127.0.0.1:1234", "NORMJAX_NUM_PROCESSES": "two",
      "NORMJAX_PROCESS_ID": "0"}, r"must be integers"),
    ({"NORMJAX_COORDINATOR_ADDRESS": "127.0.0.1:1234", "NORMJAX_NUM_PROCESSES": "2",
      "NORMJAX_PROCESS_ID": "2"}, r"NORMJAX_PROCESS_ID must be in \[0, 2\), got 2"),
])
def test_bad_distributed_environment_is_rejected(env, match):
    with pytest.raises(ConfigError, match=match):
        initialize_distributed(env)


def test_no_distributed_environment_is_single_process():
    assert initialize_distributed({}) is False
