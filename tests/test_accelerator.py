"""The fused engine where JAX's default device is an accelerator (a GPU): no numba loop, XLA's
program in large chunks, summaries and effects reduced on the device.

On a machine without one (CI), ``fused.on_host`` is patched to say so, which runs the same code
paths on the CPU; on a GPU machine the same tests run there for real.
"""

from __future__ import annotations

import numpy as np
import pytest

from causal_wm import fused, queries
from tests.test_fused_kernel import _posterior
from tests.test_looped import PLAIN


@pytest.fixture(scope="module")
def plain():
    return _posterior(PLAIN, 21)


def test_on_an_accelerator_all_draws_run_on_the_host_and_summaries_on_the_device(plain, spy, monkeypatch):
    df, post = plain
    do = {"t": 1}
    host = queries.counterfactual(post, df, do, engine="fused", seed=3)
    summ_host = queries.counterfactual(post, df, do, engine="fused", summary_only=True, prob=0.8, seed=3)
    n_host = len(spy)
    with monkeypatch.context() as m:
        jax = fused._jax()
        m.setattr(fused, "on_host", lambda: jax.config.jax_default_device is not None)
        m.setattr(fused, "ACCEL_CHUNK_ELEMENTS", 9 * 100)  # 40 units: several chunks on the device
        assert not fused.on_host()
        dev = queries.counterfactual(post, df, do, engine="fused", seed=3)
        assert len(spy) == n_host + 1 and spy[-1] is not None, "all draws: the host's numba loop"
        summ = queries.counterfactual(post, df, do, engine="fused", summary_only=True, prob=0.8, seed=3)
        assert len(spy) == n_host + 1, "summary_only: XLA on the device, no loop"
        assert 9 * 100 // host["t"].shape[0] < len(df)  # the device's summaries came in several chunks
    for node in host.nodes:
        assert np.array_equal(host[node], dev[node]), node
        v = np.asarray(host[node], dtype=float)
        ref = np.stack([v.mean(0), v.std(0), *np.quantile(v, [0.1, 0.9], axis=0)], axis=-1)
        np.testing.assert_allclose(summ.summaries[node], ref, rtol=1e-12, atol=1e-12, err_msg=node)
        np.testing.assert_allclose(summ.summaries[node], summ_host.summaries[node], rtol=1e-12, atol=1e-12)
    assert np.all(summ.summaries["t"] == [1.0, 0.0, 1.0, 1.0])  # a constant row, summarised exactly


def test_on_an_accelerator_effects_reduce_on_the_device_to_the_hosts_numbers(plain, monkeypatch):
    _, post = plain
    on_host = post.effect("yt", do={"t": 1}, vs={"t": 0}, engine="fused", seed=2)
    with monkeypatch.context() as m:
        m.setattr(fused, "on_host", lambda: False)
        m.setattr(fused, "ACCEL_CHUNK_ELEMENTS", 7 * on_host.draws.shape[0])  # 40 units: six chunks
        on_dev = post.effect("yt", do={"t": 1}, vs={"t": 0}, engine="fused", seed=2)
    np.testing.assert_allclose(on_dev.draws, on_host.draws, rtol=1e-12, atol=1e-12)


def test_the_host_is_told_apart_from_an_accelerator(monkeypatch):
    jax = fused._jax()
    assert fused.on_host() == (jax.default_backend() == "cpu")
    with jax.default_device(jax.devices("cpu")[0]):
        assert fused.on_host()
    host = fused.on_host()
    assert fused._chunk_elements() == (fused.CHUNK_ELEMENTS if host else fused.ACCEL_CHUNK_ELEMENTS)
    monkeypatch.setattr(fused, "on_host", lambda: False)
    assert fused._chunk_elements() == fused.ACCEL_CHUNK_ELEMENTS and fused._workers() == fused.ACCEL_THREADS
