"""Queries on posterior draws: effect, simulate, counterfactual and posterior predictive checks.

Each query decides, per node, where its value comes from in each world (data, the unit's latent
draws, fresh noise, or abducted noise), compiles the interventions, and runs one kernel: for
large counterfactual and effect queries the model-specialised one of :mod:`causal_wm.fused`
(``engine="auto"``, the default), otherwise the generic one of :mod:`causal_wm.kernels`; both
compute the same numbers. Queries never refit.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import numpy as np
import pandas as pd

from causal_wm import fused, pool
from causal_wm import kernels as K
from causal_wm.data import encode
from causal_wm.errors import DataError, QueryError, suggest
from causal_wm.interventions import check_names, compile_do, is_level
from causal_wm.program import original_matrix
from causal_wm.results import CounterfactualResult, EffectResult, MediationResult, SimulationResult
from causal_wm.seeding import rng, stream

MAX_OUTPUT_BYTES = 4 * 2**30


def _sources(post, intervened, mode: str) -> np.ndarray:
    """Per node: DATA/LATENT outside the intervention's reach, FRESH or ABDUCT inside it."""
    scm, names = post.scm, post.program.names
    down = scm.descendants(intervened)
    src = np.empty(len(names), dtype=np.int64)
    for i, n in enumerate(names):
        if n in down:
            src[i] = K.FRESH if mode == "fresh" else K.ABDUCT
        else:
            src[i] = K.LATENT if n in post.program.drawn else K.DATA  # latent or imputed: per-unit draws
    return src


def _select_units(post, given) -> tuple[np.ndarray, str]:
    """Row positions of the fitting data selected by ``given`` and a description."""
    frame = post.plan.frame
    n = len(frame)
    if given is None:
        return np.arange(n), ""
    if isinstance(given, Mapping):
        check_names(post.scm, given, "given")
        mask = np.ones(n, dtype=bool)
        parts = []
        for k, v in given.items():
            if post.scm.node(k).latent:
                raise QueryError(f"given: {k!r} is latent, so units cannot be selected by it.")
            if isinstance(v, Mapping):
                raise QueryError(f"given: {k!r} takes a value or a list of values, got a mapping {v!r}.")
            many = pd.api.types.is_list_like(v)  # lists, arrays, Series, Index, sets, pandas arrays
            vals = list(v) if many else [v]
            mask &= matches(post.scm, post.plan.scales, frame, k, vals)
            parts.append(f"{k}={_plain(vals) if many else _plain([v])[0]!r}")
        desc = ", ".join(parts)
    else:
        if isinstance(given, pd.Series):  # by label, as pandas aligns (rows dropped for missing data too)
            given = _by_label(given, pd.Index(post.plan.index), "given=<boolean Series>")
        mask = np.asarray(given)
        if mask.dtype != bool or mask.shape != (n,):
            raise QueryError(
                f"given must be a mapping of node -> value(s) or a boolean mask of length {n}, "
                f"got {type(given).__name__}."
            )
        desc = f"{int(mask.sum())} selected units"
    if not mask.any():
        raise QueryError(f"given ({desc}) selects no units of the data; check the values.")
    return np.flatnonzero(mask), desc


def _plain(vals: list) -> list:
    return [x.item() if isinstance(x, np.generic) else x for x in vals]


def matches(scm, scales, frame: pd.DataFrame, k: str, vals: list) -> np.ndarray:
    """Which rows of ``frame`` have one of ``vals`` for node ``k``: labels of a node with categories
    (each must be one of them), numbers of any other node (compared as numbers, whatever type the
    column holds: booleans, nullable integers, numbers stored as text categories)."""
    levels = scales[k].levels
    if levels is not None:
        for x in vals:
            if not is_level(x, levels):
                from causal_wm.data import yaml_bool_hint

                raise QueryError(f"given: {x!r} is not a category of {k!r}; its categories are {list(levels)}."
                                 + yaml_bool_hint([x]))
        return frame[k].isin(vals).to_numpy(dtype=bool)
    nums = []
    for x in vals:
        try:
            if isinstance(x, str):
                raise TypeError
            nums.append(float(x))
        except (TypeError, ValueError):
            raise QueryError(f"given: {k!r} holds numbers, and {x!r} is not a number.") from None
    return np.isin(node_values(scm, scales, frame, k), nums)


def effect(post, outcome: str, do: Mapping, vs: Mapping | None = None, given=None, level=None,
           seed: int | None = None, engine: str | None = None) -> EffectResult:
    """Population (or conditional) average effect; see :meth:`Posterior.effect`.

    ``engine``: "auto" (default: the fused kernel, :mod:`causal_wm.fused`, where it applies),
    "fused" or "generic" (the interpreting kernel of :mod:`causal_wm.kernels`).
    """
    scm = post.scm
    if not isinstance(do, Mapping) or not do:
        raise QueryError("do must be a non-empty mapping of node -> intervention, e.g. {'treat': 1}.")
    if vs is not None and not isinstance(vs, Mapping):
        raise QueryError(f"vs must be a mapping of node -> intervention (or None), got {type(vs).__name__}.")
    vs = dict(vs or {})
    units, desc = _select_units(post, given)
    out = _contrast(post, outcome, do, vs, units, (), level, seed, engine)
    warnings = list(post.warnings_for_results())
    if outcome not in scm.descendants(set(do) | set(vs)) and outcome not in set(do) | set(vs):
        warnings.append(f"{outcome!r} is not downstream of the intervened nodes, so the effect is zero.")
    else:
        warnings.extend(_identification_warning(scm, set(do) | set(vs), outcome))
    return _result(post, outcome, do, vs, out[:, 0], out[:, 1], len(units), desc, seed, warnings)


