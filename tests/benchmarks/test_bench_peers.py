"""The equinox and haiku benchmark candidates compute what normjax computes (values and
gradients), skip the layouts their library lacks, and show up in the report."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import candidates, norms, peer_candidates, report

CASES = [
    candidates.Case("GN NHWC", "group", (2, 3, 4, 64)),
    candidates.Case("GN NCHW", "group", (2, 64, 3, 4), channel_axis=1),
    candidates.Case("LN", "layer", (2, 3, 16)),
    candidates.Case("RMS", "rms", (2, 3, 16)),
    candidates.Case("BN NHWC", "batch", (4, 2, 3, 8)),
    candidates.Case("BN NCHW", "batch", (4, 8, 2, 3), channel_axis=1),
    candidates.Case("BN MLP", "batch", (16, 8)),
    candidates.Case("IN NHWC", "instance", (2, 3, 4, 8)),
    candidates.Case("IN NCHW", "instance", (2, 8, 3, 4), channel_axis=1),
]
CHANNELS_LAST_IMAGES = {"GN NHWC", "BN NHWC", "IN NHWC"}


def _loss(fn):
    return lambda x, s, b, ct: jnp.sum(norms._primal(fn(x, s, b)) * ct)


@pytest.mark.parametrize("peer", sorted(peer_candidates.PEERS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_peer_matches_normjax(peer, case):
    pytest.importorskip(peer_candidates.PEERS[peer])
    fn = peer_candidates.peer_candidate(peer, case)
    if peer == "equinox" and case.name in CHANNELS_LAST_IMAGES:
        assert fn is None  # equinox's image norms take the channels first
        return
    x, ct, s, b = (jnp.asarray(a) for a in norms._inputs(case, case.shape))
    ref = candidates.normjax_candidate(case)
    y, want = norms._primal(jax.jit(fn)(x, s, b)), norms._primal(jax.jit(ref)(x, s, b))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    grads = jax.jit(jax.grad(_loss(fn), argnums=(0, 1, 2)))(x, s, b, ct)  # jitted: a few
    wants = jax.jit(jax.grad(_loss(ref), argnums=(0, 1, 2)))(x, s, b, ct)  # compilations
    skip_bias = case.kind == "rms"  # RMSNorm has no bias
    for got, exp in list(zip(grads, wants, strict=True))[: 2 if skip_bias else 3]:
        np.testing.assert_allclose(got, exp, rtol=1e-3, atol=1e-4)


def test_peers_switch_off(monkeypatch):
    monkeypatch.setenv("NORMJAX_BENCH_PEERS", "0")
    assert not any(peer_candidates.peer_available(p) for p in peer_candidates.PEERS)
    assert report.environment(quick=True, torch=False)["equinox"] == "skipped"


def test_summary_lists_the_other_libraries():
    def row(name, over_normjax):
        return {"case": "c", "shape": [2], "dtype": "float32", "mode": "fwd",
                "candidate": name, "median_ms": 1.0,
                "min_ms": 1.0, "max_ms": 1.0, "repeats": 1, "gb_per_s": 1.0,
                "elementwise_fraction": 0.5, "time_over_flax": 1.0,
                "time_over_normjax": over_normjax}
    rows = [row("normjax", 1.0), row("flax", 2.0), row("elementwise", 0.5),
            row("haiku", 1.5), row("torch", 0.75)]
    md = report.markdown(rows, {"backend": "cpu"})
    assert "| haiku 1.50 · torch 0.75 |" in md
    assert "| - |" in report.markdown(rows[:3], {"backend": "cpu"})
