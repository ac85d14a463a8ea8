"""The fused engine (causal_wm/fused.py, traced per model with JAX) against the generic kernel.

No MCMC runs: parameters are drawn by NumPy and set as the posterior's draws
(:func:`causal_wm.testing.posterior_from_params`), so each case costs the fused engine's compile
(about a second) and milliseconds of queries. Two small SCMs cover every family, a latent node,
an interaction, a categorical parent, a group intercept and every intervention kind.

* Deterministic parts (continuous nodes: exact abduction) agree to 1e-9 relative.
* Stochastic parts (discrete nodes, fresh noise, policies): both engines draw the same
  counter-based uniforms, so they must agree element for element except where a transcendental
  function's last bit flips a comparison (allowed: 1 in 10^3); and, as distributions, their means
  must agree within 4 Monte Carlo standard errors.
* Consistency and effectiveness hold exactly on the fused path; results do not depend on how the
  work is chunked; the same seed gives the same draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import causal_wm as cw
from causal_wm import fused, queries
from causal_wm import kernels as K
from causal_wm.testing import parameter_shapes, posterior_from_params

MIXED = {
    "name": "fused_mixed",
    "nodes": {
        "g": {"family": "categorical", "levels": ["a", "b", "c"]},
        "u": {"family": "normal", "latent": True},
        "x": {"family": "normal", "formula": "u + (1 | g)"},
        "t": {"family": "bernoulli", "formula": "x"},
        "yn": {"family": "normal", "formula": "t + x + t:x + g"},
        "yt": {"family": "student_t", "formula": "t + x + u"},
        "yl": {"family": "lognormal", "formula": "t + x"},
        "yc": {"family": "categorical", "levels": ["lo", "mid", "hi"], "formula": "t + x"},
        "yb": {"family": "bernoulli", "formula": "t + yc"},
        "z": {"family": "normal", "formula": "yb + yl + yc"},
    },
}
COUNTS = {
    "name": "fused_counts",
    "nodes": {
        "x": {"family": "normal"},
        "t": {"family": "bernoulli", "formula": "x"},
        "yp": {"family": "poisson", "formula": "t + x"},
        "ynb": {"family": "negative_binomial", "formula": "t + x"},
        "z": {"family": "normal", "formula": "yp + ynb"},
    },
}
# group slopes, a categorical x continuous interaction, lognormal and count parents, a latent node
# downstream of the intervention (abducted like an additive-noise node)
EDGES = {
    "name": "fused_edges",
    "nodes": {
        "g": {"family": "categorical", "levels": ["a", "b", "c", "d"]},
        "x": {"family": "lognormal", "formula": "g"},
        "c": {"family": "poisson", "formula": "x"},
        "t": {"family": "normal", "formula": "c + x"},
        "u": {"family": "normal", "latent": True, "formula": "t"},
        "y": {"family": "normal", "formula": "t * g + c + u + (t | g)"},
        "k": {"family": "negative_binomial", "formula": "t + u"},
        "w": {"family": "student_t", "formula": "k + y"},
    },
}
N = 40
CHAINS, DRAWS = 2, 40
DISCRETE = {"t", "yc", "yb", "yp", "ynb", "g"}


def _data(spec, n, rng) -> pd.DataFrame:
    """Any data in every node's support (the engines are compared, not the fit)."""
    cols = {}
    for name, node in spec["nodes"].items():
        fam = node["family"]
        if node.get("latent"):
            continue
        if fam == "categorical":
            cols[name] = rng.choice(node["levels"], n)
        elif fam == "bernoulli":
            cols[name] = rng.integers(0, 2, n)
        elif fam == "poisson":
            cols[name] = rng.poisson(3.0, n)
        elif fam == "negative_binomial":
            cols[name] = rng.negative_binomial(3, 0.4, n)
        elif fam == "lognormal":
            cols[name] = np.exp(rng.normal(0.5, 0.4, n))
        else:
            cols[name] = rng.normal(1.0, 2.0, n)
    return pd.DataFrame(cols)


