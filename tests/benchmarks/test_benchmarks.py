"""Smoke tests of the benchmark suites (tiny shapes; no speed is asserted)."""

from __future__ import annotations

import math

import pytest

from benchmarks import candidates, norms, train_step
from benchmarks.timing import Timing, paired_ratio, time_interleaved, with_block


def test_interleaved_timing_and_paired_ratio():
    calls = {"a": lambda: 1, "b": lambda: 2}
    t = time_interleaved(calls, repeats=3, warmup=1)
    assert set(t) == {"a", "b"} and all(len(v.samples) == 3 for v in t.values())
    assert paired_ratio(Timing([1.0, 2.0, 4.0]), Timing([2.0, 2.0, 2.0])) == 1.0
    with pytest.raises(ValueError, match="same interleaved run"):
        paired_ratio(Timing([1.0]), Timing([1.0, 2.0]))
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        time_interleaved(calls, repeats=0)
    with pytest.raises(ValueError, match="inner must be >= 1"):
        time_interleaved(calls, repeats=1, inner=0)


def test_inner_calls_per_sample_and_own_block():
    """``inner`` calls make one sample, waited for once, with the candidate's own wait."""
    log: list[str] = []

    def call() -> int:
        log.append("call")
        return len(log)

    timed = with_block(call, lambda out: log.append(f"block {out}"))
    t = time_interleaved({"a": timed}, repeats=2, warmup=1, inner=3)
    assert len(t["a"].samples) == 2
    # warm-up + 2 rounds; the wait gets the last call's result (the log's length then)
    assert log == [e for n in (3, 7, 11) for e in ("call", "call", "call", f"block {n}")]


@pytest.mark.parametrize("case", [
    candidates.Case("tiny GN", "group", (2, 4, 4, 64)),
    candidates.Case("tiny BN NCHW", "batch", (4, 32, 2, 2), channel_axis=1),
    candidates.Case("tiny RMS", "rms", (2, 3, 16))])
def test_norm_case_rows(case):
    rows = norms.run_case(case, quick=True, budget_s=0.01)
    names = {r["candidate"] for r in rows}
    assert {"normjax", "normjax-autodiff", "flax", "elementwise"} <= names
    for row in rows:
        assert row["median_ms"] > 0 and math.isfinite(row["gb_per_s"])
        assert row["time_over_normjax"] > 0


def test_train_step_runner_config_and_report():
    config = train_step.runner_config("batch", 3, "interleaved", steps=5, model="mlp")
    assert (config.model.kind, config.num_seeds, config.run_strategy) == ("mlp", 3, "interleaved")
    ds = train_step.synthetic_images(num=256)
    rows = train_step.single_seed(ds, "none", steps=1, repeats=1)
    assert [r["candidate"] for r in rows][:2] == ["flax+optax", "runner"]
    md = train_step._markdown({"environment": {"backend": "cpu"}, "model": "m",
                               "parts": [{"title": "One seed", "rows": rows}]})
    assert "| runner | 1 |" in md


def test_torch_train_step_runs_when_torch_is_installed():
    pytest.importorskip("torch")
    from benchmarks.torch_train_step import torch_call

    call = torch_call(train_step.synthetic_images(num=64), True, steps=2, batch=8, width=4,
                      depth=2, lr=0.05, momentum=0.9)
    assert math.isfinite(call())


def test_torch_timers_compute_what_their_mode_names():
    torch = pytest.importorskip("torch")
    from benchmarks.torch_candidates import torch_timers

    case = candidates.Case("tiny LN", "layer", (2, 3, 16))
    x, ct, _, _ = norms._inputs(case, case.shape)
    timers = torch_timers(case, x, ct)
    y = timers["fwd"]()
    value, grads = timers["value+grad"]()
    ct_t = torch.from_numpy(ct).to(y.device)  # on CUDA where JAX runs on a GPU
    assert float(value) == pytest.approx(float((y * ct_t).sum()), rel=1e-5)
    assert len(grads) == len(timers["fwd+bwd"]()) == 3
    for a, b in zip(grads, timers["fwd+bwd"](), strict=True):
        torch.testing.assert_close(a, b)
