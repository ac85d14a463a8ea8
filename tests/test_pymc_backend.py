"""The PyMC backend: exact log-density equality with NumPyro, and the same answers from the
same model file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import causal_wm as cw
from causal_wm.fitting import make_plan
from tests.conftest import LG_MODEL, quiet_fit, simulate_lg
from tests.test_counterfactual_families import ALL_FAMILIES, simulate_all

pytest.importorskip("pymc", reason="the PyMC backend is an optional extra: pip install 'causal_wm[pymc]'")

HIER_LATENT = {
    "name": "hier_latent",
    "nodes": {
        "L": {"family": "normal", "latent": True},
        "x": {"family": "normal", "formula": "L"},
        "t": {"family": "bernoulli", "formula": "x + (1 | region)",
              "priors": {"b[x]": {"dist": "normal", "loc": 0.0, "scale": 0.5}}},
        "y": {"family": "normal", "formula": "t * x + L + (1 + x | region)"},
    },
}


def _hier_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    region = rng.choice(["n", "s", "e", "w"], size=n)
    L = rng.normal(size=n)
    x = L + rng.normal(size=n)
    t = (rng.uniform(size=n) < 0.5).astype(int)
    y = t * (1 + x) + L + rng.normal(size=n)
    return pd.DataFrame({"region": region, "x": x, "t": t, "y": y})


@pytest.mark.parametrize("spec, data", [(ALL_FAMILIES, simulate_all(150, 3)), (HIER_LATENT, _hier_data())],
                         ids=["every_family", "groups_interactions_latent"])
def test_log_density_equal_between_backends(spec, data):
    import jax
    import numpyro
    from numpyro.infer.util import log_density

    from causal_wm.backends import numpyro as npb
    from causal_wm.backends import pymc as pmb

    scm = cw.SCM.from_dict(spec)
    plan = make_plan(scm, data)
    model = npb.make_model(plan)
    for seed in range(3):
        tr = numpyro.handlers.trace(numpyro.handlers.seed(model, jax.random.PRNGKey(seed))).get_trace()
        params = {k: np.asarray(v["value"]) for k, v in tr.items()
                  if v["type"] == "sample" and not v["is_observed"]}
        lp_numpyro = float(log_density(model, (), {}, params)[0])
        lp_pymc = pmb.log_density(plan, params)
        assert lp_pymc == pytest.approx(lp_numpyro, rel=1e-5), (seed, lp_numpyro, lp_pymc)


def test_to_pymc_has_the_shared_names_and_dims():
    scm = cw.SCM.from_dict(HIER_LATENT)
    m = scm.to_pymc(_hier_data())
    names = {v.name for v in m.free_RVs} | {v.name for v in m.deterministics}
    assert {"y__b", "y__re__region", "y__sd__region", "t__b", "L", "x__bpos"} <= names
    assert m.named_vars_to_dims["y__b"] == ("y__term",)
    assert list(m.coords["y__term"]) == ["t", "x", "t:x", "L"]


@pytest.mark.slow  # a fit per backend (statistical; the log-density tests compare the backends by default)
def test_posteriors_and_effects_agree_between_backends():
    df, _ = simulate_lg(300, seed=8)
    scm = cw.SCM.from_dict(LG_MODEL)
    a = quiet_fit(scm, df, chains=2, draws=1000, warmup=500, seed=1)
    b = quiet_fit(scm, df, backend="pymc", chains=2, draws=1000, warmup=500, seed=1)
    assert set(a.idata.posterior.data_vars) == set(b.idata.posterior.data_vars)
    da, db = a.diagnostics().table, b.diagnostics().table
    for name in da.index:
        xa = a.idata.posterior
        var, _, sel = name.partition("[")
        va = xa[var].values.reshape(-1, *xa[var].shape[2:])
        vb = b.idata.posterior[var].values.reshape(-1, *xa[var].shape[2:])
        ma, mb = va.mean(0), vb.mean(0)
        combined = np.sqrt(da.loc[name, "mcse_mean"] ** 2 + db.loc[name, "mcse_mean"] ** 2)
        idx = () if not sel else (list(xa[var].coords[xa[var].dims[2]].values).index(sel.rstrip("]")),)
        assert abs(ma[idx] - mb[idx]) < 4 * combined + 1e-12, name
    ea = a.effect("y", do={"t": 1.0}, vs={"t": 0.0})
    eb = b.effect("y", do={"t": 1.0}, vs={"t": 0.0})
    assert abs(ea.mean() - eb.mean()) < 4 * np.hypot(ea.mcse(), eb.mcse())
    assert eb.interval(0.9)[0] == pytest.approx(ea.interval(0.9)[0], abs=0.1 * ea.sd())


# PyMC's mass-matrix adaptation can overflow for a step early in warm-up; it recovers on its own
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_engine_agrees_with_pm_do_on_the_same_posterior():
    """pm.do + pm.sample_posterior_predictive on our posterior gives the engine's simulate."""
    import pymc as pm

    df, _ = simulate_lg(300, seed=9)
    scm = cw.SCM.from_dict(LG_MODEL)
    post = quiet_fit(scm, df, backend="pymc", chains=2, draws=500, warmup=500, seed=2)
    model = scm.to_pymc(df)
    t0 = 0.5
    z_t = (t0 - post.plan.scales["t"].center) / post.plan.scales["t"].scale
    z_c = (df["c"].to_numpy() - post.plan.scales["c"].center) / post.plan.scales["c"].scale
    # the unit dimension is the data's; the intervened PyMC model regenerates m and y per unit.
    # c is fixed at each unit's observed value as well: sample_posterior_predictive redraws every
    # observed variable missing from the posterior group (c included), which would compare the
    # engine's average over these units with one over a freshly drawn population of c (that
    # comparison passed only by luck: PyMC's side sat 2-4 of its standard errors away).
    with pm.do(model, {"t": np.full(len(df), z_t), "c": z_c}):
        pp = pm.sample_posterior_predictive(post.idata, var_names=["m", "y"], random_seed=3, progressbar=False)
    y_pm = pp.posterior_predictive["y"].values * post.plan.scales["y"].scale + post.plan.scales["y"].center
    eff = post.effect("y", do={"t": t0}, vs={})
    # E[y | do(t=t0)] over the data's units: PyMC's predictive mean vs the engine's
    mean_pm = y_pm.mean()
    under = eff.under_do.mean()
    assert abs(mean_pm - under) < 4 * y_pm.std() / np.sqrt(y_pm.size) + 4 * eff.mcse() + 0.05 * eff.sd()