def _posterior(spec, seed, coef_sd=0.7):
    rng = np.random.default_rng(seed)
    scm = cw.SCM.from_dict(spec)
    df = _data(spec, N, rng)
    params = {}
    for site, shape in parameter_shapes(scm, df).items():
        full = (CHAINS, DRAWS, *shape)
        if site.endswith(("__sigma", "__phi")):
            params[site] = rng.uniform(0.5, 1.5, full)
        elif site.endswith("__nu"):
            params[site] = rng.uniform(3.0, 10.0, full)
        else:
            params[site] = rng.normal(0.0, coef_sd, full)
    return df, posterior_from_params(scm, df, params, seed=seed)


@pytest.fixture(scope="module")
def mixed():
    return _posterior(MIXED, 11)


@pytest.fixture(scope="module")
def counts():
    return _posterior(COUNTS, 12)


def _agree(post, generic, fast, node, tol=1e-9):
    a, b = np.asarray(generic, dtype=float), np.asarray(fast, dtype=float)
    assert a.shape == b.shape, node
    if post.scm.node(node).family in ("normal", "student_t", "lognormal"):
        rel = np.abs(a - b) / np.maximum(1.0, np.abs(a))
        # continuous nodes downstream of a discrete one inherit its rare flips (see module docstring)
        assert np.mean(rel > tol) <= 1e-3, (node, rel.max())
    else:  # integers, exactly (a count beyond 1e12 comes from the normal approximation: to rounding)
        differ = np.abs(a - b) > 1e-12 * np.maximum(1.0, np.abs(a))
        assert np.mean(differ) <= 1e-3, (node, np.mean(differ))
    # as distributions: means within 4 MCSE of their difference (draws x units treated as independent)
    se = np.sqrt((a.var() + b.var()) / a.size) + 1e-12
    assert abs(a.mean() - b.mean()) <= 4 * se, (node, a.mean(), b.mean(), se)


def _codes(post, node, arr):
    levels = post.plan.scales[node].levels
    if levels is None:
        return np.asarray(arr, dtype=float)
    lookup = {v: i for i, v in enumerate(levels)}
    return np.vectorize(lookup.get, otypes=[float])(arr)


INTERVENTIONS = {
    "hard": lambda df: {"t": 1},
    "per_unit": lambda df: {"t": 1 - df["t"].to_numpy()},
    "shift": lambda df: {"x": cw.shift(0.7)},
    "scale": lambda df: {"x": cw.scale(1.3)},
    "callable": lambda df: {"x": lambda v: v + 0.5 * np.sign(v)},
    "policy_continuous": lambda df: {"x": cw.normal(0.5, 1.5)},
    "policy_discrete": lambda df: {"t": cw.bernoulli(0.3)},
    "hard_categorical": lambda df: {"yc": "hi"},
}


@pytest.mark.parametrize("kind", list(INTERVENTIONS))
def test_counterfactual_fused_equals_generic(mixed, kind):
    df, post = mixed
    do = INTERVENTIONS[kind](df)
    gen = queries.counterfactual(post, df, do, engine="generic")
    fast = queries.counterfactual(post, df, do, engine="fused")
    assert set(gen.nodes) == set(fast.nodes)
    for node in gen.nodes:
        _agree(post, _codes(post, node, gen[node]), _codes(post, node, fast[node]), node)


# count families compile to lockstep while-loops (about 2 s each): one kind by default, the rest slow
@pytest.mark.parametrize("kind", ["hard", pytest.param("per_unit", marks=pytest.mark.slow),
                                  pytest.param("shift", marks=pytest.mark.slow)])
def test_count_counterfactuals_fused_equals_generic(counts, kind):
    df, post = counts
    do = INTERVENTIONS[kind](df)
    gen = queries.counterfactual(post, df, do, engine="generic")
    fast = queries.counterfactual(post, df, do, engine="fused")
    for node in gen.nodes:
        _agree(post, gen[node], fast[node], node)
    assert np.all(fast["yp"] >= 0) and np.all(fast["yp"] == np.round(fast["yp"]))


def test_group_slopes_count_parents_and_latent_descendants():
    df, post = _posterior(EDGES, 13, coef_sd=0.3)  # a chain of log links: keep counts moderate
    gen = queries.counterfactual(post, df, {"x": cw.scale(1.5)}, engine="generic")
    fast = queries.counterfactual(post, df, {"x": cw.scale(1.5)}, engine="fused")
    assert set(gen.nodes) == {"x", "c", "t", "u", "y", "k", "w"}
    for node in gen.nodes:
        _agree(post, gen[node], fast[node], node)


