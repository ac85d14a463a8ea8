"""Identification against textbook graphs with known answers, checked semantically.

Each estimand is evaluated on the observed distribution of a random discrete SCM on the graph
and compared with the true interventional distribution, computed by brute-force enumeration of
that SCM (truncated factorisation over every node, latent ones included).
"""

from __future__ import annotations

import dataclasses
import itertools

import networkx as nx
import numpy as np
import pytest

import causal_wm as cw
from causal_wm.identify import (
    Hedge,
    Prob,
    Ratio,
    Sum,
    backdoor_set,
    dowhy_identify,
    evaluate,
    frontdoor_set,
    id_algorithm,
    identify,
    instruments,
    is_frontdoor_set,
    latent_projection,
)


# ---------------------------------------------------------------- helpers
def model(edges, latent=(), nodes=()):
    """An SCM whose graph has exactly ``edges``; ``latent`` nodes are unobserved."""
    spec: dict[str, dict] = {n: {} for n in nodes}
    for a, b in edges:
        spec.setdefault(a, {})
        spec.setdefault(b, {})
    for a, b in edges:
        f = spec[b].get("formula")
        spec[b]["formula"] = f"{f} + {a}" if f else a
    for u in latent:
        spec[u]["latent"] = True
    return cw.SCM.from_dict({"name": "g", "nodes": spec})


class DiscreteSCM:
    """A random discrete SCM on ``scm``'s graph: a Dirichlet conditional table per node."""

    def __init__(self, scm, rng, card=2):
        self.order = scm.order
        self.observed = scm.observed
        self.card = {v: int(card if isinstance(card, int) else rng.integers(*card)) for v in self.order}
        self.cpt = {}
        for v in self.order:
            pa = scm.parents(v)
            self.cpt[v] = (pa, rng.dirichlet(np.ones(self.card[v]), size=[self.card[p] for p in pa]))

    def joint(self, do=None):
        """``P(all nodes)`` under the hard intervention ``do`` (truncated factorisation)."""
        do = do or {}
        idx = {v: i for i, v in enumerate(self.order)}
        out = np.ones([self.card[v] for v in self.order])
        for v in self.order:
            pa, tab = self.cpt[v]
            if v in do:
                tab = np.zeros(tab.shape)
                tab[..., do[v]] = 1.0
            axes = [*pa, v]
            perm = sorted(range(len(axes)), key=lambda i: idx[axes[i]])
            shape = [self.card[u] if u in axes else 1 for u in self.order]
            out = out * np.transpose(tab, perm).reshape(shape)
        return out

    def marginal(self, table, keep):
        """Marginal of a table over ``self.order`` onto ``keep``, axes in the order of ``keep``."""
        pos = [self.order.index(v) for v in keep]
        m = table.sum(axis=tuple(i for i in range(len(self.order)) if i not in pos))
        return np.transpose(m, [sorted(pos).index(p) for p in pos])

    def observed_joint(self):
        return self.marginal(self.joint(), self.observed)

    def interventional(self, treatment, outcome):
        """``P(outcome | do(treatment))`` with axes (*treatment, *outcome), by enumeration."""
        out = np.zeros([self.card[v] for v in (*treatment, *outcome)])
        for values in itertools.product(*(range(self.card[v]) for v in treatment)):
            out[values] = self.marginal(self.joint(dict(zip(treatment, values, strict=True))), outcome)
        return out


def check_numerically(scm, ident, seed, card=2):
    """The estimand equals the true interventional distribution of a random discrete SCM."""
    truth = DiscreteSCM(scm, np.random.default_rng(seed), card)
    est = ident.evaluate(truth.observed_joint(), scm.observed)
    want = truth.interventional(ident.treatment, ident.outcome)
    np.testing.assert_allclose(est, want, atol=1e-12)
    return truth


BACKDOOR = [("c", "t"), ("c", "y"), ("t", "y")]
FRONTDOOR = [("U", "t"), ("U", "y"), ("t", "m"), ("m", "y")]
IV = [("z", "t"), ("U", "t"), ("U", "y"), ("t", "y")]
BOW = [("U", "t"), ("U", "y"), ("t", "y")]
NAPKIN = [("w1", "w2"), ("w2", "x"), ("x", "y"), ("U1", "w1"), ("U1", "y"), ("U2", "w1"), ("U2", "x")]
VERMA = [("v1", "v2"), ("v2", "v3"), ("v3", "v4"), ("U1", "v1"), ("U1", "v3"), ("U2", "v2"), ("U2", "v4")]
# front-door whose mediator is confounded with the outcome by an observed c: no back-door or
# front-door set exists; the ID algorithm factorises over the c-components {t, y}, {c}, {m}
CFRONT = [("t", "m"), ("c", "m"), ("c", "y"), ("m", "y"), ("U", "t"), ("U", "y")]


