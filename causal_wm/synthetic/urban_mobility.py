"""A synthetic city with known truth: transport policies, commuting, congestion, emissions and health.

Households live in districts. Two district-level policies, a transit investment (a new rapid line
with bus lanes) and road pricing (a congestion charge cordon), change how much households commute
by car; car use and pricing set the congestion a household meets, car use and congestion its
commuting emissions, and emissions its respiratory health. Dense districts are more likely to get
either policy, and density also raises congestion and respiratory illness directly, so a plain
comparison of districts with and without a policy confounds the policy with density. An unobserved
neighbourhood factor (the advantage of the household's street: housing condition, walkability,
local services) lowers car use and respiratory illness; what the data show of it are two proxies,
household income and the green cover around the home, which do not act on anything themselves.

Structural equations (household ``i`` in district ``d``; ``e`` are independent standard normals,
``T``, ``P`` the policies)::

    density_d     = 8 + 2.5 e                                  (thousand residents per km², per district)
    T_d           ~ Bernoulli(logistic(0.9 (density_d - 8)))
    P_d           ~ Bernoulli(logistic(-0.5 + 0.9 (density_d - 8)))
    U_i           = e                                          (neighbourhood advantage, unobserved)
    income_i      = 42 + 1.5 (density - 8) + 6 U + 6 e         (k€ per year)
    green_space_i = 30 - 2 (density - 8) + 8 U + 6 e           (% green cover within 300 m of home)
    car_share_i   = 60 - 12 T - 8 P - 6 T P - 3 (density - 8) - 5 U + a_car_d + 7 e
                                                               (% of commute trips by car)
    congestion_i  = 6 + 0.1 car_share + 0.8 (density - 8) - 2.5 P + a_cong_d + 1.5 e
                                                               (minutes of delay per commute trip)
    emissions_i   = 5 + 0.6 car_share + 1.5 congestion + 4 e   (g NOx per week from the commute)
    respiratory_i = 8 + 0.08 (emissions - 50) + 1.0 (density - 8) - 2 U + a_resp_d + 2 e
                                                               (respiratory symptom days per person-year)

with district effects ``a_car_d ~ N(0, 3²)``, ``a_cong_d ~ N(0, 1)``, ``a_resp_d ~ N(0, 0.5²)``.
Every node is the household's own: what households share (their district's traffic and air) enters
through the district-level density, policies and district effects, not through one household's car
trips slowing another's (a unit-level SCM has no such spillovers).

The truth: :func:`true_effect` reruns the equations with the policies (or a node) set by ``do``
and by ``vs`` on the same households with the same noise, and averages the difference. Below the
policies every mechanism is linear with additive noise, so the noise cancels in the difference and
this equals the noise-integrated average effect over the data's households that
:meth:`causal_wm.Posterior.effect` estimates, with no Monte Carlo error.

Examples
--------
>>> df = simulate_city(n_districts=4, households_per_district=3, seed=1)
>>> df.shape, list(df.columns[:4])
((12, 10), ['district', 'density', 'transit', 'pricing'])
>>> round(true_effect("car_share", {"transit": 1, "pricing": 1}, {"transit": 0, "pricing": 0},
...                   n_districts=4, households_per_district=3, seed=1), 10)
-26.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from causal_wm.errors import QueryError

# the table shipped as {package: causal_wm, table: urban_mobility}
SHIPPED = {"n_districts": 40, "households_per_district": 25, "seed": 7}

POLICIES = ("transit", "pricing")
SHIFTABLE = ("car_share", "congestion", "emissions")
COLUMNS = ("district", "density", "transit", "pricing", "income", "green_space", "car_share", "congestion",
           "emissions", "respiratory")

# The planning questions of studies/urban_mobility.yaml: (name, outcome, do, vs).
NONE = {"transit": 0, "pricing": 0}
QUESTIONS = (
    ("transit_on_car_share", "car_share", {"transit": 1}, {"transit": 0}),
    ("pricing_on_congestion", "congestion", {"pricing": 1}, {"pricing": 0}),
    ("package_on_emissions", "emissions", {"transit": 1, "pricing": 1}, NONE),
    ("transit_only_on_respiratory", "respiratory", {"transit": 1, "pricing": 0}, NONE),
    ("pricing_only_on_respiratory", "respiratory", {"transit": 0, "pricing": 1}, NONE),
    ("package_on_respiratory", "respiratory", {"transit": 1, "pricing": 1}, NONE),
    ("car_share_cut_on_respiratory", "respiratory", {"car_share": {"shift": -10}}, {}),
)


@dataclass(frozen=True)
class CityParams:
    """Coefficients of the structural equations (see the module docstring for their meaning)."""

    density_mean: float = 8.0
    density_sd: float = 2.5
    transit_logit: tuple[float, float] = (0.0, 0.9)     # intercept, per unit of density - 8
    pricing_logit: tuple[float, float] = (-0.5, 0.9)
    income: tuple[float, float, float, float] = (42.0, 1.5, 6.0, 6.0)   # const, density, U, noise SD
    green_space: tuple[float, float, float, float] = (30.0, -2.0, 8.0, 6.0)   # const, density, U, noise SD
    car_const: float = 60.0
    car_transit: float = -12.0
    car_pricing: float = -8.0
    car_both: float = -6.0      # extra cut when both policies are in place (pricing bites when transit exists)
    car_density: float = -3.0
    car_u: float = -5.0
    car_sd: float = 7.0
    car_district_sd: float = 3.0
    congestion: tuple[float, float, float, float] = (6.0, 0.1, 0.8, -2.5)   # const, car_share, density, pricing
    congestion_sd: float = 1.5
    congestion_district_sd: float = 1.0
    emissions: tuple[float, float, float] = (5.0, 0.6, 1.5)   # const, car_share, congestion
    emissions_sd: float = 4.0
    respiratory: tuple[float, float, float, float] = (8.0, 0.08, 1.0, -2.0)   # const, emissions - 50, density, U
    respiratory_sd: float = 2.0
    respiratory_district_sd: float = 0.5


PARAMS = CityParams()


def _exogenous(n_districts: int, households_per_district: int, seed: int) -> dict:
    """Every random draw of the city, in a fixed order that does not depend on any intervention."""
    for name, v, low in (("n_districts", n_districts, 2), ("households_per_district", households_per_district, 1),
                         ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise QueryError(f"simulate_city: {name} must be an integer >= {low}, got {v!r}.")
    rng = np.random.default_rng(seed)
    D, H = int(n_districts), int(households_per_district)
    district = {k: rng.standard_normal(D) for k in ("density", "car", "congestion", "respiratory")}
    district |= {k: rng.random(D) for k in POLICIES}
    n = D * H
    unit = {k: rng.standard_normal(n)
            for k in ("u", "income", "car", "congestion", "emissions", "respiratory", "green_space")}
    return {"D": D, "H": H, "district": district, "unit": unit}


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def _check_do(do: Mapping | None) -> dict:
    do = dict(do or {})
    for k, v in do.items():
        if k in POLICIES:
            if isinstance(v, bool) or v not in (0, 1):
                raise QueryError(f"do[{k!r}]: a policy is 0 or 1, got {v!r}.")
        elif k in SHIFTABLE:
            ok = isinstance(v, Mapping) and set(v) == {"shift"} and isinstance(v["shift"], (int, float))
            ok = ok or (not isinstance(v, (bool, Mapping)) and isinstance(v, (int, float)))
            if not ok:
                raise QueryError(f"do[{k!r}]: expected a number or {{'shift': d}}, got {v!r}.")
        else:
            raise QueryError(f"do: {k!r} cannot be intervened on in the city; use one of "
                             f"{list(POLICIES + SHIFTABLE)}.")
    return do


def _set(name: str, value: np.ndarray, do: Mapping) -> np.ndarray:
    """A node's value after the intervention on it, if any (hard value or shift of its own value)."""
    if name not in do:
        return value
    v = do[name]
    if isinstance(v, Mapping):
        return value + float(v["shift"])
    return np.full_like(value, float(v), dtype=float)