def test_nutpie_sampler_through_pymc(lg_fit):
    pytest.importorskip("nutpie", reason="nutpie is part of the [pymc] extra")
    scm, df, _, nuts = lg_fit
    post = quiet_fit(scm, df.iloc[:300], backend="pymc", sampler="nutpie", chains=2, draws=1000, warmup=500, seed=4)
    assert post.settings.sampler == "nutpie"
    # the same variables as NumPyro's posterior (nutpie also returned its unconstrained x__sigma_log__)
    assert set(post.idata.posterior.data_vars) == set(nuts.idata.posterior.data_vars)
    eff = post.effect("y", do={"t": 1.0}, vs={"t": 0.0})
    ref = nuts.effect("y", do={"t": 1.0}, vs={"t": 0.0})
    assert abs(eff.mean() - ref.mean()) < 4 * np.hypot(eff.sd(), ref.sd())


@pytest.mark.slow
def test_job_training_study_same_ate_under_both_backends(tmp_path):
    out = {}
    for backend in ("numpyro", "pymc"):
        study = cw.Study.load("job_training")
        folder = study.run(tmp_path / backend, backend=backend)  # the study's own 4 chains x 1000 draws
        import json

        out[backend] = json.loads((folder / "results.json").read_text())["queries"]["ate"]
    a, b = out["numpyro"], out["pymc"]
    print(f"job_training ATE numpyro {a['estimate']:.0f} (mcse {a['mcse']:.0f}), pymc {b['estimate']:.0f} "
          f"(mcse {b['mcse']:.0f})")
    assert abs(a["estimate"] - b["estimate"]) < 4 * np.hypot(a["mcse"], b["mcse"])


@pytest.mark.parametrize("text, safe", [
    ("import causal_wm\nfit()\n", False),                                   # spawning would rerun fit()
    ("def main():\n    fit()\n\nif __name__ == '__main__':\n    main()\n", True),
    ("if '__main__' == __name__:\n    fit()\n", True),
    ("def f():\n    if __name__ == '__main__':\n        pass\nfit()\n", False),  # not at the top level
])
def test_pymc_chains_are_spawned_only_where_the_script_is_guarded(tmp_path, monkeypatch, text, safe):
    """A plain script that fitted NumPyro, then PyMC with 2 chains, hung: the spawned workers re-ran it.
    Unguarded scripts now run PyMC's chains one after another in the process."""
    import sys
    import types

    from causal_wm.backends.pymc import spawn_is_safe

    script = tmp_path / "script.py"
    script.write_text(text)
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert spawn_is_safe() is safe
    del main.__file__  # an interactive session: nothing to rerun
    assert spawn_is_safe()
