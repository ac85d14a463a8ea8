"""The numba loop generated from the traced program (causal_wm/looped.py) against XLA's loop and the
generic kernel.

Parameters are drawn by NumPy and set as the posterior's draws (no MCMC), as in
tests/test_fused_kernel.py, whose tolerances apply: continuous nodes to 1e-9 relative, discrete
ones element for element but for rare last-bit flips of a comparison, and means within 4 MCSE.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import causal_wm as cw
from causal_wm import fused, looped, queries
from tests.test_fused_kernel import INTERVENTIONS, MIXED, _agree, _codes, _posterior

# every family the loop covers in a counterfactual (abducted, not drawn afresh), an interaction,
# and outputs in original units through both transforms (z-scores and logs)
PLAIN = {
    "name": "looped_plain",
    "nodes": {
        "c": {"family": "normal"},
        "x": {"family": "normal", "formula": "c"},
        "t": {"family": "bernoulli", "formula": "c + x"},
        "m": {"family": "lognormal", "formula": "t + c"},
        "yt": {"family": "student_t", "formula": "t + m + x + t:c"},
        "yb": {"family": "bernoulli", "formula": "m + c"},
        "z": {"family": "normal", "formula": "yb + yt"},
    },
}
COVERED = ["hard", "per_unit", "shift", "scale", "callable", "policy_continuous", "policy_discrete"]


@pytest.fixture(autouse=True)
def _on_the_host():
    """The numba loop runs where JAX computes on the CPU (tests/test_accelerator.py covers the rest)."""
    if not fused.on_host():
        pytest.skip("the numba loop runs only where JAX's default device is the CPU")


@pytest.fixture(scope="module")
def plain():
    return _posterior(PLAIN, 21)


def _xla(post, df, do, monkeypatch, **kw):
    with monkeypatch.context() as m:
        m.setattr(fused, "USE_LOOP", False)
        return queries.counterfactual(post, df, do, engine="fused", **kw)


@pytest.mark.parametrize("kind", COVERED)
def test_loop_equals_xla_and_the_generic_kernel(plain, kind, spy, monkeypatch):
    df, post = plain
    do = INTERVENTIONS[kind](df)
    loop = queries.counterfactual(post, df, do, engine="fused")
    assert spy and all(b is not None for b in spy), "the loop should cover this program"
    if kind.startswith("policy"):  # the quantile table read per element, in the first of two loops
        assert "M0[np.int64(" in spy[0].source and "T[0, u] = " in spy[0].source
    xla = _xla(post, df, do, monkeypatch)
    gen = queries.counterfactual(post, df, do, engine="generic")
    assert set(loop.nodes) == set(xla.nodes) == set(gen.nodes)
    for node in loop.nodes:
        _agree(post, xla[node], loop[node], node)
        _agree(post, gen[node], loop[node], node)
        if post.scm.node(node).family == "normal" and node != "z":  # exact abduction, no transcendental
            np.testing.assert_allclose(loop[node], gen[node], rtol=1e-12, atol=1e-12)


def test_loop_consistency_and_effectiveness(plain, spy):
    df, post = plain
    same = queries.counterfactual(post, df, {"t": df["t"].to_numpy()}, engine="fused")
    assert spy[-1] is not None
    for node in same.nodes:
        assert np.all(same[node] == df[node].to_numpy()[None, :]), node  # the data's own numbers
    set_x = queries.counterfactual(post, df, {"x": 0.25}, engine="fused")
    assert np.all(set_x["x"] == 0.25)


def test_loop_results_do_not_depend_on_chunks_threads_or_draw_subsets(plain, monkeypatch):
    df, post = plain
    do = {"x": cw.shift(-0.4)}
    whole = queries.counterfactual(post, df, do, engine="fused", seed=5)
    monkeypatch.setattr(fused, "LOOP_UNITS", 7)  # 40 units: six chunks, the last one padded
    monkeypatch.setattr(fused, "_threads", lambda: 3)  # draws split three ways
    tiled = queries.counterfactual(post, df, do, engine="fused", seed=5)
    for node in whole.nodes:
        assert np.array_equal(whole[node], tiled[node]), node
    sub = queries.counterfactual(post, df, do, engine="fused", seed=5, draws=17)
    sub_xla = _xla(post, df, do, monkeypatch, seed=5, draws=17)
    for node in sub.nodes:
        assert sub[node].shape == (17, len(df))
        _agree(post, sub_xla[node], sub[node], node)


def test_programs_the_loop_does_not_cover_run_on_xla(spy):
    counts = {"name": "looped_counts", "nodes": {
        "x": {"family": "normal"},
        "t": {"family": "bernoulli", "formula": "x"},
        "y": {"family": "poisson", "formula": "t + x"},
    }}
    df, post = _posterior(counts, 22)
    fast = queries.counterfactual(post, df, {"t": 1}, engine="fused")
    gen = queries.counterfactual(post, df, {"t": 1}, engine="generic")
    assert spy == [None]  # the count CDF walk is a while loop: not in the loop's table
    for node in gen.nodes:
        _agree(post, gen[node], fast[node], node)


def _elementwise(fn):
    from numba import njit

    @njit(error_model="numpy")
    def many(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = fn(x[i])
        return out

    return many


def test_vector_exp_is_within_two_ulp_of_numpy_and_flushes_subnormal_results_to_zero():
    from causal_wm.vecmath import TINY, vexp

    many = _elementwise(vexp)
    x = np.concatenate([np.linspace(-708.0, 709.7, 400_001), np.random.default_rng(0).normal(0.0, 3.0, 100_000)])
    got, ref = many(x), np.exp(x)
    ulp = np.abs(got - ref) / np.spacing(ref)
    assert ulp.max() <= 2.0, ulp.max()
    # near the smallest normal number: normal results within 2 ulp, subnormal ones 0 (as XLA's exp)
    low = np.linspace(-746.5, -700.0, 100_001)
    got, ref = many(low), np.exp(low)
    normal = ref >= TINY
    assert normal.mean() > 0.1 and (~normal).mean() > 0.7
    assert np.max(np.abs(got[normal] - ref[normal]) / np.spacing(ref[normal])) <= 2.0
    assert np.all(got[~normal] == 0.0)
    top = np.linspace(709.0, 711.0, 10_001)  # the overflow to inf where the C library's is inf
    with np.errstate(over="ignore"):
        got, ref = many(top), np.exp(top)
    assert np.array_equal(np.isinf(got), np.isinf(ref))
    fin = np.isfinite(ref)
    assert fin.mean() > 0.3 and np.max(np.abs(got[fin] - ref[fin]) / np.spacing(ref[fin])) <= 2.0
    special = np.array([np.nan, np.inf, -np.inf, 710.0, -746.0, 0.0, -0.0, 1e300, -1e300])
    np.testing.assert_array_equal(many(special), [np.nan, np.inf, 0.0, np.inf, 0.0, 1.0, 1.0, np.inf, 0.0])


def test_vector_log_cos_and_sin_against_numpy():
    from causal_wm.vecmath import COS_DOMAIN, vcos, vlog, vsin

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.random(200_000), np.exp(rng.uniform(-745.0, 709.0, 200_000)),
                        1.0 + rng.normal(0, 1e-9, 10_000),
                        [5e-324, 1e-310, np.finfo(float).tiny, np.finfo(float).max, 1.0, 2.0, 0.5]])
    got, ref = _elementwise(vlog)(x), np.log(x)
    ulp = np.abs(got - ref) / np.spacing(np.abs(ref))
    assert np.max(np.where(got == ref, 0.0, ulp)) <= 4.0
    edge = np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan])
    np.testing.assert_array_equal(_elementwise(vlog)(edge), [-np.inf, -np.inf, np.nan, np.inf, np.nan, np.nan])
    for fn, ref_fn in ((vcos, np.cos), (vsin, np.sin)):
        x = np.concatenate([rng.random(200_000) * 2 * np.pi, rng.uniform(-COS_DOMAIN, COS_DOMAIN, 200_000),
                            [0.0, np.pi / 2, np.pi, -COS_DOMAIN, COS_DOMAIN]])
        assert np.max(np.abs(_elementwise(fn)(x) - ref_fn(x))) <= 3e-16
        assert np.all(np.isnan(_elementwise(fn)(np.array([np.inf, -np.inf, np.nan, 1.5 * COS_DOMAIN]))))


# effects: every family the loop covers drawn afresh downstream of the intervention (normal and
# lognormal noise by Box-Muller: the loop's log and cos), an interaction, a binary outcome
EFFECTS = {
    "name": "looped_effects",
    "nodes": {
        "c": {"family": "normal"},
        "t": {"family": "bernoulli", "formula": "c"},
        "m": {"family": "lognormal", "formula": "t + c"},
        "y": {"family": "normal", "formula": "t + m + t:c"},
        "yb": {"family": "bernoulli", "formula": "m + c"},
    },
}


@pytest.mark.parametrize("outcome", ["m", "y", "yb"])
def test_effects_run_in_the_loop_and_sum_to_xlas_numbers(outcome, spy, monkeypatch):
    _, post = _posterior(EFFECTS, 23)
    contrasts = [({"t": 1}, {"t": 0}), ({"c": cw.shift(0.5)}, {}), ({"t": cw.bernoulli(0.3)}, {"t": 0})]
    for do, vs in contrasts:
        loop = post.effect(outcome, do=do, vs=vs, engine="fused").draws
        assert spy and spy[-1] is not None and spy[-1].sums, "the loop should cover this effect"
        assert "R[s, 0] += _rowsum(o0, nu)" in spy[-1].source and "_log(" in spy[-1].source
        with monkeypatch.context() as m:
            m.setattr(fused, "USE_LOOP", False)
            xla = post.effect(outcome, do=do, vs=vs, engine="fused").draws
        gen = post.effect(outcome, do=do, vs=vs, engine="generic").draws
        np.testing.assert_allclose(loop, xla, rtol=1e-12, atol=1e-13)  # the same terms, summed in another order
        np.testing.assert_allclose(loop, gen, rtol=1e-9, atol=1e-12)  # libm's log, cos and exp against ours
    with monkeypatch.context() as m:  # neither threads nor calls change the sums: each draw's row in order
        m.setattr(fused, "_threads", lambda: 3)
        threaded = post.effect(outcome, do={"t": 1}, vs={"t": 0}, engine="fused").draws
    assert np.array_equal(threaded, post.effect(outcome, do={"t": 1}, vs={"t": 0}, engine="fused").draws)
    with monkeypatch.context() as m:
        m.setattr(fused, "LOOP_UNITS", 7)  # 40 units: six calls, the last one padded
        chunked = post.effect(outcome, do={"t": 1}, vs={"t": 0}, engine="fused").draws
    np.testing.assert_allclose(chunked, threaded, rtol=1e-12, atol=1e-13)


# two latent nodes: the loop reads column j of the latent draws (draws, units, columns) per element
LATENT = {
    "name": "looped_latent",
    "nodes": {
        "u1": {"family": "normal", "latent": True},
        "u2": {"family": "normal", "latent": True},
        "x": {"family": "normal", "formula": "u1"},
        "t": {"family": "bernoulli", "formula": "u1 + x"},
        "y": {"family": "normal", "formula": "t + u2 + x"},
        "z": {"family": "lognormal", "formula": "u2 + y"},
    },
}


@pytest.mark.parametrize("spec", [LATENT, MIXED], ids=["two_latents", "mixed"])
def test_latent_draws_are_read_in_the_loop(spec, spy, monkeypatch):
    df, post = _posterior(spec, 25)
    assert post.program.lat.shape[2] == sum(post.scm.node(n).latent for n in post.scm.order)
    do = {"t": 1}
    loop = queries.counterfactual(post, df, do, engine="fused")
    assert spy and spy[-1] is not None and "M0[" in spy[-1].source, "the loop should read the latent draws"
    xla = _xla(post, df, do, monkeypatch)
    gen = queries.counterfactual(post, df, do, engine="generic")
    for node in loop.nodes:
        got = _codes(post, node, loop[node])
        _agree(post, _codes(post, node, xla[node]), got, node)
        _agree(post, _codes(post, node, gen[node]), got, node)
    outcome = "z"
    eff = post.effect(outcome, do={"t": 1}, vs={"t": 0}, engine="fused").draws
    assert spy[-1] is not None and spy[-1].sums
    with monkeypatch.context() as m:
        m.setattr(fused, "USE_LOOP", False)
        np.testing.assert_allclose(eff, post.effect(outcome, do={"t": 1}, vs={"t": 0}, engine="fused").draws,
                                   rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(eff, post.effect(outcome, do={"t": 1}, vs={"t": 0}, engine="generic").draws,
                               rtol=1e-9, atol=1e-12)


def test_split_reads_each_value_by_what_it_varies_over():
    jax = fused._jax()
    S, U = 5, 7

    def fn(theta, data):
        a = theta[:, 0][:, None] * 2.0  # per draw
        b = data[:, 1][None, :] + 1.0  # per unit
        return (jax.numpy.exp(a * b) + theta[0, 1],)  # per draw and unit, plus a scalar

    with jax.enable_x64(True):
        closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct((S, 3), np.float64), jax.ShapeDtypeStruct((U, 2), np.float64))
        loop = looped.Loop(closed, S, U)
        theta, data = np.random.default_rng(1).normal(size=(S, 3)), np.random.default_rng(2).normal(size=(U, 2))
        out = np.full((1, S, U), np.nan)
        loop(out, 0, U, theta, data, threads=2)
        ref = np.exp((theta[:, 0][:, None] * 2.0) * (data[:, 1][None, :] + 1.0)) + theta[0, 1]
    np.testing.assert_allclose(out[0], ref, rtol=1e-15)
    # per draw and unit: the product, its exp and the sum; the rest came from the prologue's tables
    body = [ln.strip() for ln in loop.source.split("for u in range")[1].splitlines()]
    assert [ln.split(" = ")[1].split("(")[0] for ln in body if ln.startswith("x")] == ["", "_exp", ""]


def test_an_additive_chain_abducts_without_a_select_per_element(spy):
    """Additive-noise nodes need no per-element comparison of old and new parents, nor outputs of
    the data's own value: their changes are exactly 0 where nothing moved (traced.Trace.world and
    output). Only the bernoulli node's coupling selects."""
    df, post = _posterior({"name": "chain", "nodes": {
        "c": {"family": "normal"}, "t": {"family": "bernoulli", "formula": "c"},
        "m": {"family": "normal", "formula": "t + c"}, "y": {"family": "normal", "formula": "m + t + t:c"},
        "yl": {"family": "lognormal", "formula": "m"},
        "yb": {"family": "bernoulli", "formula": "m"}}}, 5)
    cf = queries.counterfactual(post, df, {"t": 0.0}, engine="fused")
    body = spy[-1].source.split("for u in range")[-1]
    # the bernoulli coupling's three: its bound for y = 0 or 1, the outcome, and "did m change"
    assert body.count("_sel(") == 3, body
    keep = df["t"].to_numpy() == 0
    for node in ("m", "y", "yl", "yb"):  # units already at t = 0: the data's own numbers
        assert np.all(cf[node][:, keep] == df[node].to_numpy()[None, keep]), node