def _solve(ex: dict, do: Mapping, p: CityParams) -> dict:
    """Run the structural equations on the exogenous draws ``ex`` under ``do``."""
    D, H, dz, uz = ex["D"], ex["H"], ex["district"], ex["unit"]
    density_d = p.density_mean + p.density_sd * dz["density"]
    dc = density_d - p.density_mean
    pol = {
        "transit": (dz["transit"] < _logistic(p.transit_logit[0] + p.transit_logit[1] * dc)).astype(float),
        "pricing": (dz["pricing"] < _logistic(p.pricing_logit[0] + p.pricing_logit[1] * dc)).astype(float),
    }
    g = np.repeat(np.arange(D), H)  # district of each household
    dens = np.repeat(dc, H)
    T, P = (_set(k, pol[k][g], do) for k in POLICIES)
    u = uz["u"]
    i0, i_dens, i_u, i_sd = p.income
    income = i0 + i_dens * dens + i_u * u + i_sd * uz["income"]
    g0, g_dens, g_u, g_sd = p.green_space
    green = g0 + g_dens * dens + g_u * u + g_sd * uz["green_space"]
    car = (p.car_const + p.car_transit * T + p.car_pricing * P + p.car_both * T * P + p.car_density * dens
           + p.car_u * u + p.car_district_sd * dz["car"][g] + p.car_sd * uz["car"])
    car = _set("car_share", car, do)
    c0, c_car, c_dens, c_pr = p.congestion
    cong = (c0 + c_car * car + c_dens * dens + c_pr * P + p.congestion_district_sd * dz["congestion"][g]
            + p.congestion_sd * uz["congestion"])
    cong = _set("congestion", cong, do)
    e0, e_car, e_cong = p.emissions
    em = _set("emissions", e0 + e_car * car + e_cong * cong + p.emissions_sd * uz["emissions"], do)
    r0, r_em, r_dens, r_u = p.respiratory
    resp = (r0 + r_em * (em - 50.0) + r_dens * dens + r_u * u
            + p.respiratory_district_sd * dz["respiratory"][g] + p.respiratory_sd * uz["respiratory"])
    return {"district": np.array([f"d{k + 1:02d}" for k in g]), "density": np.repeat(density_d, H),
            "transit": T, "pricing": P, "income": income, "green_space": green, "car_share": car,
            "congestion": cong, "emissions": em, "respiratory": resp, "neighbourhood": u}