def _identification_warning(scm, treatment, outcome) -> list[str]:
    """Warn (and say in the result) when the graph does not identify the effect non-parametrically.

    Without latent nodes every effect is identified by adjusting for the treatment's parents, so
    only models with latent nodes are checked.
    """
    import warnings as _w

    from causal_wm.errors import IdentificationWarning, NotIdentifiable
    from causal_wm.identify import identify

    if not scm.latent:
        return []
    hidden = sorted(t for t in treatment if scm.node(t).latent)
    if hidden or scm.node(outcome).latent:
        # an unobserved variable has no scale or sign of its own in the data: the model gives it one
        msg = (f"the effect {'of latent ' + str(hidden) if hidden else 'on the latent node ' + repr(outcome)} is "
               "not identified by the data: a latent node's scale and sign are set by the model (a standard "
               "normal factor), so the answer rests on the model's parametric assumptions alone.")
    else:
        try:
            ident = identify(scm, sorted(treatment), outcome)
        except NotIdentifiable as exc:
            ident, why = None, str(exc)
        if ident is not None and ident.is_identified:
            return []
        if ident is not None:  # an instrument: identified only with a further (parametric) assumption
            why = (f"only by the instrument {', '.join(ident.instruments)} ({ident.estimand}), which assumes an "
                   "effect linear and the same for every unit, or for binary instrument and treatment "
                   "monotonicity and then gives the compliers' effect")
        msg = (f"the effect of {sorted(treatment)} on {outcome!r} is not identified by the graph "
               f"nonparametrically ({why}); the answer rests on the model's parametric assumptions.")
    _w.warn(msg, IdentificationWarning, stacklevel=4)
    return [msg]


def _result(post, outcome, do, vs, under_do, under_vs, n_units, desc, seed, warnings) -> EffectResult:
    C, D = post.shape
    bad = ~(np.isfinite(under_do) & np.isfinite(under_vs))
    if bad.any():  # e.g. a value far outside the data pushed a log link past floating point
        raise QueryError(
            f"the expected {outcome!r} under do={dict(do)!r} / vs={dict(vs)!r} overflowed (not finite) in "
            f"{int(bad.sum())} of {bad.size} posterior draws; intervene with values nearer the data's range."
        )
    return EffectResult(
        outcome=outcome, do=dict(do), vs=dict(vs), chains=(under_do - under_vs).reshape(C, D),
        under_do=under_do.reshape(C, D), under_vs=under_vs.reshape(C, D), n_units=n_units,
        given=desc, seed=post.seed if seed is None else seed, diagnostics=post.diagnostics().to_dict(),
        warnings=tuple(warnings),
    )


def _contrast(post, outcome, do, vs, units, from_vs, level, seed, engine=None) -> np.ndarray:
    """Per draw, mean E[outcome] under ``do`` (column 0) and under ``vs`` (column 1).

    Nodes in ``from_vs`` keep, in the ``do`` world, the values they took in the ``vs`` world.
    """
    scm, prog = post.scm, post.program
    check_names(scm, [outcome], "outcome")
    check_names(scm, do, "do")
    check_names(scm, vs, "vs")
    level_code = _level_code(post, outcome, level)
    ancestors = nx.ancestors(scm.graph, outcome) | {outcome}
    needed = np.array([n in ancestors for n in prog.names])
    # Both worlds regenerate everything downstream of either intervention, with shared noise
    # (common random numbers): it cancels on linear-Gaussian paths; on others one draw per unit
    # leaves a Monte Carlo error of order sd / sqrt(units) per posterior draw (docs/queries.md).
    src = _sources(post, set(do) | set(vs), "fresh")
    _check_finite_mean(post, outcome, [n for k, n in enumerate(prog.names) if needed[k] and src[k] == K.FRESH])
    worlds = []
    index = pd.Index(post.plan.index)[units]
    do, vs = _aligned(do, index), _aligned(vs, index, "vs")
    for iv in (do, vs):
        natural = _natural(post, iv, src, lambda n: node_values(post.scm, post.plan.scales, post.plan.frame, n)[units])
        comp = compile_do(post, iv, len(units), natural)
        _check_soft(post, iv, src, lambda n: node_values(post.scm, post.plan.scales, post.plan.frame, n)[units])
        ivu = _expand_units(comp.per_unit, units, prog.data.shape[0])
        worlds.append((src, comp.kind, comp.value, ivu, comp.tables))
    src_a = src.copy()
    for name in from_vs:
        src_a[prog.index(name)] = K.OTHER
    tables = _merge_tables(worlds)
    key = stream(post.seed if seed is None else seed, "effect")
    walks = _walks_counts(post, (src, src_a), K.FRESH, needed, skip=outcome)
    fast = fused.use_fused(engine, True, "effect", prog.n_draws * len(units), walks)
    run = fused.effect if fast else K.effect_kernel
    return run(
        prog.arrays, prog.theta, prog.data, prog.lat, units.astype(np.int64), key,
        src_a, worlds[0][1], worlds[0][2], worlds[0][3],
        worlds[1][0], worlds[1][1], worlds[1][2], worlds[1][3],
        tables, needed, prog.index(outcome), level_code,
    )


