"""Compile a fitted model into the flat arrays the kernels walk (:mod:`causal_wm.kernels`).

``ni`` (int, one row per node, topological order) holds: family code, latent flag, number of
linear predictors, number of design columns, then offsets into ``theta`` of the intercept,
coefficients, sigma, nu and phi (-1 when absent), the value transform, (unused), the latent
index, and the node's range in the flat parent list ``nf``. ``blk_cols`` holds each group block's
first column and number of columns.
``pf`` (float) holds: centre and scale of the value transform, (unused), count offset, and the
centre and scale applied when the node is a parent.
``theta`` holds every parameter per posterior draw (chains x draws flattened).
``lat`` holds per-unit values per draw (draws x units x nodes) of the nodes the queries read from
posterior draws (source ``LATENT``): the latent nodes, then the nodes with imputed values — for
those, the observed value where there is one and the posterior draw of the missing value elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causal_wm import kernels as K
from causal_wm import sites
from causal_wm.families import FAMILIES

NI_COLS = 14


@dataclass(frozen=True)
class Program:
    """The compiled model: structure arrays, parameter draws and the fitting data."""

    names: tuple[str, ...]
    arrays: tuple
    theta: np.ndarray
    lat: np.ndarray
    data: np.ndarray
    orig: np.ndarray
    drawn: tuple[str, ...] = ()  # nodes read from ``lat`` (latent nodes, then imputed ones)
    imputed: tuple[str, ...] = ()  # nodes with imputed values in the fitting data

    def index(self, name: str) -> int:
        """Kernel index of node ``name``."""
        return self.names.index(name)

    @property
    def n_draws(self) -> int:
        """Number of posterior draws (chains x draws)."""
        return self.theta.shape[0]


def _flat(da) -> np.ndarray:
    v = np.asarray(da.values, dtype=float)
    return v.reshape((v.shape[0] * v.shape[1], -1))


def compile_program(plan, posterior, seed: int = 0) -> Program:
    """Build a :class:`Program` from a fit plan and an InferenceData ``posterior`` group.

    ``seed`` (the fit's) fixes the draws of a discrete leaf's missing values, which the fit summed
    out: they are drawn here from the node's mechanism, per posterior draw (exact, as nothing
    downstream informs them).
    """
    scm, lays, scales = plan.scm, plan.layouts, plan.scales
    names = tuple(scm.order)
    idx = {n: i for i, n in enumerate(names)}
    n_nodes = len(names)
    ni = np.full((n_nodes, NI_COLS), -1, dtype=np.int64)
    pf = np.zeros((n_nodes, 6))
    blocks: list[np.ndarray] = []
    offset = 0

    def put(arr):
        nonlocal offset
        blocks.append(arr)
        start = offset
        offset += arr.shape[1]
        return start

    col_ptr, fac_ptr, fac_var, fac_lev = [], [0], [], []
    blk_ptr, blk_var, blk_cols, blk_p = [0], [], [], []
    nf: list[int] = []
    imputed = [n for n in names if n in getattr(plan, "missing", {})]
    latents = [n for n in names if lays[n].latent] + imputed  # every node with per-unit draws

    def add_column(col):
        for var, lev in col.factors:
            fac_var.append(idx[var])
            fac_lev.append(lev)
        fac_ptr.append(len(fac_var))

    n_columns = 0
    for name in names:
        k = idx[name]
        lay, sc, fam = lays[name], scales[name], FAMILIES[lays[name].family]
        ni[k, 0] = fam.code
        ni[k, 1] = int(lay.latent)
        ni[k, 2] = lay.n_eta
        ni[k, 3] = len(lay.columns)
        if lay.intercept:
            ni[k, 4] = put(_flat(posterior[sites.intercept(name)]))
        if lay.columns:
            ni[k, 5] = put(_flat(posterior[sites.coef(name)]))
        for j, p in enumerate(("sigma", "nu", "phi")):
            if p in fam.extra and not lay.latent:
                ni[k, 6 + j] = put(_flat(posterior[sites.extra(name, p)]))
        ni[k, 9] = K.LOG if fam.name == "lognormal" else K.LINEAR if fam.standardise else K.IDENTITY
        ni[k, 11] = latents.index(name) if name in latents else -1
        ni[k, 12] = len(nf)
        nf.extend(idx[p] for p in scm.parents(name))
        ni[k, 13] = len(nf)
        if lay.latent:
            pf[k, :] = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        else:
            pf[k, :] = (sc.center, sc.scale, 0.0, sc.offset, sc.pred_center, sc.pred_scale)
        col_ptr.append(n_columns)
        for col in lay.columns:
            add_column(col)
            n_columns += 1
        for blk in lay.groups:
            blk_var.append(idx[blk.group])
            blk_cols.append((n_columns, len(blk.columns)))
            for col in blk.columns:
                add_column(col)
                n_columns += 1
            blk_p.append(put(_flat(posterior[sites.group_effect(name, blk.group)])))
        blk_ptr.append(len(blk_var))
    theta = np.ascontiguousarray(np.concatenate(blocks, axis=1)) if blocks else np.zeros((_n_draws(posterior), 1))
    S = theta.shape[0]
    if latents:
        lat = np.stack([_flat(posterior[n]) if lays[n].latent else _imputed(plan, posterior, n, S)
                        for n in latents], axis=-1)
    else:
        lat = np.zeros((S, 1, 1))
    data = np.full((plan.n, n_nodes), np.nan)
    for name, v in plan.values.items():
        data[:, idx[name]] = v
    orig = original_matrix(plan.scm, plan.frame, plan.values, names)
    arrays = (
        np.array([idx[n] for n in names], dtype=np.int64),
        ni,
        np.array(nf, dtype=np.int64),
        pf,
        np.array(col_ptr, dtype=np.int64),
        np.array(fac_ptr, dtype=np.int64),
        np.array(fac_var, dtype=np.int64),
        np.array(fac_lev, dtype=np.float64),
        np.array(blk_ptr, dtype=np.int64),
        np.array(blk_var, dtype=np.int64),
        np.array(blk_cols, dtype=np.int64).reshape(-1, 2),
        np.array(blk_p, dtype=np.int64),
    )
    prog = Program(names, arrays, theta, np.ascontiguousarray(lat), data, orig, tuple(latents), tuple(imputed))
    for name in imputed:
        if sites.missing(name) not in posterior:
            _draw_missing_leaf(prog, plan.missing[name], prog.index(name), seed)
    return prog


def _imputed(plan, posterior, name, S) -> np.ndarray:
    """(draws, units) values of an imputed node: observed where seen, posterior draws where missing
    (a discrete leaf's missing entries stay NaN until :func:`_draw_missing_leaf`)."""
    full = np.repeat(plan.values[name][None, :], S, axis=0)
    if sites.missing(name) in posterior:
        full[:, plan.missing[name]] = _flat(posterior[sites.missing(name)])
    return full


def _draw_missing_leaf(prog: Program, rows: np.ndarray, k: int, seed: int) -> None:
    """Fill a discrete leaf's missing values in ``prog.lat`` with one draw per posterior draw from its
    mechanism given the unit's parents (in that draw), by the shared kernel."""
    from causal_wm.seeding import stream

    K_ = len(prog.names)
    src_f = np.array([K.LATENT if n in prog.drawn else K.DATA for n in prog.names], dtype=np.int64)
    src_c = src_f.copy()
    src_c[k] = K.FRESH
    out = np.empty((prog.n_draws, len(rows), 1))
    K.units_kernel(prog.arrays, prog.theta, prog.data, prog.orig, prog.lat, rows.astype(np.int64),
                   np.arange(prog.n_draws, dtype=np.int64), False, stream(seed, f"impute:{prog.names[k]}"),
                   src_f, src_c, np.zeros(K_, dtype=np.int64), np.zeros(K_), np.zeros((1, K_)), np.zeros((1, 2)),
                   np.ones(K_, dtype=bool), np.array([k], dtype=np.int64), out)
    prog.lat[:, rows, prog.drawn.index(prog.names[k])] = out[:, :, 0]  # discrete: internal = original units


def original_matrix(scm, frame, values, names) -> np.ndarray:
    """Data in original units, (units, nodes); categorical nodes as codes, NaN where unknown."""
    orig = np.full((len(frame), len(names)), np.nan)
    for i, name in enumerate(names):
        if name not in values:
            continue
        if scm.node(name).family == "categorical":
            orig[:, i] = values[name]
        else:
            orig[:, i] = frame[name].to_numpy(dtype=float)
    return orig


def _n_draws(posterior) -> int:
    return int(posterior.sizes["chain"] * posterior.sizes["draw"])