# ---------------------------------------------------------------- textbook graphs
def test_backdoor_observed_confounder():
    scm = model(BACKDOOR)
    ident = scm.identify(treatment="t", outcome="y")
    assert (ident.kind, ident.is_identified, ident.adjustment_set) == ("backdoor", True, ("c",))
    assert ident.estimand == "sum_{c} P(y | t, c) P(c)"
    assert ident.frontdoor_set is None and ident.instruments == ()
    assert any("c blocks every back-door path" in a for a in ident.assumptions)
    check_numerically(scm, ident, seed=0, card=(2, 4))


def test_randomised_treatment_needs_no_adjustment():
    ident = cw.load_model("job_training").identify(treatment="treat", outcome="re78")
    assert (ident.kind, ident.adjustment_set, ident.estimand) == ("backdoor", (), "P(re78 | treat)")


def test_frontdoor():
    scm = model(FRONTDOOR, latent=["U"])
    ident = identify(scm, "t", "y")
    assert (ident.kind, ident.is_identified, ident.frontdoor_set) == ("frontdoor", True, ("m",))
    assert ident.adjustment_set is None
    assert ident.estimand == "sum_{m} P(m | t) sum_{t'} P(y | t', m) P(t')"
    check_numerically(scm, ident, seed=1, card=(2, 4))


def test_instrument():
    scm = model(IV, latent=["U"])
    ident = identify(scm, "t", "y")
    assert (ident.kind, ident.is_identified, ident.instruments) == ("iv", False, ("z",))
    assert ident.estimand == "Cov(y, z) / Cov(t, z)"
    assert any("linear" in a and "hedge" in a for a in ident.assumptions)
    with pytest.raises(cw.QueryError, match="not a function of the joint"):
        ident.evaluate(np.full((2, 2, 2), 1 / 8), scm.observed)


def test_conditional_instrument():
    # z is confounded with y through an observed w; it is an instrument given w
    scm = model([("w", "z"), ("w", "y"), ("z", "t"), ("t", "y"), ("U", "t"), ("U", "y")], latent=["U"])
    ident = identify(scm, "t", "y")
    assert (ident.kind, ident.instruments, ident.instrument_conditioning) == ("iv", ("z",), ("w",))
    assert ident.estimand == "Cov(y, z | w) / Cov(t, z | w)"


def test_bow_is_not_identifiable():
    scm = model(BOW, latent=["U"])
    with pytest.raises(cw.NotIdentifiable) as info:
        identify(scm, "t", "y")
    msg = str(info.value)
    for part in ("effect of t on y", "hedge", "'U'", "instrument", "front-door"):
        assert part in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(Hedge):
        id_algorithm(latent_projection(scm.graph, scm.latent), ["t"], ["y"])


def test_napkin():
    scm = model(NAPKIN, latent=["U1", "U2"])
    ident = identify(scm, "x", "y")
    assert (ident.kind, ident.is_identified, ident.adjustment_set, ident.frontdoor_set) == (
        "general", True, None, None)
    # the textbook answer: sum_{w1} P(x, y | w1, w2) P(w1) / sum_{w1} P(x | w1, w2) P(w1)
    e = ident.expression
    assert isinstance(e, Ratio) and isinstance(e.num, Sum) and isinstance(e.den, Sum)
    assert e.num.over == e.den.over == ("w1",)
    assert {f.key for f in e.num.body.factors} == {Prob(("x", "y"), ("w1", "w2")).key, Prob(("w1",)).key}
    assert {f.key for f in e.den.body.factors} == {Prob(("x",), ("w1", "w2")).key, Prob(("w1",)).key}
    assert ident.estimand == "(sum_{w1} P(w1) P(x, y | w1, w2)) / (sum_{w1} P(w1) P(x | w1, w2))"
    assert any("does not depend on w2" in a for a in ident.assumptions)
    truth = check_numerically(scm, ident, seed=2, card=(2, 4))
    # the raw estimand holds for every value of w2, not only on average
    raw = evaluate(e, truth.observed_joint(), scm.observed)
    want = truth.interventional(("x",), ("y",))
    assert raw.variables == ("x", "y", "w2")  # y's and x's axes, and one per value of w2
    np.testing.assert_allclose(raw.table, np.broadcast_to(want[..., None], raw.table.shape), atol=1e-12)