UNBOUNDED_FAMILIES = frozenset({"normal", "student_t", "lognormal", "poisson", "negative_binomial"})


def _check_finite_mean(post, outcome: str, redrawn) -> None:
    """Refuse an effect whose outcome mean is infinite under the model: an exp-link outcome (lognormal,
    counts) of a student_t node drawn afresh, through nodes that do not bound it. E[exp(b T)] is
    infinite for any b != 0 when T has polynomial tails, so any number the engine returned would be
    an artefact of its draws (it was: 527 to 1.8e20 by seed, with an 'epistemic' interval)."""
    scm = post.scm
    if scm.node(outcome).family not in EXP_LINK_FAMILIES:
        return
    free = scm.graph.subgraph([n for n in redrawn if scm.node(n).family in UNBOUNDED_FAMILIES] + [outcome])
    heavy = sorted(n for n in redrawn if n != outcome and scm.node(n).family == "student_t"
                   and n in free and nx.has_path(free, n, outcome))
    if heavy:
        raise QueryError(
            f"E[{outcome}] is infinite under this model and intervention: {outcome!r} is "
            f"{scm.node(outcome).family} (its mean is exp of its parents), and the student_t "
            f"{'nodes' if len(heavy) > 1 else 'node'} {heavy}, redrawn by the intervention, "
            f"{'reach' if len(heavy) > 1 else 'reaches'} it through "
            "unbounded nodes; exp of a heavy-tailed variable has no mean. Model them as normal, ask for the "
            "effect on another outcome, or use simulate/counterfactual, whose draws (and medians) exist."
        )


def _walks_counts(post, srcs, kind: int, needed, skip: str | None = None) -> bool:
    """Whether a query recomputes a needed count node by walking its CDF (``kind``: abducted or
    drawn afresh) in any of the worlds ``srcs`` (``skip``: an effect's outcome, of which only the mean
    is needed)."""
    return any(needed[k] and name != skip and post.scm.node(name).family in ("poisson", "negative_binomial")
               and any(src[k] == kind for src in srcs) for k, name in enumerate(post.program.names))


def _level_code(post, outcome, level) -> int:
    if post.scm.node(outcome).family != "categorical":
        if level is not None:
            raise QueryError(
                f"level={level!r}: outcome {outcome!r} is {post.scm.node(outcome).family}, not categorical; "
                "level= picks a category of a categorical outcome. Leave it out."
            )
        return 0
    levels = post.plan.scales[outcome].levels
    if level is None:
        raise QueryError(
            f"outcome {outcome!r} is categorical: pass level= one of {list(levels)} to get the "
            "effect on the probability of that category."
        )
    if not is_level(level, levels):
        raise QueryError(f"level={level!r} is not a category of {outcome!r}; its categories are {list(levels)}."
                         f"{suggest(str(level), map(str, levels))}")
    return levels.index(level)


def mediation(post, treatment: str, mediator, outcome: str, treat_value=1, control_value=0, given=None,
              seed: int | None = None, engine: str | None = None, level=None) -> MediationResult:
    """Natural direct, natural indirect and total effects; see :meth:`Posterior.mediation`."""
    scm = post.scm
    if not isinstance(mediator, (str, list, tuple)) or not mediator:
        raise QueryError(f"mediation: mediator must be a node name or a non-empty list of them, got {mediator!r}.")
    mediators = [mediator] if isinstance(mediator, str) else list(mediator)
    check_names(scm, [treatment, outcome, *mediators], "mediation")
    check_mediation_paths(scm, treatment, mediators, outcome)
    units, desc = _select_units(post, given)
    do, vs = {treatment: treat_value}, {treatment: control_value}
    total = _contrast(post, outcome, do, vs, units, (), level, seed, engine)  # Y(t1, M(t1)) vs Y(t0, M(t0))
    direct = _contrast(post, outcome, do, vs, units, mediators, level, seed, engine)  # Y(t1, M(t0)) vs Y(t0, M(t0))
    warnings = list(post.warnings_for_results()) + _identification_warning(scm, {treatment}, outcome)
    split = warnings + _natural_effects_warning(scm, treatment, mediators, outcome)
    args = (len(units), desc, seed)
    return MediationResult(
        treatment=treatment, mediators=tuple(mediators), outcome=outcome,
        total=_result(post, outcome, do, vs, total[:, 0], total[:, 1], *args, warnings),
        direct=_result(post, outcome, do, vs, direct[:, 0], direct[:, 1], *args, split),
        indirect=_result(post, outcome, do, {treatment: treat_value, **{m: "M(t0)" for m in mediators}},
                         total[:, 0], direct[:, 0], *args, split),
    )