@pytest.mark.parametrize("loop", [True, False])
def test_consistency_is_exact_on_the_fused_path(mixed, counts, loop, monkeypatch):
    # both ways the fused engine runs: the numba loop and XLA's (which fuses a * b - c into a
    # multiply-add: abduction's changes must be exactly 0 however the compiler fuses them)
    monkeypatch.setattr(fused, "USE_LOOP", loop)
    for df, post in (mixed, counts):
        cf = queries.counterfactual(post, df, {"t": df["t"].to_numpy()}, engine="fused")
        for node in cf.nodes:
            assert np.all(cf[node] == df[node].to_numpy()[None, :]), node  # the data's own numbers
    df, post = mixed
    cf = queries.counterfactual(post, df, {"yc": df["yc"].to_numpy()}, engine="fused")
    assert np.all(cf["z"] == df["z"].to_numpy()[None, :])
    # units set to their own values keep them; the others move (an interaction and group terms)
    t = df["t"].to_numpy()
    half = np.where(np.arange(len(df)) % 2 == 0, t, 1.0 - t)
    cf = queries.counterfactual(post, df, {"t": half}, engine="fused")
    for node in ("yn", "yt", "yl", "z"):
        kept = cf[node][:, ::2] == df[node].to_numpy()[None, ::2]
        assert np.all(kept), node
        assert not np.any(cf[node][:, 1::2] == df[node].to_numpy()[None, 1::2]), node


def test_effectiveness_on_the_fused_path(mixed):
    df, post = mixed
    cf = queries.counterfactual(post, df, {"t": 1, "x": cw.shift(0.7)}, engine="fused")
    assert np.all(cf["t"] == 1.0)
    x = df["x"].to_numpy()
    assert np.allclose(cf["x"], x[None, :] + 0.7, rtol=1e-12, atol=1e-12)
    assert set(np.unique(cf["yc"])) <= {"lo", "mid", "hi"} and np.all(cf["yl"] > 0)
    assert "g" not in cf.nodes and "u" not in cf.nodes  # non-descendants are not outputs


@pytest.mark.parametrize("engine", ["fused", "generic"])
def test_nodes_set_to_numbers_are_reported_not_computed(mixed, engine, monkeypatch):
    df, post = mixed
    t = (np.arange(len(df)) % 2).astype(float)
    do = {"t": t, "x": 0.25}
    cf = queries.counterfactual(post, df, do, engine=engine)
    S = cf["yc"].shape[0]
    for name, want in (("t", t), ("x", np.full(len(df), 0.25))):
        assert cf[name].shape == (S, len(df)) and cf[name].strides[0] == 0, name  # one row, every draw
        assert not cf[name].flags.writeable and np.array_equal(cf[name][S - 1], want), name
    # the other nodes as when the set nodes are computed by the engine too
    seen = []
    monkeypatch.setattr(queries, "_fixed_values", lambda *a: seen.append(1) or {})
    computed = queries.counterfactual(post, df, do, engine=engine)
    assert seen and list(computed.nodes) == list(cf.nodes)
    for node in cf.nodes:
        assert np.array_equal(computed[node], cf[node]), node
    summ = queries.counterfactual(post, df, do, engine=engine, summary_only=True)
    assert np.array_equal(summ.summaries["x"], np.tile([0.25, 0.0, 0.25, 0.25], (len(df), 1)))
    monkeypatch.undo()
    shifted = queries.counterfactual(post, df, {"x": cw.shift(0.5)}, engine=engine)
    assert shifted["x"].flags.writeable  # computed: not a fixed value


def test_a_query_that_sets_only_a_leaf_runs_no_kernel(mixed, monkeypatch):
    df, post = mixed
    leaf = next(n for n in post.scm.order if not post.scm.descendants({n}) and post.plan.scales[n].levels is None)
    for name in ("counterfactual_draws", "counterfactual_summary"):
        monkeypatch.setattr(fused, name, lambda *a, **k: pytest.fail("no kernel should run"))
    monkeypatch.setattr(queries.K, "units_kernel", lambda *a, **k: pytest.fail("no kernel should run"))
    value = float(np.median(df[leaf]))
    cf = queries.counterfactual(post, df, {leaf: value}, engine="fused")
    assert cf.nodes == (leaf,) and np.all(cf[leaf] == value)
    assert np.all(cf.summary()["estimate"] == value) and np.all(cf.summary()["sd"] == 0.0)


