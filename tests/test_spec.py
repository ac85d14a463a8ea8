"""The SCM as data: schema round trips, the graph derived from formulas, builders, priors."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
import yaml

import causal_wm as cw
from causal_wm import SCM
from causal_wm.errors import ModelSpecError
from causal_wm.formula import parse_formula
from causal_wm.priors import Prior

RICH = {
    "name": "rich",
    "description": "every schema feature at once",
    "data": {"path": "rich.csv"},
    "nodes": {
        "u": {"family": "normal", "latent": True, "description": "unobserved ability"},
        "region": {"family": "categorical", "levels": ["north", "south", "west"]},
        "age": {"family": "normal"},
        "educ": {"family": "normal", "formula": "age + u"},
        "treat": {"family": "bernoulli", "formula": "age * educ + (1 | region)",
                  "priors": {"b[age:educ]": {"dist": "normal", "loc": 0, "scale": 0.5}}},
        "visits": {"family": "poisson", "formula": "treat + (1 + treat | clinic)"},
        "wage": {"family": "lognormal", "formula": "treat + educ + u + region",
                 "priors": {"sigma": {"dist": "exponential", "rate": 2},
                            "b": {"dist": "normal", "loc": 0, "scale": 2}}},
        "score": {"family": "student_t", "formula": "wage + visits",
                  "priors": {"nu": {"dist": "gamma", "concentration": 3, "rate": 0.2}}},
        "jobs": {"family": "negative_binomial", "formula": "score"},
    },
}


def test_round_trip_through_dict():
    scm = cw.SCM.from_dict(RICH)
    again = cw.SCM.from_dict(scm.to_dict())
    assert again.nodes == scm.nodes
    assert again == scm
    assert again.to_dict() == scm.to_dict()


def test_round_trip_of_the_library_model_through_yaml(tmp_path):
    scm = cw.load_model("job_training")
    path = tmp_path / "job_training.yaml"
    path.write_text(yaml.safe_dump(scm.to_dict(), sort_keys=False))
    again = cw.load_model(path)
    assert again.nodes == scm.nodes
    assert again.order == scm.order
    assert dict(again.data) == dict(scm.data)


def test_to_dict_leaves_out_automatic_nodes_and_defaults():
    d = cw.SCM.from_dict(RICH).to_dict()
    assert "clinic" not in d["nodes"]  # added automatically, re-added by from_dict
    assert d["nodes"]["age"] == {"family": "normal"}
    assert d["nodes"]["u"]["latent"] is True
    assert d["nodes"]["region"]["levels"] == ["north", "south", "west"]
    assert d["nodes"]["wage"]["priors"]["sigma"] == {"dist": "exponential", "rate": 2.0}


def test_graph_is_derived_from_formulas():
    scm = cw.SCM.from_dict(RICH)
    g = scm.graph
    assert set(g.nodes) == {*RICH["nodes"], "clinic"}
    assert set(g.predecessors("educ")) == {"age", "u"}
    assert set(g.predecessors("treat")) == {"age", "educ", "region"}
    assert set(g.predecessors("visits")) == {"treat", "clinic"}
    assert set(g.predecessors("wage")) == {"treat", "educ", "u", "region"}
    assert ("u", "wage") in g.edges and ("wage", "u") not in g.edges
    assert g.nodes["u"]["latent"] is True and g.nodes["jobs"]["family"] == "negative_binomial"
    assert g.number_of_edges() == sum(len(n.parents) for n in scm.nodes)


def test_topological_order_is_stable():
    scm = cw.SCM.from_dict({"name": "m", "nodes": {
        "y": {"formula": "t + x"}, "t": {"family": "bernoulli", "formula": "x"}, "b": {}, "x": {}, "a": {}}})
    order = scm.order
    for n in scm.nodes:
        assert all(order.index(p) < order.index(n.name) for p in n.parents)
    # ties keep declaration order: b before x before a, roots before their children
    assert order == ("b", "x", "t", "y", "a")
    assert scm.parents("y") == ("x", "t")


def test_order_of_the_rich_model_respects_every_edge():
    scm = cw.SCM.from_dict(RICH)
    pos = {n: i for i, n in enumerate(scm.order)}
    for a, b in scm.graph.edges:
        assert pos[a] < pos[b]
    assert scm.latent == ("u",)
    assert "u" not in scm.observed and "clinic" in scm.observed
    assert scm.descendants(["educ"]) == {"treat", "visits", "wage", "score", "jobs"}


def test_interaction_star_expands_to_main_effects_and_product():
    f = parse_formula("y", "a*b")
    assert [t.label for t in f.terms] == ["a", "b", "a:b"]
    assert f.intercept and f.variables == {"a", "b"}
    f = parse_formula("y", "a:b + c")
    assert [t.label for t in f.terms] == ["a:b", "c"]
    scm = cw.SCM.from_dict({"name": "m", "nodes": {"a": {}, "b": {}, "y": {"formula": "a*b"}}})
    assert scm.parents("y") == ("a", "b")
    assert [t.variables for t in scm.node("y").parsed.terms] == [("a",), ("b",), ("a", "b")]


def test_intercept_can_be_dropped():
    assert not parse_formula("y", "0 + x").intercept
    assert not parse_formula("y", "x - 1").intercept
    root = parse_formula("y", None)
    assert root.intercept and root.terms == () and root.groups == ()


def test_group_terms_add_the_grouping_node_as_categorical():
    scm = cw.SCM.from_dict({"name": "m", "nodes": {
        "x": {}, "y": {"formula": "x + (1 | g)"}, "z": {"formula": "(x | h) + (1 | g)"}}})
    for grp in ("g", "h"):
        node = scm.node(grp)
        assert node.family == "categorical" and node.auto and node.formula is None
    assert scm.names[:2] == ("g", "h")  # declared before the nodes that use them
    assert set(scm.parents("y")) == {"x", "g"}
    assert set(scm.parents("z")) == {"x", "g", "h"}
    y = scm.node("y").parsed
    assert [g.label for g in y.groups] == ["1|g"] and [t.label for t in y.terms] == ["x"]
    z = scm.node("z").parsed
    assert {g.label for g in z.groups} >= {"x|h", "1|g"}
    assert set(cw.SCM.from_dict(scm.to_dict()).names) == set(scm.names)


def test_declared_grouping_node_is_used_as_declared():
    scm = cw.SCM.from_dict({"name": "m", "nodes": {
        "g": {"family": "categorical", "levels": ["a", "b"]}, "y": {"formula": "(1 | g)"}}})
    assert not scm.node("g").auto and scm.node("g").levels == ("a", "b")


def test_builder():
    scm = (cw.SCMBuilder("toy", description="a toy")
           .node("x")
           .node("t", "bernoulli", "x")
           .node("y", "normal", "t + x", priors={"b[t]": {"dist": "normal", "loc": 0, "scale": 0.5}})
           .build())
    assert isinstance(scm, cw.SCM)
    assert scm.name == "toy" and scm.description == "a toy"
    assert scm.order == ("x", "t", "y")
    assert scm.node("t").family == "bernoulli"
    assert scm.node("y").prior("b", "t") == Prior("normal", (("loc", 0.0), ("scale", 0.5)))
    assert scm == cw.SCM.from_dict(scm.to_dict())


def test_scm_and_nodes_are_frozen():
    scm = cw.SCM.from_dict(RICH)
    with pytest.raises(dataclasses.FrozenInstanceError):
        scm.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        scm.nodes[0].family = "poisson"
    assert isinstance(scm.nodes, tuple) and isinstance(scm.node("treat").priors, tuple)


def test_fit_settings_and_data_do_not_change_the_spec(monkeypatch):
    import causal_wm.backends.numpyro as backend

    def stop(plan, settings):
        raise RuntimeError("stop before sampling")

    monkeypatch.setattr(backend, "sample", stop)
    scm = cw.SCM.from_dict({"name": "m", "nodes": {"x": {}, "y": {"formula": "x"}}})
    before = scm.to_dict()
    with pytest.raises(cw.FitError):
        scm.fit(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [2.0, 1.0, 0.0]}))
    assert scm.to_dict() == before


def test_prior_overrides_and_defaults():
    scm = cw.SCM.from_dict(RICH)
    treat, wage, score = scm.node("treat"), scm.node("wage"), scm.node("score")
    # per-term override wins, other terms fall back to the family default (2.5 for bernoulli)
    assert treat.prior("b", "age:educ") == Prior("normal", (("loc", 0.0), ("scale", 0.5)))
    assert treat.prior("b", "age") == Prior("normal", (("loc", 0.0), ("scale", 2.5)))
    # a parameter-wide override applies to every term
    assert wage.prior("b", "treat") == wage.prior("b") == Prior("normal", (("loc", 0.0), ("scale", 2.0)))
    assert wage.prior("sigma") == Prior("exponential", (("rate", 2.0),))
    assert score.prior("nu") == Prior("gamma", (("concentration", 3.0), ("rate", 0.2)))
    # defaults
    assert score.prior("sigma") == Prior("halfnormal", (("scale", 1.0),))
    assert score.prior("intercept") == Prior("normal", (("loc", 0.0), ("scale", 1.5)))
    assert score.prior("b") == Prior("normal", (("loc", 0.0), ("scale", 1.0)))
    assert scm.node("jobs").prior("phi") == Prior("gamma", (("concentration", 2.0), ("rate", 0.1)))
    assert scm.node("visits").prior("sd", "1|clinic") == Prior("halfnormal", (("scale", 1.0),))


def test_prior_values_are_floats_and_positive_flag():
    p = Prior.from_dict({"dist": "gamma", "concentration": 2, "rate": 1}, where="x.nu")
    assert p.kwargs == {"concentration": 2.0, "rate": 1.0} and p.positive
    assert not Prior.from_dict({"dist": "normal", "loc": -3, "scale": 1}, where="b").positive
    assert Prior.from_dict(p, where="again") is p


def test_group_sd_prior_reaches_the_backend():
    import causal_wm.backends.numpyro as backend
    from causal_wm import sites
    from causal_wm.fitting import make_plan

    backend._jax()
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    scm = cw.SCM.from_dict({"name": "m", "nodes": {"y": {"formula": "(1 | g)", "priors": {
        "sd[1|g]": {"dist": "halfnormal", "scale": 0.1}}}}})
    df = pd.DataFrame({"g": ["a", "b", "c"] * 4, "y": np.linspace(0.0, 1.0, 12)})
    model = backend.make_model(make_plan(scm, df))
    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace()
    fn = tr[sites.group_sd("y", "g")]["fn"]
    got = float(fn.log_prob(jnp.array([1.0])))
    assert got == pytest.approx(float(dist.HalfNormal(0.1).log_prob(1.0)))


def test_library():
    assert "job_training" in cw.list_library("models")
    assert "job_training" in cw.list_library("studies")
    scm = cw.load_model("job_training")
    assert scm.name == "job_training"
    assert scm.source is not None and scm.source.endswith("job_training.yaml")
    assert dict(scm.data) == {"package": "causaldata", "table": "nsw_mixtape"}
    assert scm.parents("treat") == ()
    assert set(scm.parents("re78")) == {"treat", "age", "educ", "black", "hisp", "marr", "nodegree", "re74", "re75"}
    assert scm.node("treat").family == "bernoulli"
    assert scm.load_data().shape[0] == 445


def test_every_library_model_loads_and_round_trips():
    for name in cw.list_library("models"):
        scm = cw.load_model(name)
        assert cw.SCM.from_dict(scm.to_dict()).nodes == scm.nodes, name
        assert scm.description, f"model {name!r} needs a description"


@pytest.mark.parametrize(("nodes", "culprit"), [
    ({"unit": {}}, "'unit' is reserved"),
    ({"True": {}, "y": {"formula": "True"}}, "'True' is reserved"),
    ({"chain": {"latent": True}, "y": {"formula": "chain"}}, "latent node name 'chain' is reserved"),
    ({"draw": {}, "y": {"formula": "(1 | draw)"}}, "'draw' cannot group effects"),
    ({"x": {}, "y": {"formula": "x", "priors": {"b[x]]": {"dist": "normal", "loc": 5, "scale": 0.1}}}},
     "prior key 'b[x]]' is malformed"),
    ({"x": {"type": ["count"]}}, "'type' must be one of"),
])
def test_names_and_keys_that_would_break_later_are_refused_at_load(nodes, culprit):
    with pytest.raises(ModelSpecError, match=re.escape(culprit)):
        SCM.from_dict({"name": "m", "nodes": nodes})


def test_an_observed_node_may_be_named_chain_and_priors_may_be_written_1e3():
    scm = SCM.from_dict({"name": "m", "nodes": {
        "chain": {"family": "categorical"},
        "y": {"formula": "chain", "priors": {"sigma": {"dist": "halfnormal", "scale": "1e3"}}}}})
    assert scm.node("y").prior("sigma").params == (("scale", 1000.0),)


def test_load_model_says_what_it_takes():
    for bad in (None, {"name": "m"}):
        with pytest.raises(ModelSpecError, match="name of a model in the library or the path"):
            cw.load_model(bad)


def test_builder_refuses_a_node_twice_and_categorical_without_intercepts():
    b = cw.SCMBuilder("toy").node("x")
    with pytest.raises(ModelSpecError, match="added twice"):
        b.node("x", formula="")
    with pytest.raises(ModelSpecError, match="one intercept per level"):
        SCM.from_dict({"name": "m", "nodes": {"x": {}, "g": {"family": "categorical", "formula": "0 + x"}}})