def _natural_effects_warning(scm, treatment: str, mediators, outcome: str) -> list[str]:
    """Warn where the graph leaves natural direct and indirect effects unidentified even with the
    total effect identified: a mediator-outcome confounder that is latent, or that the treatment
    affects (a "recanting witness", Avin, Shpitser & Pearl 2005). The split then rests on the model's
    structural equations (cross-world assumptions), not on the data."""
    import warnings as _w

    from causal_wm.errors import IdentificationWarning

    g = scm.graph
    meds = set(mediators)
    off = g.subgraph(set(g.nodes) - meds)  # paths to the outcome that avoid the mediators
    no_t = g.subgraph(set(g.nodes) - {treatment})  # into a mediator other than through the treatment
    into_m = set().union(*(nx.ancestors(no_t, m) for m in meds)) - meds
    confounders = sorted(c for c in into_m if c != outcome and c in off and outcome in off
                         and nx.has_path(off, c, outcome))
    induced = [c for c in confounders if treatment in nx.ancestors(g, c)]
    # a latent node confounds where it reaches a mediator and the outcome through latent nodes only
    # (a path through an observed node is blocked by the model's adjustment for it)
    hidden = g.subgraph([n for n in g.nodes if scm.node(n).latent])
    latent = []
    for u in sorted(n for n in hidden.nodes if treatment not in nx.ancestors(g, n)):
        via = {u} | nx.descendants(hidden, u)
        reach = {c for v in via for c in g.successors(v)}
        if reach & meds and outcome in reach:
            latent.append(u)
    why = []
    if latent:
        why.append(f"the latent {latent} confound{'s' * (len(latent) == 1)} the mediator and the outcome")
    if induced:
        why.append(f"{induced}, affected by the treatment, confound{'s' * (len(induced) == 1)} the mediator and "
                   "the outcome")
    if not why:
        return []
    msg = (f"natural direct and indirect effects of {treatment!r} through {sorted(meds)} on {outcome!r} are not "
           f"identified by the data: {' and '.join(why)}. The split rests on the model's structural equations "
           "(its cross-world assumptions); the total effect does not.")
    _w.warn(msg, IdentificationWarning, stacklevel=4)
    return [msg]


def check_mediation_paths(scm, treatment: str, mediators, outcome: str, what: str = "mediation") -> None:
    """Each mediator on a causal path treatment -> mediator -> outcome, and the outcome downstream of
    the treatment (checked by :func:`mediation`, and by a study before it fits); ``what`` opens the
    message."""
    down = scm.descendants([treatment])
    for m in mediators:
        if m not in down or outcome not in scm.descendants([m]):
            raise QueryError(
                f"{what}: {m!r} must lie on a causal path {treatment!r} -> {m!r} -> {outcome!r}; it does not in "
                f"model {scm.name!r}. Name a mediator downstream of the treatment and upstream of the outcome."
            )
    if outcome not in down:
        raise QueryError(f"{what}: {outcome!r} is not downstream of {treatment!r}, so every effect is zero by "
                         "assumption; check the names.")


def node_values(scm, scales, frame: pd.DataFrame, name: str) -> np.ndarray:
    """Node ``name``'s values in ``frame`` as the engine reads them: labels for a node with
    categories, numbers otherwise (booleans, nullable integers and numbers stored as text categories
    included), as callables, shifts and selections must see them."""
    from causal_wm.data import _column

    if scales[name].levels is not None:
        return frame[name].to_numpy(dtype=object)
    return _column(frame, name, scm.node(name).family, scm.name, allow_missing=True)


def _natural(post, iv, src, column) -> dict:
    """Natural values (original units) of callable-intervened nodes, read by ``column(name)``."""
    out = {}
    for name in iv:
        if callable(iv[name]) and not hasattr(iv[name], "ppf"):
            k = post.program.index(name)
            if src[k] != K.DATA:
                raise QueryError(
                    f"do({name}=<callable>): {name!r} is latent, imputed or downstream of another intervened "
                    "node, so its natural value is not known before the query runs; use shift(), "
                    "scale() or a value."
                )
            out[name] = column(name)
    return out


def _check_soft(post, iv, src, column) -> None:
    """Shifted or scaled data must stay in the node's support (e.g. a lognormal stays positive)."""
    from causal_wm.interventions import Scale, Shift, _internal_values

    for name, v in iv.items():
        if isinstance(v, Shift | Scale) and src[post.program.index(name)] == K.DATA:
            x = column(name).astype(float)
            with np.errstate(over="ignore", invalid="ignore"):  # judged here
                moved = x + v.delta if isinstance(v, Shift) else x * v.factor
            if not np.all(np.isfinite(moved)):
                raise QueryError(
                    f"do({name}={v!r}) takes {name!r} past the largest representable number (from "
                    f"{x[~np.isfinite(moved)][:3].tolist()}); use a smaller amount."
                )
            _internal_values(name, post.scm.node(name), post.plan.scales[name], moved)


def _expand_units(per_unit, units, n_rows) -> np.ndarray:
    """Per-unit intervention values indexed by data row (the kernels index by row)."""
    if per_unit.shape[0] == 1:
        return per_unit
    full = np.zeros((n_rows, per_unit.shape[1]))
    full[units] = per_unit
    return full


def _merge_tables(worlds):
    """Both worlds index one stack of stochastic-policy tables."""
    a_tab, b_tab = worlds[0][4], worlds[1][4]
    if not np.any(worlds[1][1] == K.TABLE):
        return a_tab
    n_a = a_tab.shape[0] if np.any(worlds[0][1] == K.TABLE) else 0
    val_b = worlds[1][2]
    for k in np.flatnonzero(worlds[1][1] == K.TABLE):
        q = int(val_b[k])
        val_b[k] = q + n_a if q >= 0 else q - n_a
    return np.concatenate([a_tab[:n_a], b_tab]) if n_a else b_tab