def test_summary_only_reduces_exactly_the_all_draws_result(mixed):
    df, post = mixed
    full = queries.counterfactual(post, df, {"x": cw.shift(0.7)}, engine="fused")
    summ = queries.counterfactual(post, df, {"x": cw.shift(0.7)}, summary_only=True, prob=0.8, engine="fused")
    gen = queries.counterfactual(post, df, {"x": cw.shift(0.7)}, summary_only=True, prob=0.8, engine="generic")
    for node in full.nodes:
        v = _codes(post, node, full[node])
        if node in full.levels:  # per level: the indicator's mean, SD and interval
            hits = [(v == j).astype(float) for j in range(len(full.levels[node]))]
        else:
            hits = [v]
        ref = np.stack([np.stack([h.mean(0), h.std(0), *np.quantile(h, [0.1, 0.9], axis=0)], axis=-1)
                        for h in hits], axis=1 if node in full.levels else 0)
        ref = ref if node in full.levels else ref[0]
        assert np.allclose(summ.summaries[node], ref, rtol=1e-12, atol=1e-12), node
        assert np.allclose(gen.summaries[node], ref, rtol=1e-12, atol=1e-12), node


def test_count_functions_mirror_the_generic_ones():
    """The traced count CDF and quantile against the generic kernel's, from tiny means to the normal
    approximation's range (both edit the same recurrence: this catches one changing alone)."""
    import jax

    from causal_wm import traced
    from causal_wm.families import NEGBIN, POISSON

    traced.load()
    rng = np.random.default_rng(3)
    # walks up to ~1e4 steps, and means far past the walk's limit (normal approximation)
    mu = np.concatenate([np.exp(rng.uniform(np.log(1e-3), np.log(1e5), 390)), np.geomspace(1e10, 1e13, 10)])
    for fam in (POISSON, NEGBIN):
        phi = rng.uniform(0.3, 5.0, mu.size) if fam == NEGBIN else np.zeros(mu.size)
        y = np.floor(rng.uniform(0.0, 2.0, mu.size) * mu)
        u = rng.uniform(size=mu.size)
        with jax.enable_x64(True):
            pair = jax.jit(lambda m, p, v, f=fam: traced.count_cdf_pair(f, m, p, v))
            lo, hi = (np.asarray(a) for a in pair(mu, phi, y))
            q = np.asarray(jax.jit(lambda m, p, v, f=fam: traced.count_quantile(f, m, p, v))(mu, phi, u))
        ref = np.array([K.count_cdf_pair(fam, m, p, int(v)) for m, p, v in zip(mu, phi, y, strict=True)])
        ref_q = np.array([K.count_quantile(fam, m, p, v) for m, p, v in zip(mu, phi, u, strict=True)])
        assert np.allclose(lo, ref[:, 0], rtol=1e-9, atol=1e-12) and np.allclose(hi, ref[:, 1], rtol=1e-9, atol=1e-12)
        assert np.mean(np.abs(q - ref_q) > 1e-12 * np.maximum(1.0, ref_q)) <= 0.01, fam
        # the upper tail: counts above the mean, out to where the tail is below 1e-100
        y_up = np.floor(mu + rng.uniform(0.0, 1.0, mu.size) * (10.0 * np.sqrt(mu) + 20.0)) + 1.0
        up = (y_up > mu) & (mu < 1e6)
        w = rng.uniform(size=mu.size)
        guess = y_up + np.floor(rng.uniform(-3.0, 3.0, mu.size))
        with jax.enable_x64(True):
            s_hi, s_lo = (np.asarray(a) for a in jax.jit(
                lambda m, p, v, a, f=fam: traced.count_sf_pair(f, m, p, v, a))(mu, phi, y_up, up))
            q_up = np.asarray(jax.jit(lambda m, p, v, g, a, f=fam: traced.count_quantile_sf(f, m, p, v, g, a))(
                mu, phi, s_hi + w * (s_lo - s_hi), guess, up))
        ref_up = np.array([K.count_sf_pair(fam, mu[i], phi[i], y_up[i]) for i in np.flatnonzero(up)])
        # (lgamma of arguments near 1e5 differs in the last bits between XLA and libm: ~1e-9 of a pmf)
        assert np.allclose(s_hi[up], ref_up[:, 0], rtol=1e-7, atol=0) and np.allclose(s_lo[up], ref_up[:, 1],
                                                                                        rtol=1e-7, atol=0)
        ref_q_up = np.array([K.count_quantile_sf(fam, mu[i], phi[i], s_hi[i] + w[i] * (s_lo[i] - s_hi[i]), guess[i])
                             for i in np.flatnonzero(up)])
        assert np.mean(q_up[up] != ref_q_up) <= 0.01, fam