def test_summary_only_through_the_loop_reduces_its_draws(plain, spy, monkeypatch):
    df, post = plain
    do = {"t": 1}
    monkeypatch.setattr(fused, "LOOP_SUMMARY_UNITS", 9)  # 40 units: five calls, the last one padded
    full = queries.counterfactual(post, df, do, engine="fused")
    summ = queries.counterfactual(post, df, do, engine="fused", summary_only=True, prob=0.8)
    assert len(spy) == 2 and all(b is not None for b in spy)
    for node, v in full.values.items():
        v = np.asarray(v, dtype=float)
        ref = np.stack([v.mean(0), v.std(0), *np.quantile(v, [0.1, 0.9], axis=0)], axis=-1)
        np.testing.assert_allclose(summ.summaries[node], ref, rtol=1e-12, atol=1e-12, err_msg=node)


_CACHED = """
import numpy as np
from causal_wm import fused, looped
jax = fused._jax()
def fn(theta, data):
    return (jax.numpy.exp(theta[:, 0][:, None] * data[:, 1][None, :]),)
with jax.enable_x64(True):
    closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct((5, 3), np.float64), jax.ShapeDtypeStruct((7, 2), np.float64))
    loop = looped.Loop(closed, 5, 7)
    out = np.zeros((1, 5, 7))
    loop(out, 0, 7, np.ones((5, 3)), np.ones((7, 2)))
print(sum(loop.kern.stats.cache_hits.values()), sum(loop.kern.stats.cache_misses.values()), out[0, 0, 0])
"""


