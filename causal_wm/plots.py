"""Report figures, drawn on matplotlib's Agg canvas and returned as ``data:`` URIs.

No pyplot: each figure is a :class:`matplotlib.figure.Figure` given its own Agg canvas, so
drawing a report neither picks nor changes matplotlib's global backend or state. Text that
comes from users (node and query names) is passed through :func:`plain` so that a ``$`` is
never read as mathtext.
"""

from __future__ import annotations

import base64
import io
import warnings

import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

DPI = 110
INK = "#222222"
ACCENT = "#1f6fb2"
FACTUAL = "#c0392b"
FILL = {"treatment": "#fde3c8", "outcome": "#d4e6f6", "other": "#eeeeee"}


def plain(text) -> str:
    """User text for a figure: ``$`` escaped so that matplotlib draws it literally."""
    return str(text).replace("$", r"\$")


def new_figure(width: float, height: float) -> Figure:
    """A figure with its own Agg canvas and constrained layout."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig: Figure) -> str:
    """The figure as a base64 PNG ``data:`` URI."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # a node name in a script the default font lacks draws as boxes; that is not an error
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
        fig.savefig(buf, format="png", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _ticks(ax, axis: str = "x") -> None:
    from causal_wm.reporting import number

    getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(lambda v, _: number(v)))


# ---------------------------------------------------------------------------- causal graph
def layered_positions(graph: nx.DiGraph) -> dict:
    """Left-to-right layers by topological generation; within a layer, ordered by the parents' height.

    Examples
    --------
    >>> g = nx.DiGraph([("x", "t"), ("t", "y"), ("x", "y")])
    >>> {k: tuple(map(float, v)) for k, v in layered_positions(g).items()}
    {'x': (0.0, 0.0), 't': (1.0, 0.0), 'y': (2.0, 0.0)}
    """
    pos: dict = {}

    def height(n):  # parents above come first
        ps = [pos[p][1] for p in graph.predecessors(n)]
        return -float(np.mean(ps)) if ps else 0.0

    for i, layer in enumerate(nx.topological_generations(graph)):
        layer = sorted(layer, key=height) if i else list(layer)
        for j, n in enumerate(layer):
            pos[n] = (float(i), (len(layer) - 1) / 2 - j)
    return pos


def graph_figure(graph: nx.DiGraph, treatments=(), outcomes=()) -> str:
    """The causal graph: boxes for nodes (dashed when latent), arrows from parent to child."""
    pos = layered_positions(graph)
    n_layers = 1 + max(x for x, _ in pos.values())
    tallest = max(sum(1 for x, _ in pos.values() if x == i) for i in range(int(n_layers)))
    fig = new_figure(max(4.0, 1.7 * n_layers), max(1.6, 0.75 * tallest + 0.6))
    ax = fig.add_subplot()
    boxes = {}
    for n, (x, y) in pos.items():
        role = "treatment" if n in treatments else "outcome" if n in outcomes else "other"
        latent = bool(graph.nodes[n].get("latent"))
        boxes[n] = ax.text(x, y, plain(n), ha="center", va="center", fontsize=9, color=INK,
                           style="italic" if latent else "normal",
                           bbox={"boxstyle": "round,pad=0.45", "fc": FILL[role], "ec": INK, "lw": 1.0,
                                 "ls": "--" if latent else "-"})
    for u, v in graph.edges:
        skip = pos[v][0] - pos[u][0] > 1
        ax.annotate("", xy=pos[v], xytext=pos[u],
                    arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 0.8, "shrinkA": 2, "shrinkB": 2,
                                "patchA": boxes[u].get_bbox_patch(), "patchB": boxes[v].get_bbox_patch(),
                                "connectionstyle": f"arc3,rad={0.18 if skip else 0.0}"})
    ax.set_xlim(-0.6, n_layers - 0.4)
    ax.set_ylim(-tallest / 2, tallest / 2)
    ax.axis("off")
    return to_data_uri(fig)


# ---------------------------------------------------------------------------- effects
def _intervals(ax, rows, color=ACCENT) -> None:
    """Horizontal interval bars with a point at the estimate; ``rows`` are (label, est, lo, hi)."""
    y = np.arange(len(rows))[::-1]
    for yi, (_, est, lo, hi) in zip(y, rows, strict=True):
        ax.hlines(yi, lo, hi, color=color, lw=2.2)
        ax.plot([est], [yi], "o", color=color, ms=6)
    ax.set_yticks(y, [plain(r[0]) for r in rows], fontsize=9)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    _ticks(ax)