def test_row_summary_quantiles_are_numpys():
    rng = np.random.default_rng(0)
    samp, res = np.empty(K.SUMMARY_SAMPLE), np.empty(4)
    rows = [rng.normal(size=1000), rng.integers(0, 2, 1000).astype(float), rng.poisson(2.0, 997).astype(float),
            np.sort(rng.standard_cauchy(2000))[::-1].copy(), rng.normal(size=300), np.full(500, 3.0),
            np.where(np.arange(1000) == 7, np.nan, rng.normal(size=1000)), np.array([1.0, np.nan, 2.0, 0.0])]
    for row in rows:
        for prob in (0.5, 0.9, 0.998):
            lo, hi = (1 - prob) / 2, (1 + prob) / 2
            K.row_summary(row, lo, hi, samp, np.empty((2, row.size)), res)
            ref = [row.mean(), row.std(), *np.quantile(row, [lo, hi])]
            assert np.allclose(res, ref, rtol=1e-12, atol=1e-12, equal_nan=True), (row[:3], prob, res, ref)


def test_summarise_cols_summarises_each_units_draws():
    # the loop's (outputs, draws, units) layout; a unit range that starts inside a block of 8 and
    # ends with a partial one; continuous, binary, constant and NaN columns
    rng = np.random.default_rng(1)
    S, U = 700, 29
    vals = rng.normal(size=(2, S, U))
    vals[0, :, 3] = rng.integers(0, 2, S)
    vals[1, :, 5] = 2.5
    vals[1, 17, 9] = np.nan
    a, b = 3, 27
    out = np.empty((b - a, 2, 4))
    K.summarise_cols(vals, a, b, 0.05, 0.95, out)
    for o in range(2):
        for j in range(a, b):
            col = vals[o, :, j]
            ref = [col.mean(), col.std(), *np.quantile(col, [0.05, 0.95])]
            assert np.allclose(out[j - a, o], ref, rtol=1e-12, atol=1e-12, equal_nan=True), (o, j)


@pytest.mark.parametrize("outcome,do,vs,level", [
    ("z", {"t": 1}, {"t": 0}, None),
    ("yc", {"t": 1}, {"t": 0}, "hi"),
    ("yl", {"x": cw.shift(1.0)}, None, None),
    ("yb", {"x": cw.normal(0.0, 1.0)}, {"x": cw.scale(0.5)}, None),
])
def test_effect_fused_equals_generic(mixed, outcome, do, vs, level):
    _, post = mixed
    gen = queries.effect(post, outcome, do, vs, level=level, engine="generic")
    fast = queries.effect(post, outcome, do, vs, level=level, engine="fused")
    for a, b in ((gen.under_do, fast.under_do), (gen.under_vs, fast.under_vs)):
        assert np.allclose(a, b, rtol=1e-9, atol=1e-12), (outcome, np.abs(a - b).max())


@pytest.mark.parametrize("outcome", ["z", pytest.param("yp", marks=pytest.mark.slow),
                                     pytest.param("ynb", marks=pytest.mark.slow)])
def test_count_effects_fused_equal_generic(counts, outcome):
    _, post = counts  # z: fresh draws of both count nodes; yp, ynb: their expectations
    gen = queries.effect(post, outcome, {"t": 1}, {"t": 0}, engine="generic")
    fast = queries.effect(post, outcome, {"t": 1}, {"t": 0}, engine="fused")
    assert np.allclose(gen.chains, fast.chains, rtol=1e-9, atol=1e-12), outcome


def test_mediation_fused_equals_generic(mixed):
    _, post = mixed  # nested worlds (source OTHER): the mediator keeps its value under control
    gen = queries.mediation(post, "t", "yl", "z", engine="generic")
    fast = queries.mediation(post, "t", "yl", "z", engine="fused")
    for part in ("total", "direct", "indirect"):
        assert np.allclose(getattr(gen, part).chains, getattr(fast, part).chains, rtol=1e-9, atol=1e-12), part