def test_generated_loops_are_compiled_once_across_processes(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "CAUSAL_WM_CACHE": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    runs = [subprocess.run([sys.executable, "-c", _CACHED], env=env, capture_output=True, text=True, check=True)
            for _ in range(2)]
    first, second = (r.stdout.split() for r in runs)
    assert first[:2] == ["0", "1"] and second[:2] == ["1", "0"], (first, second)  # miss, then a hit from disk
    assert float(first[2]) == float(second[2])
    assert abs(float(first[2]) - np.exp(1.0)) <= 2 * np.spacing(np.exp(1.0))  # vexp: within 2 ulp
    files = list((tmp_path / "loops").glob("loop_*.py"))
    assert len(files) == 1 and "np.float64(" not in files[0].read_text().split("def kern")[0]


def test_loops_use_a_temporary_folder_where_the_cache_folder_cannot_be_written(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setenv("CAUSAL_WM_CACHE", str(locked / "sub"))
    if os.access(locked, os.W_OK):  # running as root: permissions do not bind
        monkeypatch.setattr(looped.Path, "mkdir", lambda *a, **k: (_ for _ in ()).throw(PermissionError("no")))
    folder = looped.cache_dir()
    assert folder == looped._process_dir() and folder.is_dir()
    src = "def kern(CF, CU, DF, DU, VF, VU, out, u0, s0, s1, nu):\n    out[0, 0, 0] = math.exp(CF[0]) + 1.0\n"
    kern = looped._compile(src)
    out = np.zeros((1, 1, 1))
    kern(np.array([1.0]), np.zeros(1, np.uint64), np.zeros((1, 1)), np.zeros((1, 1), np.uint64), np.zeros((1, 1)),
         np.zeros((1, 1), np.uint64), out, 0, 0, 1, 1)
    assert out[0, 0, 0] == pytest.approx(np.e + 1.0, rel=1e-15)
    assert list(folder.glob("loop_*.py"))


def test_a_new_vecmath_gives_a_new_loop_file(tmp_path, monkeypatch):
    """numba's on-disk cache checks only the loop's own file; the loop's text names vecmath's
    digest, so that an upgraded exp or select is compiled in, not served from an old cache."""
    monkeypatch.setenv("CAUSAL_WM_CACHE", str(tmp_path))
    src = "def kern(CF, CU, DF, DU, VF, VU, out, u0, s0, s1, nu):\n    out[0, 0, 0] = math.exp(CF[0]) + 2.0\n"
    looped._compile(src)
    assert looped._vecmath_digest() in next((tmp_path / "loops").glob("loop_*.py")).read_text()
    monkeypatch.setattr(looped, "_vecmath_digest", lambda: "0123456789abcdef")
    looped._compile(src)
    assert len(list((tmp_path / "loops").glob("loop_*.py"))) == 2


GROUPS = {
    "name": "looped_groups",
    "nodes": {
        "g": {"family": "categorical", "levels": ["a", "b", "c", "d"]},
        "x": {"family": "normal", "formula": "1 + (1 | g)"},
        "t": {"family": "bernoulli", "formula": "x + (1 | g)"},
        "y": {"family": "normal", "formula": "t + x + (t | g)"},
        "yb": {"family": "bernoulli", "formula": "y + (1 | g)"},
    },
}


@pytest.mark.parametrize("kind", ["hard", "per_unit", "shift"])
def test_group_level_terms_run_in_the_loop(kind, spy, monkeypatch):
    df, post = _posterior(GROUPS, 23)
    do = INTERVENTIONS[kind](df)
    loop = queries.counterfactual(post, df, do, engine="fused")
    assert spy and all(b is not None for b in spy)
    # the group's column of the draw's row, per element, read in a first loop (kept in T)
    assert "M0[s, np.int64(" in spy[0].source and "T[0, u] = " in spy[0].source
    xla = _xla(post, df, do, monkeypatch)
    gen = queries.counterfactual(post, df, do, engine="generic")
    for node in loop.nodes:
        _agree(post, xla[node], loop[node], node)
        _agree(post, gen[node], loop[node], node)


def test_integer_operations_python_spells_differently_are_not_translated():
    jax = fused._jax()
    S, U = 5, 7
    spec = (jax.ShapeDtypeStruct((S, 1), np.int64), jax.ShapeDtypeStruct((1, U), np.int64))
    with jax.enable_x64(True):
        for fn in (lambda a, b: (jax.lax.div(a * b, b + 3),), lambda a, b: (jax.lax.shift_right_logical(a * b, b),)):
            with pytest.raises(looped.Unsupported):
                looped.Loop(jax.make_jaxpr(fn)(*spec), S, U)