def simulate(post, do: Mapping | None = None, n: int = 1000, seed: int | None = None) -> SimulationResult:
    """Predictive samples of ``n`` new units; see :meth:`Posterior.simulate`."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise QueryError(f"n must be a positive integer, got {n!r}.")
    prog = post.program
    if int(n) * len(prog.names) * 8 > MAX_OUTPUT_BYTES:  # refused before allocating, not a MemoryError
        raise QueryError(f"n={n} new units x {len(prog.names)} nodes would take "
                         f"{int(n) * len(prog.names) * 8 / 2**30:.1f} GiB; simulate fewer units (in batches).")
    seed_used = post.seed if seed is None else seed
    S = prog.n_draws
    draws = np.resize(rng(seed_used, "simulate-draws").permutation(S), n).astype(np.int64)
    src = np.full(len(prog.names), K.FRESH, dtype=np.int64)
    comp = compile_do(post, do, n)
    key = stream(seed_used, "simulate")
    outputs = np.arange(len(prog.names), dtype=np.int64)
    needed = np.ones(len(prog.names), dtype=bool)
    data = np.full((n, len(prog.names)), np.nan)
    units = np.arange(n, dtype=np.int64)
    ivk, ivu = comp.kind.copy(), comp.per_unit
    if comp.callables:
        # two passes: the natural values of callable-intervened nodes, then the intervened world
        # with the same counter-based noise, so everything upstream is identical in both.
        first = ivk.copy()
        for name in comp.callables:
            first[prog.index(name)] = K.NONE
        out = np.empty((1, n, len(outputs)))
        K.units_kernel(prog.arrays, prog.theta, data, data, prog.lat, units, draws, True, key, src, src, first,
                       comp.value, ivu, comp.tables, needed, outputs, out)
        ivu = ivu.copy()
        for name, fn in comp.callables.items():
            k = prog.index(name)
            ivu[:, k] = _apply_callable(post, name, fn, _labels(post, name, out[0, :, k]))  # as effect: by label
    out = np.empty((1, n, len(outputs)))
    K.units_kernel(prog.arrays, prog.theta, data, data, prog.lat, units, draws, True, key, src, src, ivk,
                   comp.value, ivu, comp.tables, needed, outputs, out)
    values = {name: _labels(post, name, out[0, :, i]) for i, name in enumerate(prog.names)}
    _check_finite("simulate", {n: v for n, v in values.items() if post.plan.scales[n].levels is None}, do or {})
    for name in do or {}:  # a shift can take a drawn count below zero (effects check the units' own values)
        below = values[name] < 0 if post.scm.node(name).family in ("poisson", "negative_binomial") else None
        if below is not None and below.any():
            raise QueryError(
                f"simulate: do({name}=...) takes {int(below.sum())} of {below.size} simulated counts of {name!r} "
                f"below zero, which a count cannot be; shift by less, or pass a callable that keeps counts at "
                f"zero or more (e.g. lambda v: np.maximum(v - 2, 0))."
            )
    _exact_set_values(post, do or {}, values)
    levels = {n: tuple(post.plan.scales[n].levels) for n in prog.names if post.plan.scales[n].levels is not None}
    return SimulationResult(values, draws, dict(do or {}), seed_used, post.diagnostics().to_dict(), levels,
                            posterior_shape=post.shape, warnings=post.warnings_for_results())


# families whose values pass through exp (a log link): where an intervention can overflow them
EXP_LINK_FAMILIES = frozenset({"lognormal", "poisson", "negative_binomial"})


def _check_finite(query: str, values: dict, do) -> None:
    """A QueryError where a query's values are not finite (e.g. a value far outside the data pushed
    a log link past floating point, or a shift took a lognormal node below zero), as effects refuse
    an overflowed expectation: such numbers are never returned silently."""
    for name, v in values.items():
        ok = np.isfinite(v)
        if not ok.all():
            raise QueryError(
                f"{query}: {name!r} under do={dict(do)!r} is not finite (overflow, or a value outside the "
                f"node's support) in {int((~ok).sum())} of {ok.size} values; intervene with values nearer "
                "the data's range."
            )


def _apply_callable(post, name, fn, natural):
    from causal_wm.interventions import _internal_values, call_intervention

    res = call_intervention(name, fn, natural)
    return _internal_values(name, post.scm.node(name), post.plan.scales[name], res)


def _labels(post, name, arr):
    levels = post.plan.scales[name].levels
    if levels is None:
        return arr
    return np.asarray(levels, dtype=object)[arr.astype(np.int64)]


def _aligned(do: Mapping, index: pd.Index, arg: str = "do") -> dict:
    """``do`` with each pandas Series of per-unit values put in the order of the units' ``index``,
    by label, as pandas aligns; a Series that does not hold every unit's label is an error, never a
    silent positional match.

    Examples
    --------
    >>> _aligned({"x": pd.Series([1.0, 2.0], index=["b", "a"])}, pd.Index(["a", "b"]))["x"].tolist()
    [2.0, 1.0]
    """
    return {name: _by_label(v, index, f"{arg}({name}=<Series>)") if isinstance(v, pd.Series) else v
            for name, v in do.items()}


def _by_label(v: pd.Series, index: pd.Index, what: str) -> pd.Series:
    """``v`` in the order of ``index``, by label; an error where a label is missing or repeated."""
    if v.index.equals(index):
        return v
    missing = index[~index.isin(v.index)]
    if not v.index.is_unique or len(missing):
        why = (f"{len(missing)} of the units' labels are missing from it, e.g. {missing[:3].tolist()}"
               if len(missing) else "an index with repeated labels cannot be aligned")
        raise QueryError(
            f"{what}: its index does not match the units' index ({why}); pass a Series indexed like the "
            "units, or an array in the units' order."
        )
    return v.reindex(index)


def counterfactual(post, units: pd.DataFrame, do: Mapping, draws: int | None = None,
                   summary_only: bool = False, prob: float = 0.9, seed: int | None = None,
                   engine: str | None = None) -> CounterfactualResult:
    """Unit-level counterfactuals; see :meth:`Posterior.counterfactual`. ``engine`` as in :func:`effect`."""
    scm, prog = post.scm, post.program
    if not isinstance(do, Mapping) or not do:
        raise QueryError("do must be a non-empty mapping of node -> intervention, e.g. {'treat': 0}.")
    check_names(scm, do, "do")
    if not isinstance(units, pd.DataFrame):
        raise QueryError(f"units must be a DataFrame of observed units, got {type(units).__name__}.")
    if len(units) == 0:
        raise QueryError("units is empty; pass at least one observed unit.")
    if not isinstance(summary_only, (bool, np.bool_)):
        raise QueryError(f"summary_only must be True or False, got {summary_only!r}.")
    do = _aligned(do, units.index)
    data, orig, rows, units = _unit_rows(post, units)  # (latent nodes: units as fitted)
    src_f = np.array([K.LATENT if n in prog.drawn else K.DATA for n in prog.names], dtype=np.int64)
    src_c = _sources(post, set(do), "abduct")
    from causal_wm.results import _prob

    prob = _prob(prob)
    natural = _natural(post, do, src_c, lambda n: node_values(post.scm, post.plan.scales, units, n))
    comp = compile_do(post, do, len(rows), natural)
    _check_soft(post, do, src_c, lambda n: node_values(post.scm, post.plan.scales, units, n))
    ivu = _expand_units(comp.per_unit, rows, data.shape[0])
    affected = set(do) | scm.descendants(set(do))
    order = [n for n in prog.names if n in affected]  # the result's nodes
    # nodes set to given numbers are the same in every draw: reported, not computed S times
    fixed = _fixed_values(post, do, len(rows))
    outputs = np.array([prog.index(n) for n in order if n not in fixed], dtype=np.int64)
    S = prog.n_draws
    seed_used = post.seed if seed is None else seed
    if draws is None:
        draw_idx = np.arange(S, dtype=np.int64)
    else:
        if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or not 1 <= draws <= S:
            raise QueryError(f"draws must be an integer in [1, {S}], got {draws!r}.")
        draw_idx = np.sort(rng(seed_used, "counterfactual-draws").choice(S, draws, replace=False)).astype(np.int64)
    needed = np.ones(len(prog.names), dtype=bool)
    key = stream(seed_used, "counterfactual")
    factual = units[[n for n in scm.observed if n in units.columns]].copy()
    # nodes reported by label (categorical, or binary with named levels): summarised per level
    labelled = {prog.names[k]: tuple(post.plan.scales[prog.names[k]].levels) for k in outputs
                if post.plan.scales[prog.names[k]].levels is not None}
    common = dict(do=dict(do), seed=seed_used, diagnostics=post.diagnostics().to_dict(), prob=prob,
                  levels=labelled, warnings=post.warnings_for_results())
    fast = fused.use_fused(engine, fused.covers_crossed(src_f), "counterfactual", len(draw_idx) * len(rows),
                           _walks_counts(post, (src_c,), K.ABDUCT, needed))

    def result(computed: dict):
        _check_finite("counterfactual", {n: v[..., 0] if summary_only else v for n, v in computed.items()
                                         if scm.node(n).family in EXP_LINK_FAMILIES}, do)
        for name, x in fixed.items():  # (every node set to numbers is here: exactly those numbers)
            computed[name] = (np.stack([x, np.zeros_like(x), x, x], axis=-1) if summary_only
                              else np.broadcast_to(x, (len(draw_idx), len(x))))
        computed = {n: computed[n] for n in order}
        if summary_only:
            return CounterfactualResult({}, factual, summaries=computed, **common)
        return CounterfactualResult(computed, factual, **common)

    def every_draw(outs, rows):  # (outputs, draws, units)
        if fast:
            return fused.counterfactual_draws(prog.arrays, prog.theta, data, orig, prog.lat, rows, draw_idx, key,
                                              src_f, src_c, comp.kind, comp.value, ivu, comp.tables, needed, outs)
        out = pool.empty((len(draw_idx), len(rows), len(outs)))
        K.units_kernel(prog.arrays, prog.theta, data, orig, prog.lat, rows, draw_idx, False, key, src_f, src_c,
                       comp.kind, comp.value, ivu, comp.tables, needed, outs, out)
        return out.transpose(2, 0, 1)

    if not len(outputs):
        return result({})
    if summary_only:
        plain = np.array([k for k in outputs if prog.names[k] not in labelled], dtype=np.int64)
        computed = _level_summaries(every_draw, {n: (prog.index(n), lv) for n, lv in labelled.items()}, rows,
                                    len(draw_idx), prob)
        if not len(plain):
            return result(computed)
        lo_q, hi_q = (1 - prob) / 2, (1 + prob) / 2
        if fast:
            out = fused.counterfactual_summary(prog.arrays, prog.theta, data, orig, prog.lat, rows, draw_idx, key,
                                               src_f, src_c, comp.kind, comp.value, ivu, comp.tables, needed, plain,
                                               lo_q, hi_q)
        else:
            out = np.empty((len(rows), len(plain), 4))
            K.units_summary_kernel(prog.arrays, prog.theta, data, orig, prog.lat, rows, draw_idx, key, src_f, src_c,
                                   comp.kind, comp.value, ivu, comp.tables, needed, plain, lo_q, hi_q, out)
        return result(computed | {prog.names[k]: out[:, i, :] for i, k in enumerate(plain)})
    nbytes = len(draw_idx) * len(rows) * len(outputs) * 8
    if nbytes > MAX_OUTPUT_BYTES:
        raise QueryError(
            f"keeping every draw would take {nbytes / 2**30:.1f} GiB ({len(draw_idx)} draws x {len(rows)} "
            f"units x {len(outputs)} nodes); pass summary_only=True, fewer units, or draws=<n>."
        )
    # fused: (outputs, draws, units), each node's block contiguous; generic: views into the kernel's
    # one (draws, units, outputs) buffer (no per-node copy: peak memory is the result's own size)
    out = every_draw(outputs, rows)
    return result({prog.names[k]: _labels(post, prog.names[k], out[i]) for i, k in enumerate(outputs)})


# summary_only for nodes reported by label: the draws of this many bytes at a time
LEVEL_CHUNK_BYTES = 1 << 27


def _level_summaries(every_draw, nodes: dict, rows, n_draws: int, prob: float) -> dict:
    """Per unit and level of each node of ``nodes`` (name -> (output index, levels)): the (mean,
    SD, lower, upper) over the draws of "the node takes this level", shaped (units, levels, 4),
    with the rules :meth:`CounterfactualResult.summary` applies to every draw. The draws are
    computed for a bounded number of units at a time (:data:`LEVEL_CHUNK_BYTES`)."""
    if not nodes:
        return {}
    outs = np.array([k for k, _ in nodes.values()], dtype=np.int64)
    res = {name: np.empty((len(rows), len(levels), 4)) for name, (_, levels) in nodes.items()}
    step = max(1, LEVEL_CHUNK_BYTES // (8 * n_draws * len(outs)))
    for u0 in range(0, len(rows), step):
        codes = every_draw(outs, rows[u0:u0 + step])  # (outputs, draws, units)
        for i, (name, (_, levels)) in enumerate(nodes.items()):
            for j in range(len(levels)):
                hit = (codes[i] == j).astype(float)
                part = res[name][u0:u0 + hit.shape[1], j]
                part[:, 0], part[:, 1] = hit.mean(axis=0), hit.std(axis=0)
                part[:, 2], part[:, 3] = np.quantile(hit, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return res


def _fixed_values(post, do, n_units: int) -> dict:
    """Per unit, the value of each node that ``do`` sets to given numbers (one number, or per-unit
    numbers; not shifts, scalings, callables or distributions) and that is reported as a number (no
    named levels). Such a node takes that value in every draw (effectiveness), so the result holds
    it as a read-only view of shape (draws, units) of these values.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> from causal_wm import shift
    >>> post = NS(plan=NS(scales={n: NS(levels=None) for n in "txy"}))  # what it reads of a posterior
    >>> {k: v.tolist() for k, v in _fixed_values(post, {"t": 1, "x": [0.5, 2.0], "y": shift(1.0)}, 2).items()}
    {'t': [1.0, 1.0], 'x': [0.5, 2.0]}
    """
    fixed = {}
    for name, v in do.items():
        if post.plan.scales[name].levels is not None:
            continue
        if isinstance(v, (bool, int, float, np.number, np.bool_)):
            fixed[name] = np.full(n_units, float(v))
        elif isinstance(v, (list, tuple, np.ndarray)) or hasattr(v, "to_numpy"):
            fixed[name] = np.asarray(v, dtype=float).reshape(-1)  # validated by compile_do
    return fixed


def _exact_set_values(post, do, values) -> None:
    """Report a continuous node set to a value (or per-unit values) as exactly the value given
    (simulate; counterfactuals return such nodes as views of the given numbers, ``_fixed_values``).

    The kernels carry it on the internal scale, and ``(x - c) / s * s + c`` can differ from ``x``
    in the last bit; effectiveness (``do(X=x)`` gives ``X = x``) should hold exactly.
    """
    for name, v in do.items():
        if name not in values or not post.scm.node(name).fam.standardise:
            continue
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
            x = np.float64(v)
        elif isinstance(v, (list, tuple, np.ndarray)) or hasattr(v, "to_numpy"):
            x = np.asarray(v, dtype=float).reshape(-1)
        else:  # shifts, scalings, callables and policies: computed values
            continue
        values[name][...] = x


def _unit_rows(post, units: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """The data matrices (internal, original) the kernel reads for ``units``, their rows, and the
    units' observed values (for a model with latent nodes or imputed values: the fitted rows)."""
    scm, prog = post.scm, post.program
    if scm.latent or prog.imputed:
        fitted = pd.Index(post.plan.index)
        pos = fitted.get_indexer(units.index) if fitted.is_unique else np.full(len(units), -1)
        if (pos < 0).any():
            what = (f"latent nodes {list(scm.latent)}" if scm.latent else "") + (" and " if scm.latent and
                                                                             prog.imputed else "")
            what += f"imputed values of {list(prog.imputed)}" if prog.imputed else ""
            if not fitted.is_unique:
                twice = _plain([fitted[fitted.duplicated()][0]])[0]
                raise QueryError(
                    f"model {scm.name!r} has {what}, known only for the fitted units, and the fitting data's "
                    f"index repeats labels (e.g. {twice!r}), so units cannot be matched to their rows: fit with a "
                    "unique index (e.g. df.reset_index(drop=True)) and pass its rows."
                )
            raise QueryError(
                f"model {scm.name!r} has {what}, whose values are only known for "
                "the fitted units: pass rows of the fitting data (with their original index)."
            )
        return prog.data, prog.orig, pos.astype(np.int64), _as_fitted(post, units, pos)
    missing = [n for n in scm.observed if n not in units.columns]
    if missing:
        raise DataError(
            f"column{'s' * (len(missing) > 1)} {missing} {'are' if len(missing) > 1 else 'is'} missing from units"
            f"{suggest(missing[0], map(str, units.columns))}; a counterfactual abducts every observed node of each "
            f"unit, so units need a value of each ({list(scm.observed)})."
        )
    enc = encode(scm, post.plan.scales, units)
    data = np.full((len(units), len(prog.names)), np.nan)
    for name, v in enc.items():
        data[:, prog.index(name)] = v
    orig = original_matrix(scm, units, enc, prog.names)
    return data, orig, np.arange(len(units), dtype=np.int64), units