def test_fused_is_reproducible_and_independent_of_chunking(mixed, monkeypatch):
    df, post = mixed
    prog = post.program
    a = queries.counterfactual(post, df, {"t": cw.bernoulli(0.5)}, engine="fused", seed=3)
    b = queries.counterfactual(post, df, {"t": cw.bernoulli(0.5)}, engine="fused", seed=3)
    c = queries.counterfactual(post, df, {"t": cw.bernoulli(0.5)}, engine="fused", seed=4)
    assert all(np.array_equal(a[n], b[n]) for n in a.nodes)
    assert not np.array_equal(a["t"], c["t"])  # another seed, other noise
    # the random numbers are a function of (seed, draw, unit, node), not of the tiling
    names = prog.names
    src_f = np.array([K.LATENT if n in prog.drawn else K.DATA for n in names])
    down = post.scm.descendants({"t"})
    src_c = np.array([K.ABDUCT if n in down else s for n, s in zip(names, src_f, strict=True)])
    ivk = np.array([K.HARD if n == "t" else K.NONE for n in names])
    ivv = np.where(ivk == K.HARD, 1.0, 0.0)
    outputs = np.array([i for i, n in enumerate(names) if n in down])
    rows, draws = np.arange(N), np.arange(prog.n_draws)
    args = (prog.arrays, prog.theta, prog.data, prog.orig, prog.lat, rows, draws, 99, src_f, src_c, ivk, ivv,
            np.zeros((1, len(names))), np.zeros((1, 2)), np.ones(len(names), bool), outputs)
    whole = fused.counterfactual_draws(*args)  # the numba loop (it reads the latent draws)
    tiled = fused.counterfactual_draws(*args, chunk=(7, 5))  # XLA's loop, in chunks of 7 draws x 5 units
    with monkeypatch.context() as m:
        m.setattr(fused, "USE_LOOP", False)
        assert np.array_equal(fused.counterfactual_draws(*args), tiled)  # XLA's loop whole: the same numbers
    for i, k in enumerate(outputs):
        _agree(post, tiled[i], whole[i], names[k])
    out = np.empty((len(draws), N, len(outputs)))
    K.units_kernel(*args[:6], draws, False, *args[7:], out)
    disc = [i for i, k in enumerate(outputs) if names[k] in DISCRETE]
    assert np.mean(out[:, :, disc].transpose(2, 0, 1) != whole[disc]) <= 1e-3


def test_engine_switch(mixed, monkeypatch):
    df, post = mixed
    with pytest.raises(cw.QueryError, match="engine"):
        queries.counterfactual(post, df, {"t": 1}, engine="jax")
    with pytest.raises(cw.QueryError, match="does not cover"):
        fused.use_fused("fused", False, "simulate", 10**9)
    calls = []
    real = fused.counterfactual_draws
    monkeypatch.setattr(fused, "counterfactual_draws", lambda *a, **k: calls.append(1) or real(*a, **k))
    queries.counterfactual(post, df, {"t": 1})  # auto, small: the generic kernel answers
    assert calls == []
    monkeypatch.setattr(fused, "AUTO_MIN_WORK", 0)
    queries.counterfactual(post, df, {"t": 1})  # auto, "large": the fused kernel answers
    assert calls == [1]
    # the Posterior methods take the same switch
    post.counterfactual(df, {"t": 1}, engine="generic")
    assert calls == [1]
    post.counterfactual(df, {"t": 1}, engine="fused")
    assert calls == [1, 1]
    with pytest.raises(cw.QueryError, match="engine must be one of"):
        post.effect("z", {"t": 1}, {"t": 0}, engine="gpu")
    with pytest.raises(cw.QueryError, match="engine must be one of"):
        post.mediation("t", "yl", "z", engine="gpu")


def test_discrete_policy_draws_follow_the_policy(mixed):
    """A stochastic policy on the fused path draws from the policy's distribution (MC check)."""
    df, post = mixed
    cf = queries.counterfactual(post, df, {"t": cw.bernoulli(0.3), "x": cw.normal(0.5, 1.5)}, engine="fused")
    t = cf["t"].ravel()
    assert abs(t.mean() - 0.3) <= 4 * np.sqrt(0.3 * 0.7 / t.size)
    x = cf["x"].ravel()
    # the policy's quantile table has 4096 cells: compare with the distribution at that resolution
    assert stats.kstest(x, stats.norm(0.5, 1.5).cdf).pvalue > 1e-4