def test_verma():
    scm = model(VERMA, latent=["U1", "U2"])
    ident = identify(scm, "v1", "v4")
    assert ident.kind == "general"
    assert ident.estimand == "sum_{v2, v3} P(v2 | v1) P(v4 | v1, v2, v3) sum_{v1'} P(v1') P(v3 | v1', v2)"
    check_numerically(scm, ident, seed=3, card=(2, 4))
    ident2 = identify(scm, "v2", "v4")  # needs line 3 of ID: the answer holds for any value of v1
    assert ident2.kind == "general" and "v1" in ident2.expression.free
    check_numerically(scm, ident2, seed=4, card=(2, 4))


def test_c_component_factorisation():
    scm = model(CFRONT, latent=["U"])
    g, obs = scm.graph, scm.observed
    assert backdoor_set(g, ["t"], ["y"], obs) is None and frontdoor_set(g, "t", ["y"], obs) is None
    ident = identify(scm, "t", "y")
    assert ident.kind == "general"
    assert ident.estimand == "sum_{c, m} P(c) P(m | c, t) sum_{t'} P(t') P(y | c, t', m)"
    check_numerically(scm, ident, seed=5, card=(2, 4))


def test_several_treatments_and_outcomes():
    scm = model([("c", "t1"), ("t1", "t2"), ("c", "y1"), ("t2", "y1"), ("y1", "y2"), ("t1", "y2")])
    ident = identify(scm, ["t1", "t2"], ["y1", "y2"])
    assert (ident.kind, ident.adjustment_set) == ("backdoor", ("c",))
    assert ident.estimand == "sum_{c} P(y1, y2 | t1, t2, c) P(c)"
    check_numerically(scm, ident, seed=6)
    scm = model(NAPKIN, latent=["U1", "U2"])
    ident = identify(scm, ["w2", "x"], "y")
    check_numerically(scm, ident, seed=7)


def test_no_directed_path_means_no_effect():
    scm = model([("t", "a"), ("y", "a"), ("U", "t"), ("U", "y")], latent=["U"])
    ident = identify(scm, "t", "y")
    assert (ident.kind, ident.estimand) == ("general", "P(y)")
    assert any("effect is zero" in a for a in ident.assumptions)
    check_numerically(scm, ident, seed=8)


def random_graph(rng, n_obs, n_lat, density):
    obs = [f"v{i}" for i in range(n_obs)]
    edges = [(obs[i], obs[j]) for i in range(n_obs) for j in range(i + 1, n_obs) if rng.random() < density]
    lat = [f"U{k}" for k in range(n_lat)]
    for u in lat:
        a, b = rng.choice(n_obs, size=2, replace=False)
        edges += [(u, obs[a]), (u, obs[b])]
    return model(edges, latent=lat, nodes=lat + obs)


def test_random_graphs_match_enumeration():
    """Every estimand found on random graphs with latent confounders equals the truth."""
    rng = np.random.default_rng(11)
    kinds: dict[str, int] = {}
    for _ in range(400):
        scm = random_graph(rng, int(rng.integers(4, 8)), int(rng.integers(1, 5)), 0.45)
        i, j = sorted(rng.choice(len(scm.observed), size=2, replace=False))
        t = [scm.observed[i]] if rng.random() < 0.8 or j == i + 1 else [scm.observed[i], scm.observed[i + 1]]
        y = scm.observed[j]
        if y not in scm.descendants(t):
            continue
        try:
            ident = identify(scm, t, y)
        except cw.NotIdentifiable:
            kinds["not identified"] = kinds.get("not identified", 0) + 1
            continue
        kinds[ident.kind] = kinds.get(ident.kind, 0) + 1
        if ident.is_identified:
            check_numerically(scm, ident, seed=int(rng.integers(1 << 30)))
        if ident.frontdoor_set:
            assert is_frontdoor_set(scm.graph, t[0], [y], ident.frontdoor_set)
    assert kinds.get("general", 0) >= 10 and kinds.get("frontdoor", 0) >= 1, kinds
    assert kinds.get("not identified", 0) >= 10 and kinds.get("iv", 0) >= 5, kinds