def _as_fitted(post, units: pd.DataFrame, pos: np.ndarray) -> pd.DataFrame:
    """The fitting data's rows ``pos`` (labelled like ``units``), after checking that every value
    ``units`` gives for an observed node is the fitted one: a model with latent nodes or imputed
    values answers for the fitted units as fitted (their latent draws belong to those values), so a
    changed value would be silently ignored."""
    fitted = post.plan.frame.iloc[pos].set_axis(units.index)
    for name in fitted.columns.intersection(units.columns):
        given, had = units[name].to_numpy(), fitted[name].to_numpy()
        both_na = pd.isna(given) & pd.isna(had)
        if given.dtype.kind in "fiub" and had.dtype.kind in "fiub":
            same = np.isclose(given.astype(float), had.astype(float), rtol=1e-12, atol=0.0) | both_na
        else:
            same = np.array([bool(a == b) for a, b in zip(given, had, strict=True)]) | both_na
        if not same.all():
            bad = np.flatnonzero(~same)[:3]
            raise QueryError(
                f"units: column {name!r} differs from the fitting data in {int((~same).sum())} rows, e.g. unit "
                f"{units.index[bad[0]]!r}: given {given[bad[0]]!r}, fitted {had[bad[0]]!r}. Model "
                f"{post.scm.name!r} has latent nodes or imputed values, known only for the fitted units as "
                f"fitted: pass those rows unchanged, and put the values you want to change in do= (e.g. "
                f"do={{{name!r}: <per-unit values>}})."
            )
    return fitted


