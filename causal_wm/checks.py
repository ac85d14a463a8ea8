"""Checks of a fitted model: estimator triangulation, refutation, sensitivity and falsification.

- :func:`triangulate` puts DoWhy's classical estimators, chosen from the estimand that
  :func:`causal_wm.identify.identify` finds, beside the Bayesian posterior on the same data.
- :func:`refute` runs DoWhy refuters on the back-door linear-regression estimate.
- :func:`check` bundles the two (``Posterior.check``).
- :func:`sensitivity` refits the SCM with an added latent confounder of fixed strength
  (``Posterior.sensitivity``) and reports where the effect's interval first covers zero.
- :func:`falsify` tests the conditional independences the graph implies (local Markov).

DoWhy (Sharma & Kiciman 2020) logs and warns freely; every call into it here is silenced locally.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import asdict, dataclass

import networkx as nx
import numpy as np
import pandas as pd
from scipy import stats

from causal_wm.design import GAUSSIAN
from causal_wm.errors import ConvergenceWarning, IdentificationWarning, NotIdentifiable, QueryError

SENS = "U_sens"
N_BOOT = 100


@contextlib.contextmanager
def _quiet():
    """Silence DoWhy's logging and every warning for the block."""
    loggers = [logging.getLogger(n) for n in ("dowhy", "dowhy.causal_model", "dowhy.causal_estimator")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _frame(post) -> pd.DataFrame:
    """Observed columns of the fit's data, complete cases only; categorical nodes as categories.

    DoWhy's estimators and refuters, and the independence tests, are complete-case methods: rows
    that a fit imputed (``missing: impute``) are left out here, and ``attrs["dropped"]`` counts them
    so that the tables can say so.
    """
    scm = post.scm
    df = post.plan.frame[[c for c in scm.observed if c in post.plan.frame]].copy()
    complete = df.notna().all(axis=1).to_numpy()
    df = df[complete]
    for c in df:
        if scm.node(c).family == "categorical":
            df[c] = df[c].astype("category")
        elif df[c].dtype == bool:
            df[c] = df[c].astype(int)
    df = df.reset_index(drop=True)
    df.attrs["dropped"] = int((~complete).sum())
    return df


def _complete_case_note(df: pd.DataFrame) -> str:
    k = df.attrs.get("dropped", 0)
    return f"complete cases: {len(df)} rows ({k} with missing values left out)" if k else ""


def _is_binary(s: pd.Series) -> bool:
    return set(pd.unique(s.dropna())) <= {0, 1}


def _contrast(post, treatment: str, df: pd.DataFrame):
    """(do, vs, description) of the contrast every method estimates."""
    from causal_wm.interventions import shift

    if post.scm.node(treatment).family == "categorical":
        raise QueryError(f"triangulate: treatment {treatment!r} is categorical; use a binary or continuous one.")
    if _is_binary(df[treatment]):
        return {treatment: 1}, {treatment: 0}, f"do({treatment}=1) vs do({treatment}=0)"
    return {treatment: shift(1.0)}, None, f"do({treatment} + 1) vs no intervention (per unit of {treatment})"


def _dowhy_graph(scm) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(scm.graph.nodes)
    g.add_edges_from(scm.graph.edges)
    return g


def _bootstrap(fn, df: pd.DataFrame, prob: float, seed: int, n: int = N_BOOT) -> tuple[float, float]:
    """Percentile interval of ``fn`` over ``n`` row resamples drawn with a seeded generator."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(df), len(df))
        try:
            vals.append(float(fn(df.iloc[idx].reset_index(drop=True))))
        except Exception:  # a degenerate resample is skipped
            continue
    vals = np.asarray([v for v in vals if np.isfinite(v)])
    if len(vals) < n // 2:
        return np.nan, np.nan
    a = (1 - prob) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def _backdoor_methods(post, treatment, outcome, df, prob, seed):
    from dowhy import CausalModel

    graph = _dowhy_graph(post.scm)
    with _quiet():
        model = CausalModel(data=df, treatment=treatment, outcome=outcome, graph=graph)
        estimand = model.identify_effect(proceed_when_unidentifiable=False)
    methods = ["backdoor.linear_regression"]
    if _is_binary(df[treatment]):
        methods.append("backdoor.propensity_score_weighting")
    rows = []
    for m in methods:
        kw = {"method_params": {"weighting_scheme": "ips_weight"}} if "weighting" in m else {}

        def fn(d, m=m, kw=kw):
            with _quiet():
                mod = CausalModel(data=d, treatment=treatment, outcome=outcome, graph=graph)
                return mod.estimate_effect(estimand, method_name=m, treatment_value=1, control_value=0, **kw).value

        try:
            with _quiet():
                est = model.estimate_effect(estimand, method_name=m, treatment_value=1, control_value=0,
                                            confidence_intervals=m.endswith("linear_regression"), **kw)
                value = float(est.value)
                if m.endswith("linear_regression"):
                    ci = np.asarray(est.get_confidence_intervals(confidence_level=prob)).ravel()
                    lo, hi, how = float(ci[0]), float(ci[1]), "analytic (DoWhy)"
            if not m.endswith("linear_regression"):
                lo, hi = _bootstrap(fn, df, prob, seed)
                how = f"bootstrap ({N_BOOT}, seed {seed})"
        except Exception as exc:  # one failing estimator is reported, not fatal
            rows.append({"method": m, "estimate": np.nan, "lower": np.nan, "upper": np.nan,
                         "interval": "", "note": f"failed: {exc}"})
            continue
        rows.append({"method": m, "estimate": value, "lower": lo, "upper": hi, "interval": how,
                     "note": "adjusting for " + ", ".join(estimand.get_backdoor_variables() or ["nothing"])})
    return rows


def _residualise(df: pd.DataFrame, cols, controls) -> pd.DataFrame:
    """Each column in ``cols`` less its least-squares fit on ``controls`` (with an intercept)."""
    X = pd.get_dummies(df[list(controls)], drop_first=True, dtype=float) if controls else pd.DataFrame(index=df.index)
    X = np.column_stack([np.ones(len(df)), X.to_numpy(float)])
    out = {}
    for c in cols:
        y = df[c].to_numpy(float)
        beta, *_ = np.linalg.lstsq(X, y, rcond=None)
        out[c] = y - X @ beta
    return pd.DataFrame(out)


def _iv_controls(scm, treatment, outcome, ident) -> tuple[str, ...]:
    """Exogenous controls for 2SLS: the instruments' conditioning set plus observed parents of the
    treatment or outcome that are neither instruments, descendants of the treatment, nor
    descendants of a latent node."""
    bad = set(scm.descendants([treatment])) | {treatment, outcome} | set(ident.instruments)
    for lat in scm.latent:
        bad |= set(scm.descendants([lat]))
    cand = set(ident.instrument_conditioning)
    cand |= {p for p in set(scm.parents(treatment)) | set(scm.parents(outcome)) if not scm.node(p).latent}
    return tuple(v for v in scm.observed if v in cand and v not in bad)


def _iv_method(post, treatment, outcome, df, ident, prob, seed):
    """DoWhy's ``iv.instrumental_variable`` after partialling the exogenous controls out (Frisch-Waugh-
    Lovell): with one residualised instrument it computes Cov(y, z)/Cov(t, z), the 2SLS estimate."""
    from dowhy import CausalModel

    z = ident.instruments[0]
    controls = _iv_controls(post.scm, treatment, outcome, ident)
    g = nx.DiGraph([(z, treatment), (treatment, outcome), ("U_iv", treatment), ("U_iv", outcome)])
    m = "iv.instrumental_variable"

    def data(d):
        # without controls the columns go in as they are: DoWhy's Wald estimator for a binary
        # instrument compares z == 1 with z == 0, which a centred instrument no longer has
        return _residualise(d, [z, treatment, outcome], controls) if controls else d[[z, treatment, outcome]]

    def fn(d):
        with _quiet():
            mod = CausalModel(data=data(d), treatment=treatment, outcome=outcome, graph=g)
            return mod.estimate_effect(estimand, method_name=m, method_params={"iv_instrument_name": z}).value

    note = f"2SLS, instrument {z}" + (f", controls {', '.join(controls)}" if controls else "")
    if len(ident.instruments) > 1:  # (the estimand's text speaks of 2SLS with all of them)
        note += f" (the first of the instruments {list(ident.instruments)}: DoWhy's estimator takes one)"
    try:
        with _quiet():
            estimand = CausalModel(data=data(df), treatment=treatment, outcome=outcome,
                                   graph=g).identify_effect(proceed_when_unidentifiable=False)
        value = float(fn(df))
        if not np.isfinite(value):
            raise ValueError("the estimate is not finite (the instrument does not move the treatment?)")
        lo, hi = _bootstrap(fn, df, prob, seed)
    except Exception as exc:  # DoWhy's own failures are reported in the row, not raised
        return [{"method": m, "estimate": np.nan, "lower": np.nan, "upper": np.nan, "interval": "",
                 "note": f"{note}; failed: {exc}"}]
    return [{"method": m, "estimate": value, "lower": lo, "upper": hi,
             "interval": f"bootstrap ({N_BOOT}, seed {seed})", "note": note}]


def _frontdoor_method(post, treatment, outcome, df, prob, seed):
    from dowhy import CausalModel

    graph = _dowhy_graph(post.scm)
    m = "frontdoor.two_stage_regression"
    with _quiet():
        model = CausalModel(data=df, treatment=treatment, outcome=outcome, graph=graph)
        estimand = model.identify_effect(proceed_when_unidentifiable=False)

    def fn(d):
        with _quiet():
            mod = CausalModel(data=d, treatment=treatment, outcome=outcome, graph=graph)
            return mod.estimate_effect(estimand, method_name=m, treatment_value=1, control_value=0).value

    try:
        value = float(fn(df))
        lo, hi = _bootstrap(fn, df, prob, seed)
    except Exception as exc:
        return [{"method": m, "estimate": np.nan, "lower": np.nan, "upper": np.nan, "interval": "",
                 "note": f"failed: {exc}"}]
    return [{"method": m, "estimate": value, "lower": lo, "upper": hi,
             "interval": f"bootstrap ({N_BOOT}, seed {seed})", "note": "front-door"}]


def classical(scm, data: pd.DataFrame, outcome: str, treatment: str, prob: float = 0.9,
              seed: int = 0) -> pd.DataFrame:
    """DoWhy's estimates only (no fit needed): the rows :func:`triangulate` adds to the posterior.

    ``data`` holds the observed columns in original units. Returns method, estimate, lower,
    upper, interval, note; a graph that identifies nothing gives an empty table with a note.
    """
    from types import SimpleNamespace

    p = SimpleNamespace(scm=scm, plan=SimpleNamespace(frame=data))
    df = _frame(p)
    try:
        ident = scm.identify(treatment, outcome)
    except NotIdentifiable as exc:
        return pd.DataFrame([{"method": "none", "estimate": np.nan, "lower": np.nan, "upper": np.nan,
                              "interval": "", "note": f"not identified: {exc}"}])
    if ident.kind == "backdoor":
        rows = _backdoor_methods(p, treatment, outcome, df, prob, seed)
    elif ident.kind == "iv" and ident.instruments:
        rows = _iv_method(p, treatment, outcome, df, ident, prob, seed)
    elif ident.kind == "frontdoor":
        rows = _frontdoor_method(p, treatment, outcome, df, prob, seed)
    else:
        rows = [{"method": "none", "estimate": np.nan, "lower": np.nan, "upper": np.nan, "interval": "",
                 "note": f"no DoWhy estimator for a {ident.kind!r} estimand"}]
    return pd.DataFrame(rows, columns=["method", "estimate", "lower", "upper", "interval", "note"])


def triangulate(post, outcome: str, treatment: str, prob: float = 0.9, seed: int | None = None) -> pd.DataFrame:
    """Classical estimates (DoWhy) beside the Bayesian posterior, on the fit's own data.

    The estimators follow the estimand :func:`~causal_wm.identify.identify` finds: back-door ->
    ``backdoor.linear_regression`` (and ``backdoor.propensity_score_weighting`` for a binary
    treatment); instrumental variables -> ``iv.instrumental_variable`` as 2SLS after partialling
    out the exogenous controls; front-door -> ``frontdoor.two_stage_regression``. Latent nodes
    are left out of the data, so DoWhy treats them as unobserved.

    Every row estimates the same contrast (column ``contrast``): do(t=1) vs do(t=0) for a binary
    treatment, a one-unit shift of a continuous one (linear estimators read it as their slope).

    Returns
    -------
    DataFrame
        method, estimate, lower, upper (``prob`` interval), interval (how it was obtained:
        analytic, bootstrap with a seeded generator, or posterior), overlaps_bayes, contrast, note.
    """
    seed = post.seed if seed is None else int(seed)
    df = _frame(post)
    do, vs, desc = _contrast(post, treatment, df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IdentificationWarning)
        eff = post.effect(outcome, do=do, vs=vs)
    b_lo, b_hi = eff.interval(prob)
    rows = [{"method": "bayes (causal_wm)", "estimate": float(eff.mean()), "lower": float(b_lo),
             "upper": float(b_hi), "interval": "posterior (equal-tailed)", "note": f"posterior sd {eff.sd():.4g}"}]
    classic = classical(post.scm, df, outcome, treatment, prob=prob, seed=seed)
    if cc := _complete_case_note(df):
        classic["note"] = [f"{n}; {cc}" if n else cc for n in classic["note"]]
    rows += classic.to_dict("records")
    out = pd.DataFrame(rows)
    out["overlaps_bayes"] = [bool(lo <= b_hi and hi >= b_lo) if np.isfinite([lo, hi]).all() else False
                             for lo, hi in zip(out.lower, out.upper, strict=True)]
    out["contrast"] = desc
    return out[["method", "estimate", "lower", "upper", "overlaps_bayes", "interval", "contrast", "note"]]


# ------------------------------------------------------------------ refutation
def refute(post, outcome: str, treatment: str, num_simulations: int = 20, seed: int | None = None,
           alpha: float = 0.05) -> pd.DataFrame:
    """DoWhy refuters of the back-door linear-regression estimate.

    ``placebo_treatment_refuter`` (permuted treatment), ``random_common_cause`` (an added
    independent covariate) and ``data_subset_refuter`` (80% subsets), each with
    ``num_simulations`` runs and ``random_seed``. DoWhy's p-value is that of the original estimate
    under the distribution of the refuted estimates.

    Rule for ``passed``: the placebo passes when its mean effect is near zero, |new effect| <= 10%
    of |estimate| (DoWhy's p-value is shown but not used for it); the other two pass when
    the original estimate is consistent with the refuted ones (p >= ``alpha``; without a p-value,
    |new effect - estimate| <= 10% of |estimate|).
    """
    from dowhy import CausalModel

    seed = post.seed if seed is None else int(seed)
    df = _frame(post)
    refuters = {
        "placebo_treatment_refuter": {"placebo_type": "permute"},
        "random_common_cause": {},
        "data_subset_refuter": {"subset_fraction": 0.8},
    }
    cols = ["refuter", "estimate", "new_effect", "p_value", "passed", "note"]
    try:
        kind = post.scm.identify(treatment, outcome).kind
    except NotIdentifiable:
        kind = "none"
    if kind != "backdoor":  # the refuters perturb a back-door regression, which this graph does not license
        why = f"not run: the effect is identified by {kind}, and the refuters test a back-door regression" \
            if kind != "none" else "not run: the graph does not identify the effect"
        return pd.DataFrame([{"refuter": n, "estimate": np.nan, "new_effect": np.nan, "p_value": None,
                              "passed": None, "note": why} for n in refuters], columns=cols)
    graph = _dowhy_graph(post.scm)
    with _quiet():
        model = CausalModel(data=df, treatment=treatment, outcome=outcome, graph=graph)
        estimand = model.identify_effect(proceed_when_unidentifiable=True)
        est = model.estimate_effect(estimand, method_name="backdoor.linear_regression", treatment_value=1,
                                    control_value=0)
    rows = []
    for name, kw in refuters.items():
        try:
            with _quiet():
                r = model.refute_estimate(estimand, est, method_name=name, num_simulations=num_simulations,
                                          random_seed=seed, **kw)
        except Exception as exc:  # DoWhy's own failures are reported in the row, not raised
            rows.append({"refuter": name, "estimate": np.nan, "new_effect": np.nan, "p_value": None,
                         "passed": None, "note": f"failed to run: {exc}"})
            continue
        p = (getattr(r, "refutation_result", None) or {}).get("p_value")
        p = None if p is None else float(p)
        e, new = float(r.estimated_effect), float(np.ravel(r.new_effect)[0])
        if name == "placebo_treatment_refuter":
            passed = abs(new) <= 0.1 * abs(e)
        else:
            passed = p >= alpha if p is not None else abs(new - e) <= 0.1 * abs(e)
        rows.append({"refuter": name, "estimate": e, "new_effect": new, "p_value": p, "passed": bool(passed),
                     "note": ""})
    out = pd.DataFrame(rows, columns=cols)
    out.attrs["note"] = _complete_case_note(df)
    return out


@dataclass(frozen=True)
class CheckResult:
    """Triangulation and refutation tables of one effect."""

    treatment: str
    outcome: str
    triangulation: pd.DataFrame
    refutations: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """Both tables stacked: check (triangulation/refutation), name, estimate, interval, verdict."""
        tri = self.triangulation
        ran = np.isfinite(tri.estimate.to_numpy(dtype=float))  # an estimator that failed is not "apart"
        t = tri.assign(check="triangulation", name=tri.method,
                       verdict=np.where(ran, tri.overlaps_bayes.map({True: "overlaps", False: "apart"}), "failed"))
        r = self.refutations.assign(check="refutation", name=self.refutations.refuter, lower=np.nan, upper=np.nan,
                                    verdict=self.refutations.passed.map({True: "passed", False: "failed"})
                                    .fillna("not run"))
        cols = ["check", "name", "estimate", "lower", "upper", "verdict"]
        return pd.concat([t[cols], r.assign(estimate=r.new_effect)[cols]], ignore_index=True)


def check(post, outcome: str, treatment: str, prob: float = 0.9) -> CheckResult:
    """:func:`triangulate` and :func:`refute` for one effect."""
    return CheckResult(treatment, outcome, triangulate(post, outcome, treatment, prob=prob),
                       refute(post, outcome, treatment))


# ------------------------------------------------------------------ sensitivity
def confounded_scm(scm, treatment: str, outcome: str, strength: float):
    """The SCM with a latent root ``U_sens`` loading ``strength`` (fixed by a normal(s, 0.01) prior)
    on the treatment and the outcome, on the internal standardised scale."""
    from causal_wm.spec import SCM

    for v in (treatment, outcome):
        if scm.node(v).family == "categorical":
            raise QueryError(f"sensitivity: {v!r} is categorical; a single loading cannot be fixed for it.")
    d = scm.to_dict()
    nodes = {SENS: {"family": "normal", "latent": True, "description": "sensitivity confounder"}}
    if any(scm.node(v).family not in GAUSSIAN for v in (treatment, outcome)):
        # integrating U out would take quadrature over a non-Gaussian child, which costs more per
        # gradient than sampling U per unit; with its loadings pinned there is no funnel to avoid
        nodes[SENS]["marginalize"] = False
    for name, nd in d["nodes"].items():
        nd = dict(nd)
        if name in (treatment, outcome):
            nd["formula"] = f"{nd['formula']} + {SENS}" if nd.get("formula") else SENS
            nd["priors"] = {**nd.get("priors", {}),
                            f"b[{SENS}]": {"dist": "normal", "loc": float(strength), "scale": 0.01}}
        nodes[name] = nd
    d["nodes"] = nodes
    d["name"] = f"{scm.name}_sens"
    return SCM.from_dict(d)


def sensitivity(post, outcome: str, treatment: str, strengths=(0.0, 0.25, 0.5, 0.75), prob: float = 0.9,
                **fit_overrides):
    """Bayesian sensitivity to an unmeasured confounder of given strength.

    For each strength s the SCM is refitted with a latent root ``U_sens`` ~ N(0, 1) added as a
    parent of the treatment and the outcome, its loadings fixed at s by normal(s, 0.01) priors.
    Loadings are on the internal scale: SDs of a continuous node (the logit for a binary one)
    per SD of U. A continuous treatment with no other source of variance needs s < 1 (U cannot
    explain more than its whole variance). The fit uses ``post.settings`` with ``fit_overrides``
    (e.g. ``chains=2, draws=300, warmup=300``). The engine warns that the effect is not
    identified once ``U_sens`` is in the graph; that warning is expected, caught and recorded.

    Returns
    -------
    DataFrame
        strength, estimate, lower, upper, covers_zero, identification_warning, convergence_warning;
        ``df.attrs["breakdown"]`` is the smallest strength whose interval covers zero (None if none),
        also repeated in a ``breakdown`` column.
    """
    df = post.plan.frame[[c for c in post.scm.observed if c in post.plan.frame]]
    do, vs, desc = _contrast(post, treatment, df)
    s = asdict(post.settings)
    backend = s.pop("backend")
    s.update(fit_overrides)
    rows = []
    for strength in strengths:
        scm = confounded_scm(post.scm, treatment, outcome, strength)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            warnings.simplefilter("always", IdentificationWarning)
            p = scm.fit(df, backend=backend, **s)
            if not p.ok:
                p.warn_if_not_ok()
            eff = p.effect(outcome, do=do, vs=vs)
        lo, hi = eff.interval(prob)
        ident = [str(w.message) for w in caught if issubclass(w.category, IdentificationWarning)]
        conv = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
        rows.append({"strength": float(strength), "estimate": float(eff.mean()), "lower": float(lo),
                     "upper": float(hi), "covers_zero": bool(lo <= 0 <= hi),
                     "identification_warning": "; ".join(ident), "convergence_warning": "; ".join(conv)})
    out = pd.DataFrame(rows)
    cover = out.loc[out.covers_zero, "strength"]
    breakdown = float(cover.min()) if len(cover) else None
    out["breakdown"] = breakdown
    out.attrs["breakdown"] = breakdown
    out.attrs["contrast"] = desc
    return out


# ------------------------------------------------------------------ falsification
def _numeric(df: pd.DataFrame, cols) -> np.ndarray:
    cols = list(cols)
    if not cols:
        return np.empty((len(df), 0))
    return pd.get_dummies(df[cols], drop_first=True, dtype=float).to_numpy(float)


def partial_corr_test(df: pd.DataFrame, x: str, y: str, given=()) -> float:
    """p-value of x ⟂ y | given by partial correlation and Fisher's z; a categorical x or y is
    tested as its indicator columns with a Bonferroni correction."""
    Z = np.column_stack([np.ones(len(df)), _numeric(df, given)])
    X, Y = _numeric(df, [x]), _numeric(df, [y])

    def resid(v):
        beta, *_ = np.linalg.lstsq(Z, v, rcond=None)
        return v - Z @ beta

    ps = []
    for i in range(X.shape[1]):
        for j in range(Y.shape[1]):
            rx, ry = resid(X[:, i]), resid(Y[:, j])
            den = np.sqrt((rx @ rx) * (ry @ ry))
            r = 0.0 if den == 0 else float(np.clip(rx @ ry / den, -0.999999, 0.999999))
            dof = len(df) - (Z.shape[1] - 1) - 3
            zstat = np.sqrt(max(dof, 1)) * np.arctanh(r)
            ps.append(2 * stats.norm.sf(abs(zstat)))
    return float(min(1.0, min(ps) * len(ps)))


def falsify(post, alpha: float = 0.05) -> pd.DataFrame:
    """Test the conditional independences the graph implies among observed nodes.

    For each pair of observed nodes not joined by an edge, with j the later one in topological
    order, the local Markov statement x ⟂ j | observed parents of j is tested where the full
    graph (latent nodes included) d-separates them given that set (with latent confounders some
    statements are not implied and are skipped). The test is a partial correlation with Fisher's
    z (linear-Gaussian; a reasonable screen for binary data). This is the idea of DoWhy's
    ``gcm.falsify_graph`` (Eulig et al. 2023) without its permutation baseline.

    Returns
    -------
    DataFrame
        x, y, given, p_value, rejected (p < alpha); ``df.attrs["summary"]`` is a one-line summary.
    """
    from causal_wm.identify import _separated

    scm = post.scm
    df = _frame(post)
    g = scm.graph
    obs = [v for v in scm.order if not scm.node(v).latent and v in df]
    rows = []
    for j_i, j in enumerate(obs):
        pa = tuple(p for p in scm.parents(j) if not scm.node(p).latent)
        for x in obs[:j_i]:
            if g.has_edge(x, j) or g.has_edge(j, x):
                continue
            if not _separated(g, [x], [j], pa):
                continue
            p = partial_corr_test(df, x, j, pa)
            rows.append({"x": x, "y": j, "given": ", ".join(pa), "p_value": p, "rejected": bool(p < alpha)})
    out = pd.DataFrame(rows, columns=["x", "y", "given", "p_value", "rejected"])
    k = int(out.rejected.sum()) if len(out) else 0
    cc = _complete_case_note(df)
    out.attrs["summary"] = (f"{k} of {len(out)} implied independences rejected at alpha={alpha} "
                            f"(expected by chance: {alpha * len(out):.1f})" + (f"; {cc}" if cc else ""))
    return out