# ---------------------------------------------------------------- DoWhy cross-check
def test_dowhy_agrees_on_textbook_graphs():
    d = dowhy_identify(model(BACKDOOR), "t", "y")
    assert d.get_backdoor_variables() == ["c"]
    d = dowhy_identify(model(FRONTDOOR, latent=["U"]), "t", "y")
    assert d.get_frontdoor_variables() == ["m"] and d.estimands["backdoor"] is None
    d = dowhy_identify(model(IV, latent=["U"]), "t", "y")
    assert d.get_instrumental_variables() == ["z"] and d.estimands["backdoor"] is None


def test_dowhy_agrees_on_random_graphs():
    """Back-door and front-door sets exist exactly when DoWhy finds one; DoWhy's observed instruments are ours."""
    rng = np.random.default_rng(12)
    compared = 0
    for _ in range(80):
        scm = random_graph(rng, int(rng.integers(4, 7)), int(rng.integers(1, 4)), 0.4)
        i, j = sorted(rng.choice(len(scm.observed), size=2, replace=False))
        t, y = scm.observed[i], scm.observed[j]
        if y not in scm.descendants([t]):
            continue
        d = dowhy_identify(scm, t, y)
        g, obs = scm.graph, scm.observed
        assert (backdoor_set(g, [t], [y], obs) is not None) == (d.estimands["backdoor"] is not None)
        assert (frontdoor_set(g, t, [y], obs) is not None) == bool(d.get_frontdoor_variables())
        ours, cond = instruments(g, t, y, obs)
        if not cond:  # DoWhy knows unconditional instruments only (and also lists latent ones)
            assert {z for z in d.get_instrumental_variables() if z in obs} <= set(ours)
        compared += 1
    assert compared >= 30


# ---------------------------------------------------------------- pieces
def test_latent_projection():
    g = nx.DiGraph([("U1", "U2"), ("U2", "a"), ("U1", "b"), ("x", "L"), ("L", "y"), ("L", "z"),
                    ("S", "a"), ("a", "b")])
    admg = latent_projection(g, ["U1", "U2", "L", "S"])
    assert set(admg.order) == {"a", "b", "x", "y", "z"}
    assert set(admg.dag.edges()) == {("x", "y"), ("x", "z"), ("a", "b")}
    assert {frozenset(e) for e in admg.bi.edges()} == {frozenset("ab"), frozenset("yz")}
    assert admg.bi.edges["a", "b"]["via"] == ("U1",) and admg.confounders(["y", "z"]) == ("L",)
    assert sorted(map(sorted, admg.districts())) == [["a", "b"], ["x"], ["y", "z"]]


def test_frontdoor_criterion_pieces():
    g = model(FRONTDOOR + [("t", "m2"), ("m2", "y")], latent=["U"]).graph
    assert frontdoor_set(g, "t", ["y"], ["t", "m", "m2", "y"]) == ("m", "m2")
    assert not is_frontdoor_set(g, "t", ["y"], ["m"])  # misses t -> m2 -> y


def test_identification_is_a_frozen_value_and_prints():
    ident = identify(model(BACKDOOR), "t", "y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.kind = "iv"
    text = str(ident)
    assert text.splitlines()[0] == "P(y | do(t)): backdoor (identified)"
    assert "estimand:       sum_{c} P(y | t, c) P(c)" in text and "adjustment set: c" in text
    assert ident == identify(model(BACKDOOR), ["t"], ["y"])


@pytest.mark.parametrize(
    ("treatment", "outcome", "match"),
    [
        ("treatt", "re78", "treatment 'treatt' is not a node.*Did you mean 'treat'"),
        ("treat", "re79", "outcome 're79' is not a node.*Did you mean 're78'"),
        ([], "re78", "non-empty list"),
        ("treat", ["re78", "treat"], "both treatment and outcome"),
        (3, "re78", "node name"),
    ],
)
def test_query_errors(treatment, outcome, match):
    with pytest.raises(cw.QueryError, match=match):
        cw.load_model("job_training").identify(treatment, outcome)


def test_latent_treatment_is_a_query_error():
    with pytest.raises(cw.QueryError, match="'U' is latent"):
        identify(model(BOW, latent=["U"]), "U", "y")