def simulate_city(n_districts: int = 40, households_per_district: int = 25, seed: int = 0,
                  do: Mapping | None = None, include_latent: bool = False,
                  params: CityParams = PARAMS) -> pd.DataFrame:
    """Simulate the city: one row per household.

    Parameters
    ----------
    n_districts, households_per_district : int
        Size of the city.
    seed : int
        Seed of the one generator every draw comes from (in a fixed order), so the same seed gives
        the same households and noise under any ``do``.
    do : mapping, optional
        Interventions applied to every household: ``transit`` / ``pricing`` set to 0 or 1, or
        ``car_share`` / ``congestion`` / ``emissions`` set to a number or shifted (``{"shift": d}``).
    include_latent : bool
        Also return the unobserved ``neighbourhood`` factor (for checks; a model never sees it).

    Returns
    -------
    DataFrame
        ``district`` (label ``d01``...), ``density``, ``transit``, ``pricing`` (0/1 integers),
        ``income``, ``green_space``, ``car_share``, ``congestion``, ``emissions``, ``respiratory``.

    Examples
    --------
    >>> a = simulate_city(3, 2, seed=5)
    >>> b = simulate_city(3, 2, seed=5, do={"transit": 0})
    >>> bool((a.income == b.income).all()), bool((b.transit == 0).all())
    (True, True)
    """
    v = _solve(_exogenous(n_districts, households_per_district, seed), _check_do(do), params)
    df = pd.DataFrame({k: v[k] for k in COLUMNS})
    df["transit"] = df["transit"].astype(int)
    df["pricing"] = df["pricing"].astype(int)
    if include_latent:
        df["neighbourhood"] = v["neighbourhood"]
    return df


def true_effect(outcome: str, do: Mapping, vs: Mapping | None = None, n_districts: int = 40,
                households_per_district: int = 25, seed: int = 0, params: CityParams = PARAMS) -> float:
    """The true average effect on ``outcome`` of ``do`` against ``vs`` over the city's households.

    Both worlds rerun the structural equations on the same households with the same noise;
    nodes that neither intervention sets keep what the equations give them (a policy not named
    keeps each district's actual value). Returns the mean over households of the difference.
    """
    if outcome not in COLUMNS[1:]:
        raise QueryError(f"true_effect: {outcome!r} is not a node of the city; use one of {list(COLUMNS[1:])}.")
    ex = _exogenous(n_districts, households_per_district, seed)
    a = _solve(ex, _check_do(do), params)[outcome]
    b = _solve(ex, _check_do(vs), params)[outcome]
    return float(np.mean(a - b))


def naive_difference(df: pd.DataFrame, outcome: str, do: Mapping, vs: Mapping) -> float:
    """What a plain comparison of districts says: mean ``outcome`` where the policies are as in ``do``
    minus where they are as in ``vs`` (policies only, hard values).

    Examples
    --------
    >>> df = pd.DataFrame({"transit": [1, 1, 0], "respiratory": [3.0, 5.0, 1.0]})
    >>> naive_difference(df, "respiratory", {"transit": 1}, {"transit": 0})
    3.0
    """
    def mean_where(pol):
        mask = np.ones(len(df), dtype=bool)
        for k, v in pol.items():
            mask &= (df[k] == v).to_numpy()
        return float(df.loc[mask, outcome].mean())

    return mean_where(do) - mean_where(vs)


def shipped() -> pd.DataFrame:
    """The table shipped as ``{package: causal_wm, table: urban_mobility}`` (size and seed in :data:`SHIPPED`)."""
    return simulate_city(**SHIPPED)


def truth_table(n_districts: int = SHIPPED["n_districts"],
                households_per_district: int = SHIPPED["households_per_district"],
                seed: int = SHIPPED["seed"]) -> pd.DataFrame:
    """Per planning question: the true effect and what a naive comparison of the data says.

    The naive number for a policy question is :func:`naive_difference`; for the car-share cut it
    is the slope of a least-squares line of the outcome on car share alone, times the shift.
    """
    df = simulate_city(n_districts, households_per_district, seed)
    rows = []
    for name, outcome, do, vs in QUESTIONS:
        truth = true_effect(outcome, do, vs, n_districts, households_per_district, seed)
        if set(do) <= set(POLICIES):
            naive = naive_difference(df, outcome, do, vs)
        else:
            (node, iv), = do.items()
            slope = np.polyfit(df[node].to_numpy(float), df[outcome].to_numpy(float), 1)[0]
            naive = float(slope * iv["shift"])
        rows.append({"question": name, "outcome": outcome, "truth": truth, "naive": naive})
    return pd.DataFrame(rows)