def replicate(post, draws: int = 200, seed: int | None = None) -> pd.DataFrame:
    """Posterior predictive check per observed node; see :meth:`Posterior.ppc`."""
    scm, prog = post.scm, post.program
    seed_used = post.seed if seed is None else seed
    S = prog.n_draws
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise QueryError(f"draws must be a positive integer, got {draws!r}.")
    draws = min(int(draws), S)
    draw_idx = np.sort(rng(seed_used, "ppc-draws").choice(S, draws, replace=False)).astype(np.int64)
    key = stream(seed_used, "ppc")
    src_f = np.array([K.LATENT if n in prog.drawn else K.DATA for n in prog.names], dtype=np.int64)
    rows = np.arange(prog.data.shape[0], dtype=np.int64)
    no_iv = np.zeros(len(prog.names), dtype=np.int64)
    needed = np.ones(len(prog.names), dtype=bool)
    out_rows = []
    for name in scm.observed:
        k = prog.index(name)
        src_c = src_f.copy()
        src_c[k] = K.FRESH
        out = np.empty((draws, len(rows), 1))
        K.units_kernel(prog.arrays, prog.theta, prog.data, prog.orig, prog.lat, rows, draw_idx, False, key,
                       src_f, src_c, no_iv, np.zeros(len(prog.names)), np.zeros((1, len(prog.names))), np.zeros((1, 2)),
                       needed, np.array([k], dtype=np.int64), out)
        seen = ~np.isnan(post.plan.values[name])  # imputed values are not data: compare the observed rows
        rep = out[:, seen, 0]
        obs = post.plan.frame[name][seen]
        if scm.node(name).family == "categorical":
            obs_codes = post.plan.values[name][seen]
            stat_obs = [float((obs_codes == 0).mean()), float(obs_codes.std())]
            stat_rep = [(rep == 0).mean(axis=1), rep.std(axis=1)]
        else:
            o = obs.to_numpy(dtype=float)
            stat_obs = [float(o.mean()), float(o.std())]
            stat_rep = [rep.mean(axis=1), rep.std(axis=1)]
        out_rows.append({
            "node": name,
            "observed_mean": stat_obs[0], "replicated_mean": float(stat_rep[0].mean()),
            "p_mean": float((stat_rep[0] >= stat_obs[0]).mean()),
            "observed_sd": stat_obs[1], "replicated_sd": float(stat_rep[1].mean()),
            "p_sd": float((stat_rep[1] >= stat_obs[1]).mean()),
        })
    from types import SimpleNamespace

    from causal_wm.results import _recorded

    fit = SimpleNamespace(diagnostics=post.diagnostics().to_dict(), warnings=post.warnings_for_results(),
                          seed=seed_used)
    return _recorded(pd.DataFrame(out_rows).set_index("node"), fit)  # the fit's verdict travels with it