def effect_figure(arms, effect, outcome: str, prob: float) -> str:
    """Mean outcome under each intervention (left) and their difference with zero marked (right)."""
    fig = new_figure(8.0, 1.9)
    axes = fig.subplots(1, 2) if arms else [None, fig.add_subplot()]
    if arms:
        _intervals(axes[0], arms, color="#555555")
        axes[0].set_title(f"mean {plain(outcome)} under each intervention", fontsize=9)
    _intervals(axes[1], [("effect", *effect)])
    axes[1].axvline(0, color=FACTUAL, lw=1, ls="--")
    axes[1].set_title(f"effect on {plain(outcome)} ({round(100 * prob)}% interval)", fontsize=9)
    return to_data_uri(fig)


def forest_figure(rows, prob: float) -> str:
    """All effect queries at a glance, one panel per outcome; ``rows`` are (query, outcome, est, lo, hi)."""
    outcomes = list(dict.fromkeys(r[1] for r in rows))
    n = max(sum(r[1] == o for r in rows) for o in outcomes)
    fig = new_figure(8.0, 0.9 + 0.45 * n * len(outcomes))
    axes = fig.subplots(len(outcomes), 1, squeeze=False)[:, 0]
    for ax, o in zip(axes, outcomes, strict=True):
        _intervals(ax, [(r[0], *r[2:]) for r in rows if r[1] == o])
        ax.axvline(0, color=FACTUAL, lw=1, ls="--")
        ax.set_title(f"effect on {plain(o)} ({round(100 * prob)}% intervals)", fontsize=9)
    return to_data_uri(fig)


# ---------------------------------------------------------------------------- counterfactuals
def pick_units(factual: np.ndarray, k: int) -> np.ndarray:
    """Positions of at most ``k`` units spread evenly over the range of their factual values.

    Examples
    --------
    >>> pick_units(np.array([5.0, 1.0, 3.0]), 2).tolist()
    [1, 0]
    """
    order = np.argsort(factual, kind="stable")
    if len(order) <= k:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, k).round().astype(int))]


def counterfactual_figure(rows: pd.DataFrame, k: int = 30) -> str:
    """Per unit: factual value and counterfactual mean with its interval, one panel per node."""
    nodes = list(dict.fromkeys(rows["node"]))
    n_units = min(k, int((rows["node"] == nodes[0]).sum()))
    fig = new_figure(8.0, 0.8 + (0.17 * n_units + 0.5) * len(nodes))
    axes = fig.subplots(len(nodes), 1, squeeze=False)[:, 0]
    for ax, node in zip(axes, nodes, strict=True):
        g = rows[rows["node"] == node].reset_index(drop=True)
        g = g.iloc[pick_units(g["factual"].to_numpy(dtype=float), k)]
        y = np.arange(len(g))
        ax.hlines(y, g["lower"], g["upper"], color=ACCENT, lw=1.6)
        ax.plot(g["estimate"], y, "o", color=ACCENT, ms=4)
        ax.plot(g["factual"], y, "D", color=FACTUAL, ms=4)
        ax.set_yticks(y, [plain(f"unit {u}") for u in g["unit"]], fontsize=6.5)
        ax.set_title(f"{plain(node)}: factual and counterfactual, per unit", fontsize=9)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        _ticks(ax)
    handles = [Line2D([], [], color=FACTUAL, marker="D", ls="", label="factual (observed)"),
               Line2D([], [], color=ACCENT, marker="o", lw=1.6, label="counterfactual mean and interval")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return to_data_uri(fig)


# ---------------------------------------------------------------------------- checks
def sensitivity_figure(strengths, estimates, lowers, uppers, breakdown, treatment: str, outcome: str,
                       prob: float) -> str:
    """The effect and its interval against the strength of a hidden confounder, zero and the breakdown marked."""
    s = np.asarray(strengths, dtype=float)
    fig = new_figure(6.5, 2.6)
    ax = fig.add_subplot()
    ax.fill_between(s, np.asarray(lowers, float), np.asarray(uppers, float), color=ACCENT, alpha=0.18, lw=0,
                    label=f"{round(100 * prob)}% interval")
    ax.plot(s, np.asarray(estimates, float), "o-", color=ACCENT, ms=4, lw=1.6, label="posterior mean")
    ax.axhline(0, color=FACTUAL, lw=1, ls="--")
    if breakdown is not None:
        ax.axvline(breakdown, color=INK, lw=0.9, ls=":", label=f"interval first covers 0 (strength {breakdown:g})")
    ax.set_xlabel(f"strength of the hidden confounder (loading on {plain(treatment)} and {plain(outcome)})",
                  fontsize=8.5)
    ax.set_title(f"effect of {plain(treatment)} on {plain(outcome)} as the hidden confounder grows", fontsize=9)
    ax.grid(color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7.5, frameon=False, loc="best")
    _ticks(ax, "y")
    return to_data_uri(fig)