def test_bernoulli_coupling_and_draw_match_the_exact_comparison_at_every_scale():
    """kernels.bernoulli_couple / bernoulli_draw (and their traced mirrors) compare the uniform
    with P(Y = 0) multiplied out, without a division. Against the comparison itself in 450-digit
    arithmetic (mpmath: 1 - q for a logit of -900 is 1e-391): the noise ``v q_f`` (y = 0) or
    ``q_f + v (1 - q_f)`` (y = 1) exceeds ``q_c``, for logits from tiny to far past exp's overflow,
    and infinite ones."""
    import jax
    import mpmath as mp
    from numba import njit

    from causal_wm import traced

    traced.load()
    rng = np.random.default_rng(11)
    n = 4000
    scale = np.exp(rng.uniform(np.log(1e-3), np.log(900.0), (2, n)))
    eta = rng.choice([-1.0, 1.0], (2, n)) * scale
    eta[1, :400] = eta[0, :400]  # no change: y comes back
    eta[1, 400:800] = eta[0, 400:800] + rng.normal(0.0, 1e-3, 400)  # a small one
    eta[:, 800:820] = rng.choice([-np.inf, np.inf, -800.0, 800.0], (2, 20))
    y = (rng.random(n) < 0.5).astype(float)
    v = rng.random(n)
    v[:50] = 2.0**-54  # the uniforms' extremes
    v[50:100] = 1.0 - 2.0**-53

    mp.mp.dps = 450

    def q(e):  # P(Y = 0), exactly enough; past exp's overflow (|eta| > 709.78) a logit counts as infinite
        return mp.mpf(1) if e < -709.79 else mp.mpf(0) if e > 709.79 else 1 / (1 + mp.exp(mp.mpf(e)))

    want, keep = np.empty(n), np.ones(n, bool)
    for i in range(n):
        qf, qc, vv = q(eta[0, i]), q(eta[1, i]), mp.mpf(v[i])
        noise = qf + vv * (1 - qf) if y[i] else vv * qf
        want[i] = float(noise > qc)
        # a comparison within rounding of a tie cannot be asked of float64 either way (rounding
        # relative to the probabilities of 0, or for y = 1 of 1, where those are the small ones)
        size = max(1 - noise, 1 - qc) if y[i] else max(noise, qc)
        keep[i] = abs(noise - qc) > mp.mpf(2.0**-50) * size or noise == qc
    assert keep.mean() > 0.98  # (the ties dropped are the extreme uniforms where nothing changes)

    couple = njit(lambda y, v, f, c: np.array([K.bernoulli_couple(y[i], v[i], f[i], c[i]) for i in range(y.size)]))
    draw = njit(lambda v, e: np.array([K.bernoulli_draw(v[i], e[i]) for i in range(v.size)]))
    got = couple(y, v, eta[0], eta[1])
    with jax.enable_x64(True):
        got_traced = np.asarray(jax.jit(traced.bernoulli_couple)(y, v, eta[0], eta[1]))
        got_draw_traced = np.asarray(jax.jit(traced.bernoulli_draw)(v, eta[1]))
    np.testing.assert_array_equal(got[keep], want[keep])
    np.testing.assert_array_equal(got_traced[keep], want[keep])
    # eta unchanged: the factual value for every v, wherever that value has a probability above 0
    # in float64 (past exp's overflow, y = 1 at a logit of -800 is a value of probability 0)
    possible = np.abs(eta[0, :400]) < 709.0
    assert possible.mean() > 0.7
    np.testing.assert_array_equal(got[:400][possible], y[:400][possible])
    # a fresh draw is the coupling from nothing: 1 where v > q(eta)
    fresh = np.array([float(mp.mpf(v[i]) > q(eta[1, i])) for i in range(n)])
    np.testing.assert_array_equal(draw(v, eta[1]), fresh)
    np.testing.assert_array_equal(got_draw_traced, fresh)
    nan = np.array([np.nan, 0.0])
    assert couple(np.array([0.0, 1.0]), np.array([0.5, 0.5]), nan, nan[::-1]).tolist() == [0.0, 0.0]
