"""Identification: can the graph answer ``P(outcome | do(treatment))`` from observed data, and how?

:func:`identify` takes an :class:`~causal_wm.spec.SCM` whose latent nodes are unobserved and
returns an :class:`Identification`. It tries, in order:

1. **back-door** adjustment: a minimal set of observed non-descendants of the treatment that
   d-separates it from the outcome once the treatment's outgoing edges are cut;
2. **front-door** adjustment (one treatment): a set of observed mediators that intercepts every
   directed path, is not confounded with the treatment, and whose confounding with the outcome
   the treatment blocks (found by pruning the largest candidate set, then shrinking it);
3. the **ID algorithm** (Shpitser & Pearl 2006, with Tian & Pearl's c-component factorisation) on
   the graph's latent projection, an ADMG; its answer is an expression tree (:class:`Prob`,
   :class:`Sum`, :class:`Product`, :class:`Ratio`) that prints and evaluates on a joint table;
4. when the ID algorithm finds a hedge, **instrumental variables** (one treatment, one outcome),
   which identify the effect only under further assumptions (``is_identified`` is False);
   otherwise :class:`~causal_wm.errors.NotIdentifiable`.

The criteria run on the DAG with its latent nodes (d-separation given observed sets only),
which is equivalent to m-separation in the latent projection. :func:`dowhy_identify` asks
DoWhy the same question, for cross-checks.

Examples
--------
>>> from causal_wm.spec import SCM
>>> scm = SCM.from_dict({"name": "bd", "nodes": {
...     "c": {}, "t": {"formula": "c"}, "y": {"formula": "t + c"}}})
>>> ident = identify(scm, "t", "y")
>>> ident.kind, ident.adjustment_set, ident.estimand
('backdoor', ('c',), 'sum_{c} P(y | t, c) P(c)')
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import networkx as nx
import numpy as np

from causal_wm.errors import NotIdentifiable, QueryError, suggest

KINDS = ("backdoor", "frontdoor", "iv", "general")

_COMPLETE = (
    "The graph is complete: every common cause of two modelled variables is in the model (as a "
    "latent node if it is not measured), and every arrow that is absent is truly absent."
)


# ====================================================================== expressions
def _node(var: str) -> str:
    """The graph node behind an expression variable (``"t'"`` is a bound copy of ``t``)."""
    return var.rstrip("'")


class Expr:
    """Base of the estimand expression tree: :class:`Prob`, :class:`Sum`, :class:`Product`, :class:`Ratio`.

    An expression is a function of its free variables; each variable names an observed node
    (a primed name such as ``t'`` is a summation copy of ``t``).
    """

    @functools.cached_property
    def free(self) -> frozenset[str]:
        """The variables the expression depends on (not bound by a sum)."""
        raise NotImplementedError

    def __str__(self) -> str:
        return _fmt(self)


@dataclass(frozen=True, eq=True)
class Prob(Expr):
    """A conditional probability of the observed distribution, ``P(head | given)``.

    Examples
    --------
    >>> str(Prob(("y",), ("t", "c")))
    'P(y | t, c)'
    """

    head: tuple[str, ...]
    given: tuple[str, ...] = ()

    @functools.cached_property
    def free(self) -> frozenset[str]:
        """Head and conditioning variables."""
        return frozenset(self.head) | frozenset(self.given)

    @property
    def key(self) -> tuple[frozenset[str], frozenset[str]]:
        """Order-free identity, for cancelling equal factors."""
        return frozenset(self.head), frozenset(self.given)


@dataclass(frozen=True, eq=True)
class Sum(Expr):
    """``sum_{over} body``: the body summed over every value of the ``over`` variables."""

    over: tuple[str, ...]
    body: Expr

    @functools.cached_property
    def free(self) -> frozenset[str]:
        """The body's free variables less the summed ones."""
        return self.body.free - frozenset(self.over)


@dataclass(frozen=True, eq=True)
class Product(Expr):
    """The product of ``factors``; the empty product is 1."""

    factors: tuple[Expr, ...]

    @functools.cached_property
    def free(self) -> frozenset[str]:
        """The union of the factors' free variables."""
        return frozenset().union(*(f.free for f in self.factors))


@dataclass(frozen=True, eq=True)
class Ratio(Expr):
    """``num / den`` (0 where the denominator is 0)."""

    num: Expr
    den: Expr

    @functools.cached_property
    def free(self) -> frozenset[str]:
        """The union of both sides' free variables."""
        return self.num.free | self.den.free


ONE = Product(())


def _fmt(e: Expr) -> str:
    """Print an expression: sums extend to the end of their product, ratios are parenthesised."""
    if isinstance(e, Prob):
        given = f" | {', '.join(e.given)}" if e.given else ""
        return f"P({', '.join(e.head)}{given})"
    if isinstance(e, Sum):
        body = f"[{_fmt(e.body)}]" if isinstance(e.body, Ratio) else _fmt(e.body)
        return f"sum_{{{', '.join(e.over)}}} {body}"
    if isinstance(e, Product):
        if not e.factors:
            return "1"
        parts = []
        for i, f in enumerate(e.factors):
            s = _fmt(f)
            if isinstance(f, Sum) and i < len(e.factors) - 1:
                s = f"[{s}]"
            elif isinstance(f, Ratio):
                s = f"({s})"
            parts.append(s)
        return " ".join(parts)
    if isinstance(e, Ratio):
        def side(x: Expr) -> str:
            return _fmt(x) if isinstance(x, Prob) else f"({_fmt(x)})"

        return f"{side(e.num)} / {side(e.den)}"
    raise TypeError(f"not an estimand expression: {e!r}")


# ---------------------------------------------------------------- smart constructors
def _factors(e: Expr) -> list[Expr]:
    """``e`` as a list of factors (a product's factors, or ``[e]``)."""
    return list(e.factors) if isinstance(e, Product) else [e]


def _merge_chain(fs: list[Expr]) -> list[Expr]:
    """Merge chain-rule pairs ``P(A | B) P(C | A, B)`` into ``P(A, C | B)``."""
    fs = list(fs)
    changed = True
    while changed:
        changed = False
        for i, j in ((i, j) for i in range(len(fs)) for j in range(len(fs)) if i != j):
            f, g = fs[i], fs[j]
            if (isinstance(f, Prob) and isinstance(g, Prob) and f.head and g.head
                    and set(g.given) == set(f.head) | set(f.given) and not set(g.head) & f.free):
                fs[i] = Prob(f.head + g.head, f.given)
                del fs[j]
                changed = True
                break
    return fs


def product(factors: Iterable[Expr]) -> Expr:
    """The simplified product of ``factors``: flattened, 1s dropped, chain-rule pairs merged."""
    flat = [g for f in factors for g in _factors(f)]
    flat = _merge_chain(flat)
    return flat[0] if len(flat) == 1 else Product(tuple(flat))


def summation(over: Sequence[str], body: Expr) -> Expr:
    """The simplified ``sum_{over} body``.

    A variable that is only the head of one conditional probability sums out of it; factors
    that do not mention the summed variables move outside the sum.
    """
    over = list(dict.fromkeys(over))
    if not over:
        return body
    if isinstance(body, Sum) and not set(over) & set(body.over):
        return summation(over + list(body.over), body.body)
    fs = _factors(body)
    changed = True
    while changed:
        changed = False
        for v in over:
            holders = [i for i, f in enumerate(fs) if v in f.free]
            if len(holders) == 1 and isinstance(fs[holders[0]], Prob):
                f = fs[holders[0]]
                if v in f.head:
                    head = tuple(h for h in f.head if h != v)
                    if head:
                        fs[holders[0]] = Prob(head, f.given)
                    else:
                        del fs[holders[0]]
                    over.remove(v)
                    changed = True
                    break
    if not over:
        return product(fs)
    inside = [f for f in fs if f.free & set(over)]
    outside = [f for f in fs if not f.free & set(over)]
    if outside and inside:
        return product([*outside, summation(over, product(inside))])
    return Sum(tuple(over), product(fs))


def ratio(num: Expr, den: Expr) -> Expr:
    """The simplified ``num / den``: equal factors cancel; ``P(A, B | C) / P(B | C)`` is ``P(A | B, C)``."""
    ns, ds = _factors(num), _factors(den)
    for d in list(ds):
        key = d.key if isinstance(d, Prob) else d
        for n in ns:
            if (n.key if isinstance(n, Prob) else n) == key:
                ns.remove(n)
                ds.remove(d)
                break
    num, den = product(ns), product(ds)
    if den == ONE:
        return num
    if (isinstance(num, Prob) and isinstance(den, Prob) and set(num.given) == set(den.given)
            and set(den.head) < set(num.head)):
        return Prob(tuple(h for h in num.head if h not in den.head), den.head + num.given)
    return Ratio(num, den)


def rename_bound(e: Expr, scope: frozenset[str] | None = None) -> Expr:
    """Prime bound variables that would shadow a variable in scope (``sum_{t} ...`` -> ``sum_{t'} ...``).

    ``scope`` holds the names visible around ``e`` (default: its free variables).
    """
    scope = e.free if scope is None else scope
    if isinstance(e, Prob):
        return e
    if isinstance(e, Product):
        return Product(tuple(rename_bound(f, scope) for f in e.factors))
    if isinstance(e, Ratio):
        return Ratio(rename_bound(e.num, scope), rename_bound(e.den, scope))
    mapping = {}
    for v in e.over:
        new = v
        while new in scope or (new != v and new in e.body.free):
            new += "'"
        mapping[v] = new
    over = tuple(mapping[v] for v in e.over)
    return Sum(over, rename_bound(_substitute(e.body, mapping), scope | frozenset(over)))


def _substitute(e: Expr, mapping: dict[str, str]) -> Expr:
    """Rename free variables of ``e`` by ``mapping`` (sums that rebind a name shield it)."""
    mapping = {k: v for k, v in mapping.items() if k != v}
    if not mapping:
        return e
    if isinstance(e, Prob):
        return Prob(tuple(mapping.get(v, v) for v in e.head), tuple(mapping.get(v, v) for v in e.given))
    if isinstance(e, Product):
        return Product(tuple(_substitute(f, mapping) for f in e.factors))
    if isinstance(e, Ratio):
        return Ratio(_substitute(e.num, mapping), _substitute(e.den, mapping))
    inner = {k: v for k, v in mapping.items() if k not in e.over}
    return Sum(e.over, _substitute(e.body, inner))


# ---------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Factor:
    """A table over named variables: ``table`` has one axis per name in ``variables``."""

    variables: tuple[str, ...]
    table: np.ndarray

    def aligned(self, variables: Sequence[str]) -> np.ndarray:
        """The table transposed and expanded (size-1 axes) to ``variables``, a superset."""
        order = [self.variables.index(v) for v in variables if v in self.variables]
        t = np.transpose(self.table, order) if order else self.table
        shape = [self.table.shape[self.variables.index(v)] if v in self.variables else 1 for v in variables]
        return t.reshape(shape)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` with 0 where ``b`` is 0 (probabilities conditioned on impossible events)."""
    a, b = np.broadcast_arrays(a, b)
    return np.divide(a, b, out=np.zeros(a.shape), where=b > 0)


def evaluate(e: Expr, joint: np.ndarray, names: Sequence[str]) -> Factor:
    """Evaluate an estimand on a joint probability table of the observed variables.

    Parameters
    ----------
    e : Expr
        The expression.
    joint : numpy.ndarray
        ``P(names)``: one axis per observed node, entries summing to 1.
    names : sequence of str
        The node of each axis of ``joint``.

    Returns
    -------
    Factor
        The expression's value for every value of its free variables.

    Examples
    --------
    >>> joint = np.array([[0.1, 0.3], [0.2, 0.4]])          # P(a, b)
    >>> f = evaluate(Prob(("b",), ("a",)), joint, ["a", "b"])
    >>> f.variables, f.table.round(3).tolist()
    (('b', 'a'), [[0.25, 0.333], [0.75, 0.667]])
    """
    axis = {n: i for i, n in enumerate(names)}
    if joint.ndim != len(axis):
        raise QueryError(f"the joint table has {joint.ndim} axes but {len(axis)} names were given.")
    return _eval(e, np.asarray(joint, dtype=float), axis)


def _eval(e: Expr, joint: np.ndarray, axis: dict[str, int]) -> Factor:
    if isinstance(e, Prob):
        return _eval_prob(e, joint, axis)
    if isinstance(e, Product):
        parts = [_eval(f, joint, axis) for f in e.factors]
        names = tuple(dict.fromkeys(v for p in parts for v in p.variables))
        out = np.ones([1] * len(names))
        for p in parts:
            out = out * p.aligned(names)
        return Factor(names, out)
    if isinstance(e, Ratio):
        num, den = _eval(e.num, joint, axis), _eval(e.den, joint, axis)
        names = tuple(dict.fromkeys(num.variables + den.variables))
        return Factor(names, _divide(num.aligned(names), den.aligned(names)))
    body = _eval(e.body, joint, axis)
    table = body.table
    for v in e.over:
        if v not in body.variables:  # a sum over a variable the body ignores counts its values
            table = table * joint.shape[axis[_node(v)]]
    summed = tuple(i for i, v in enumerate(body.variables) if v in e.over)
    names = tuple(v for v in body.variables if v not in e.over)
    return Factor(names, table.sum(axis=summed) if summed else table)


def _eval_prob(e: Prob, joint: np.ndarray, axis: dict[str, int]) -> Factor:
    variables = e.head + e.given
    nodes = [_node(v) for v in variables]
    unknown = [n for n in nodes if n not in axis]
    if unknown or len(set(nodes)) < len(nodes):
        raise QueryError(f"cannot evaluate {e}: its variables {list(variables)} must be distinct "
                         f"nodes among {list(axis)}.")
    axes = [axis[n] for n in nodes]
    marg = joint.sum(axis=tuple(i for i in range(joint.ndim) if i not in axes))
    kept = sorted(axes)
    marg = np.transpose(marg, [kept.index(a) for a in axes])
    if e.given:
        marg = _divide(marg, marg.sum(axis=tuple(range(len(e.head))), keepdims=True))
    return Factor(variables, marg)


# ====================================================================== graphs
@dataclass(frozen=True)
class ADMG:
    """An acyclic directed mixed graph over observed nodes: the latent projection of a DAG.

    Attributes
    ----------
    order : tuple of str
        The nodes in a topological order.
    dag : networkx.DiGraph
        Directed edges ``a -> b``.
    bi : networkx.Graph
        Bidirected edges ``a <-> b``; edge attribute ``via`` names the latent nodes behind it.
    """

    order: tuple[str, ...]
    dag: nx.DiGraph = field(compare=False)
    bi: nx.Graph = field(compare=False)

    def ordered(self, nodes: Iterable[str]) -> tuple[str, ...]:
        """``nodes`` in topological order."""
        s = set(nodes)
        return tuple(v for v in self.order if v in s)

    def induced(self, nodes: Iterable[str]) -> ADMG:
        """The subgraph on ``nodes`` (edges among them only)."""
        keep = self.ordered(nodes)
        return ADMG(keep, self.dag.subgraph(keep).copy(), self.bi.subgraph(keep).copy())

    def ancestors(self, nodes: Iterable[str], cut: Iterable[str] = ()) -> frozenset[str]:
        """``nodes`` and their ancestors, ignoring directed edges into ``cut``."""
        g = self.dag
        cut = set(cut)
        if cut:
            g = nx.restricted_view(g, [], [(p, c) for c in cut for p in self.dag.predecessors(c)])
        out = set(nodes)
        for v in nodes:
            out |= nx.ancestors(g, v)
        return frozenset(out)

    def districts(self) -> list[frozenset[str]]:
        """The c-components: nodes connected by bidirected edges, in topological order of their first node."""
        comps = [frozenset(c) for c in nx.connected_components(self.bi)]
        return sorted(comps, key=lambda c: self.order.index(self.ordered(c)[0]))

    def confounders(self, nodes: Iterable[str]) -> tuple[str, ...]:
        """The latent nodes behind the bidirected edges among ``nodes`` (sorted)."""
        sub = self.bi.subgraph(nodes)
        return tuple(sorted({u for _, _, via in sub.edges(data="via") for u in via}))


def latent_projection(graph: nx.DiGraph, latent: Iterable[str], order: Sequence[str] | None = None) -> ADMG:
    """Project the latent nodes out of a DAG (Verma & Pearl).

    Observed ``a -> b`` when a directed path from ``a`` to ``b`` passes through latent nodes only;
    ``a <-> b`` when a latent node reaches both along such paths.

    Parameters
    ----------
    graph : networkx.DiGraph
        The DAG, latent nodes included.
    latent : iterable of str
        The unobserved nodes.
    order : sequence of str, optional
        A topological order of ``graph`` (default: networkx's).

    Returns
    -------
    ADMG

    Examples
    --------
    >>> g = nx.DiGraph([("U", "t"), ("U", "y"), ("t", "y")])
    >>> admg = latent_projection(g, ["U"])
    >>> sorted(admg.dag.edges()), sorted(tuple(sorted(e)) for e in admg.bi.edges())
    ([('t', 'y')], [('t', 'y')])
    """
    latent = set(latent)
    order = tuple(order) if order is not None else tuple(nx.topological_sort(graph))
    observed = tuple(v for v in order if v not in latent)
    reach = _observed_reach(graph, latent)
    dag, bi = nx.DiGraph(), nx.Graph()
    dag.add_nodes_from(observed)
    bi.add_nodes_from(observed)
    for v in observed:
        dag.add_edges_from((v, w) for w in reach(v))
    for u in (v for v in order if v in latent):
        for a, b in combinations(sorted(reach(u), key=observed.index), 2):
            via = bi.edges[a, b]["via"] if bi.has_edge(a, b) else ()
            bi.add_edge(a, b, via=(*via, u))
    return ADMG(observed, dag, bi)


def _observed_reach(graph: nx.DiGraph, latent: set[str]):
    """A function: node -> observed nodes reachable along directed paths through latent nodes only."""

    @functools.cache
    def reach(v: str) -> frozenset[str]:
        out: set[str] = set()
        for w in graph.successors(v):
            out |= reach(w) if w in latent else {w}
        return frozenset(out)

    return reach


def _cut_outgoing(graph: nx.DiGraph, nodes: Iterable[str]) -> nx.DiGraph:
    """``graph`` without the edges out of ``nodes``."""
    g = graph.copy()
    g.remove_edges_from([e for v in nodes for e in graph.out_edges(v)])
    return g


def _separated(graph: nx.DiGraph, x: Iterable[str], y: Iterable[str], z: Iterable[str] = ()) -> bool:
    """Whether ``z`` d-separates ``x`` from ``y`` in ``graph``."""
    return nx.is_d_separator(graph, set(x), set(y), set(z))


# ====================================================================== criteria
def backdoor_set(graph: nx.DiGraph, treatment: Sequence[str], outcome: Sequence[str],
                 observed: Sequence[str]) -> tuple[str, ...] | None:
    """A minimal back-door adjustment set, or None if no observed set satisfies the criterion.

    The set holds observed non-descendants of the treatment and d-separates treatment from
    outcome in the graph without the treatment's outgoing edges (Pearl 2009, Thm 3.3.2).

    Parameters
    ----------
    graph : networkx.DiGraph
        The DAG, latent nodes included.
    treatment, outcome : sequence of str
        Disjoint sets of observed nodes.
    observed : sequence of str
        The observed nodes in topological order (the set is returned in this order).

    Returns
    -------
    tuple of str or None

    Examples
    --------
    >>> g = nx.DiGraph([("c", "t"), ("c", "y"), ("t", "y")])
    >>> backdoor_set(g, ["t"], ["y"], ["c", "t", "y"])
    ('c',)
    """
    cut = _cut_outgoing(graph, treatment)
    banned = set(treatment) | set(outcome)
    for t in treatment:
        banned |= nx.descendants(graph, t)
    allowed = {v for v in observed if v not in banned}
    z = nx.find_minimal_d_separator(cut, set(treatment), set(outcome), restricted=allowed)
    return None if z is None else tuple(v for v in observed if v in z)


def _intercepts(graph: nx.DiGraph, treatment: str, outcome: Sequence[str], mediators: set[str]) -> bool:
    """Whether every directed path from ``treatment`` to ``outcome`` passes through ``mediators``."""
    g = nx.restricted_view(graph, mediators, [])
    return not set(outcome) & nx.descendants(g, treatment)


def is_frontdoor_set(graph: nx.DiGraph, treatment: str, outcome: Sequence[str], mediators: Iterable[str]) -> bool:
    """Whether ``mediators`` satisfies Pearl's front-door criterion for ``treatment`` and ``outcome``.

    (i) it intercepts every directed path from treatment to outcome, (ii) there is no open
    back-door path from the treatment to it, and (iii) the treatment blocks every back-door
    path from it to the outcome.

    Examples
    --------
    >>> g = nx.DiGraph([("U", "t"), ("U", "y"), ("t", "m"), ("m", "y")])
    >>> is_frontdoor_set(g, "t", ["y"], ["m"]), is_frontdoor_set(g, "t", ["y"], [])
    (True, False)
    """
    m = set(mediators)
    return (bool(m) and _intercepts(graph, treatment, outcome, m)
            and _separated(_cut_outgoing(graph, [treatment]), [treatment], m)
            and _separated(_cut_outgoing(graph, m), m, outcome, [treatment]))


def frontdoor_set(graph: nx.DiGraph, treatment: str, outcome: Sequence[str],
                  observed: Sequence[str]) -> tuple[str, ...] | None:
    """A front-door set of observed mediators for one treatment, or None.

    Starts from the observed descendants of the treatment with no open back-door path from it,
    prunes (to a fixpoint) those with a back-door path to the outcome that the treatment does not
    block, checks that the rest intercepts every directed path (if this largest set does not, no
    set does), then drops members one at a time while the criterion holds.

    Parameters
    ----------
    graph : networkx.DiGraph
        The DAG, latent nodes included.
    treatment : str
        The treatment node.
    outcome : sequence of str
        The outcome nodes.
    observed : sequence of str
        The observed nodes in topological order.

    Returns
    -------
    tuple of str or None
    """
    cut_t = _cut_outgoing(graph, [treatment])
    desc = nx.descendants(graph, treatment)
    cand = [v for v in observed if v in desc and v not in outcome
            and _separated(cut_t, [treatment], [v])]
    while cand:
        cut_m = _cut_outgoing(graph, cand)
        keep = [v for v in cand if _separated(cut_m, [v], outcome, [treatment])]
        if keep == cand:
            break
        cand = keep
    if not cand or not _intercepts(graph, treatment, outcome, set(cand)):
        return None
    for v in list(cand):
        trial = [w for w in cand if w != v]
        if is_frontdoor_set(graph, treatment, outcome, trial):
            cand = trial
    return tuple(cand)


def instruments(graph: nx.DiGraph, treatment: str, outcome: str,
                observed: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Instrumental variables for one treatment and one outcome, and the set they need conditioning on.

    ``z`` is an instrument given ``w`` (observed non-descendants of the treatment and outcome)
    when it is d-connected to the treatment given ``w`` and d-separated from the outcome given
    ``w`` once the treatment's outgoing edges are cut. Unconditional instruments come first;
    otherwise the first candidate (topological order) with a minimal ``w`` fixes ``w``, and every
    candidate valid given that ``w`` is returned.

    Returns
    -------
    (instruments, conditioning) : tuple of tuple of str
        Both empty when there is none.

    Examples
    --------
    >>> g = nx.DiGraph([("z", "t"), ("U", "t"), ("U", "y"), ("t", "y")])
    >>> instruments(g, "t", "y", ["z", "t", "y"])
    (('z',), ())
    """
    cut = _cut_outgoing(graph, [treatment])
    banned = {treatment, outcome} | nx.descendants(graph, treatment) | nx.descendants(graph, outcome)
    cand = [v for v in observed if v not in banned]

    def valid(z: str, w: Sequence[str]) -> bool:
        return _separated(cut, [z], [outcome], w) and not _separated(graph, [z], [treatment], w)

    found = tuple(z for z in cand if valid(z, ()))
    if found:
        return found, ()
    for z in cand:
        w = nx.find_minimal_d_separator(cut, {z}, {outcome}, restricted=set(cand) - {z})
        if w and valid(z, tuple(w)):
            w = tuple(v for v in observed if v in w)
            return tuple(v for v in cand if v not in w and valid(v, w)), w
    return (), ()


# ====================================================================== the ID algorithm
class Hedge(Exception):
    """Raised inside the ID algorithm: the c-forests ``f`` ⊇ ``f_prime`` form a hedge."""

    def __init__(self, f: frozenset[str], f_prime: frozenset[str], confounders: tuple[str, ...]):
        super().__init__(f"hedge {sorted(f)} / {sorted(f_prime)}")
        self.f, self.f_prime, self.confounders = f, f_prime, confounders


def id_algorithm(admg: ADMG, treatment: Iterable[str], outcome: Iterable[str]) -> Expr:
    """``P(outcome | do(treatment))`` as an expression in the observed distribution (Shpitser & Pearl 2006).

    Parameters
    ----------
    admg : ADMG
        The latent projection.
    treatment, outcome : iterable of str
        Disjoint sets of nodes of ``admg``.

    Returns
    -------
    Expr
        Simplified, with bound variables that shadow free ones primed. Free variables beyond
        the treatment and outcome (added by line 3 of the algorithm) do not change its value.

    Raises
    ------
    Hedge
        When the effect is not identifiable (the algorithm is complete).

    Examples
    --------
    >>> g = nx.DiGraph([("w1", "w2"), ("w2", "x"), ("x", "y"),
    ...                 ("U1", "w1"), ("U1", "y"), ("U2", "w1"), ("U2", "x")])
    >>> print(id_algorithm(latent_projection(g, ["U1", "U2"]), ["x"], ["y"]))
    (sum_{w1} P(w1) P(x, y | w1, w2)) / (sum_{w1} P(w1) P(x | w1, w2))
    """
    x, y = frozenset(treatment), frozenset(outcome)
    e = _id(y, x, Prob(admg.order), admg, admg)
    return rename_bound(e, e.free | x | y)


def _id(y: frozenset[str], x: frozenset[str], p: Expr, g: ADMG, top: ADMG) -> Expr:
    """One call of ID(y, x, P, G); ``top`` is the full projection (for hedge reporting)."""
    v = frozenset(g.order)
    if not x:  # line 1
        return summation(g.ordered(v - y), p)
    an = g.ancestors(y)
    if an != v:  # line 2
        return _id(y, x & an, summation(g.ordered(v - an), p), g.induced(an), top)
    w = (v - x) - g.ancestors(y, cut=x)
    if w:  # line 3
        return _id(y, x | w, p, g, top)
    comps = g.induced(v - x).districts()
    if len(comps) > 1:  # line 4
        return summation(g.ordered(v - (y | x)), product(_id(s, v - s, p, g, top) for s in comps))
    (s,) = comps
    districts = g.districts()
    if len(districts) == 1:  # line 5
        raise Hedge(v, s, top.confounders(v))
    if s in districts:  # line 6
        return summation(g.ordered(s - y), product(_chain_factor(p, vi, g) for vi in g.ordered(s)))
    s_prime = next(d for d in districts if s < d)  # line 7
    p_prime = product(_chain_factor(p, vi, g) for vi in g.ordered(s_prime))
    return _id(y, x & s_prime, p_prime, g.induced(s_prime), top)


def _chain_factor(p: Expr, vi: str, g: ADMG) -> Expr:
    """``P(v_i | v_pi^(i-1))`` of the distribution ``p`` over ``g``'s nodes.

    For the observed joint (``p`` is ``P(V)`` of an ancestral subgraph) the conditioning set
    shrinks to ``vi``'s c-component among its predecessors and that component's parents
    (Tian & Pearl 2002, Lemma 1).
    """
    pred = g.order[: g.order.index(vi)]
    if isinstance(p, Prob) and not p.given and set(p.head) == set(g.order):
        upto = g.induced((*pred, vi))
        comp = next(c for c in upto.districts() if vi in c)
        blanket = set(comp) | {u for c in comp for u in upto.dag.predecessors(c)}
        return Prob((vi,), g.ordered(blanket - {vi}))
    v = frozenset(g.order)
    return ratio(summation(g.ordered(v - {*pred, vi}), p), summation(g.ordered(v - set(pred)), p))


# ====================================================================== the result
@dataclass(frozen=True)
class Identification:
    """How (and whether) ``P(outcome | do(treatment))`` follows from the observed distribution.

    Attributes
    ----------
    treatment, outcome : tuple of str
        The query.
    kind : {"backdoor", "frontdoor", "iv", "general"}
        The strategy that answered it.
    is_identified : bool
        True when the estimand holds nonparametrically; False for ``"iv"``, whose estimand needs
        further assumptions (see ``assumptions``).
    estimand : str
        The estimand as a printable expression.
    adjustment_set : tuple of str or None
        A minimal back-door set, or None if there is none.
    frontdoor_set : tuple of str or None
        A front-door set (one treatment only), or None.
    instruments : tuple of str
        Instrumental variables (one treatment and outcome), possibly empty.
    instrument_conditioning : tuple of str
        The observed set the instruments are valid given (empty: unconditional).
    assumptions : tuple of str
        What the estimand relies on, in plain sentences.
    expression : Expr or None
        The estimand as an expression tree (None for ``"iv"``); see :meth:`evaluate`.
    """

    treatment: tuple[str, ...]
    outcome: tuple[str, ...]
    kind: str
    is_identified: bool
    estimand: str
    adjustment_set: tuple[str, ...] | None = None
    frontdoor_set: tuple[str, ...] | None = None
    instruments: tuple[str, ...] = ()
    instrument_conditioning: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    expression: Expr | None = field(default=None, repr=False)

    @property
    def query(self) -> str:
        """The query in do-notation, e.g. ``P(y | do(t))``."""
        return f"P({', '.join(self.outcome)} | do({', '.join(self.treatment)}))"

    def __str__(self) -> str:
        def names(v):
            return "none" if v is None else "empty" if not v else ", ".join(v)

        status = "identified" if self.is_identified else "not identified nonparametrically"
        lines = [
            f"{self.query}: {self.kind} ({status})",
            f"  estimand:       {self.estimand}",
            f"  adjustment set: {names(self.adjustment_set)}",
            f"  frontdoor set:  {names(self.frontdoor_set)}",
            f"  instruments:    {names(self.instruments or None)}"
            + (f" (given {names(self.instrument_conditioning)})" if self.instrument_conditioning else ""),
            "  assumptions:",
            *(f"    - {a}" for a in self.assumptions),
        ]
        return "\n".join(lines)

    def evaluate(self, joint: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """The estimand's value on a joint probability table of the observed nodes.

        Parameters
        ----------
        joint : numpy.ndarray
            ``P(names)``, one axis per observed node.
        names : sequence of str
            The node of each axis.

        Returns
        -------
        numpy.ndarray
            ``P(outcome | do(treatment))`` with axes ``(*treatment, *outcome)``. Extra free
            variables of a general estimand (its value does not depend on them) are averaged
            over their observed distribution.

        Examples
        --------
        >>> from causal_wm.spec import SCM
        >>> scm = SCM.from_dict({"name": "d", "nodes": {"t": {}, "y": {"formula": "t"}}})
        >>> joint = np.array([[0.3, 0.2], [0.1, 0.4]])          # P(t, y)
        >>> identify(scm, "t", "y").evaluate(joint, ["t", "y"]).tolist()
        [[0.6, 0.4], [0.2, 0.8]]
        """
        if self.expression is None:
            raise QueryError(f"the {self.kind} estimand {self.estimand!r} is not a function of the joint "
                             "distribution alone; it has no table to evaluate.")
        f = evaluate(self.expression, joint, names)
        want = self.treatment + self.outcome
        extra = tuple(v for v in f.variables if v not in want)
        table = f.table
        if extra:
            w = evaluate(Prob(extra), joint, names)
            table = (f.aligned(f.variables) * w.aligned(f.variables)).sum(
                axis=tuple(f.variables.index(v) for v in extra))
            f = Factor(tuple(v for v in f.variables if v not in extra), table)
        shape = [joint.shape[list(names).index(v)] for v in want]
        return np.broadcast_to(f.aligned(want), shape).copy()


# ====================================================================== entry point
def identify(scm, treatment: str | Sequence[str], outcome: str | Sequence[str]) -> Identification:
    """Identify ``P(outcome | do(treatment))`` from the observed variables of ``scm``.

    Parameters
    ----------
    scm : causal_wm.spec.SCM
        The model; its latent nodes are unobserved.
    treatment, outcome : str or sequence of str
        Observed nodes, disjoint.

    Returns
    -------
    Identification

    Raises
    ------
    QueryError
        An unknown or latent node, an empty or overlapping query.
    NotIdentifiable
        No estimand exists (a hedge) and there is no instrument either.
    """
    t, y = _query(scm, treatment, outcome)
    graph, observed = scm.graph, scm.observed
    if not set(y) & set().union(*(nx.descendants(graph, v) for v in t)):
        return _general(scm, t, y, note=(
            f"No directed path leads from {_names(t)} to {_names(y)} in the graph: intervening on "
            f"{_names(t)} leaves {_names(y)}'s distribution unchanged (the effect is zero)."))
    adj = backdoor_set(graph, t, y, observed)
    fd = frontdoor_set(graph, t[0], y, observed) if len(t) == 1 else None
    ivs, cond = instruments(graph, t[0], y[0], observed) if len(t) == len(y) == 1 else ((), ())
    found = {"adjustment_set": adj, "frontdoor_set": fd, "instruments": ivs, "instrument_conditioning": cond}
    if adj is not None:
        return _backdoor(t, y, found)
    if fd is not None:
        return _frontdoor(t, y, found)
    try:
        return _general(scm, t, y, found=found)
    except Hedge as hedge:
        if ivs:
            return _iv(t, y, found, hedge)
        raise NotIdentifiable(_hedge_message(scm, t, y, hedge)) from None


def _names(vs: Sequence[str]) -> str:
    return ", ".join(vs) if len(vs) == 1 else "{" + ", ".join(vs) + "}"


def _query(scm, treatment, outcome) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate the query's names; return them as tuples."""
    out = []
    for role, arg in (("treatment", treatment), ("outcome", outcome)):
        names = (arg,) if isinstance(arg, str) else tuple(arg) if isinstance(arg, Sequence) else None
        if not names or not all(isinstance(n, str) for n in names):
            raise QueryError(f"{role} must be a node name or a non-empty list of node names, got {arg!r}.")
        for n in names:
            if n not in scm.names:
                raise QueryError(f"{role} {n!r} is not a node of model {scm.name!r}.{suggest(n, scm.names)} "
                                 f"Nodes are {list(scm.names)}.")
            if scm.node(n).latent:
                raise QueryError(f"{role} {n!r} is latent (unobserved) in model {scm.name!r}; identification "
                                 "asks what observed data can tell, so name observed nodes (or declare "
                                 f"{n!r} observed if you measure it).")
        out.append(tuple(dict.fromkeys(names)))
    both = sorted(set(out[0]) & set(out[1]))
    if both:
        raise QueryError(f"{both[0]!r} is both treatment and outcome; name it in one of them only.")
    return out[0], out[1]


def _positivity(vs: Sequence[str]) -> str:
    return (f"Positivity: every value of {_names(vs)} has positive probability given the other variables "
            "the estimand conditions on.")


def _backdoor(t, y, found) -> Identification:
    adj = found["adjustment_set"]
    expr = summation(adj, product([Prob(y, t + adj), Prob(adj)])) if adj else Prob(y, t)
    said = (f"Adjusting for {_names(adj)} blocks every back-door path from {_names(t)} to {_names(y)}, and "
            f"none of {_names(adj)} is affected by {_names(t)}." if adj else
            f"No back-door path connects {_names(t)} and {_names(y)}: nothing confounds them, so the "
            "interventional and conditional distributions agree.")
    return Identification(t, y, "backdoor", True, str(expr), **found, expression=expr,
                          assumptions=(_COMPLETE, said, _positivity(t)))


def _frontdoor(t, y, found) -> Identification:
    m = found["frontdoor_set"]
    inner = summation(t, product([Prob(y, t + m), Prob(t)]))
    expr = rename_bound(Sum(m, product([Prob(m, t), inner])), frozenset(t + y))
    said = (
        f"{_names(m)} intercepts every directed path from {_names(t)} to {_names(y)} (full mediation).",
        f"No open back-door path runs from {_names(t)} to {_names(m)} (unconfounded first stage).",
        f"{_names(t)} blocks every back-door path from {_names(m)} to {_names(y)} (second stage "
        "confounded only through the treatment).",
    )
    return Identification(t, y, "frontdoor", True, str(expr), **found, expression=expr,
                          assumptions=(_COMPLETE, *said, _positivity(t + m)))


def _general(scm, t, y, found=None, note=None) -> Identification:
    admg = latent_projection(scm.graph, scm.latent, scm.order)
    expr = id_algorithm(admg, t, y)
    extra = sorted(expr.free - set(t) - set(y), key=admg.order.index)
    said = [_COMPLETE]
    said.append(note or "Derived by the ID algorithm (Shpitser & Pearl 2006) on the latent projection of the "
                        "graph, whose bidirected edges stand for the latent nodes.")
    if extra:
        said.append(f"The estimand's value does not depend on {_names(extra)}: it holds for every value "
                    "(averaging over their observed distribution gives the same number).")
    if note is None:
        said.append(_positivity(t))
    found = found or {}
    return Identification(t, y, "general", True, str(expr), **found, expression=expr, assumptions=tuple(said))


def _iv(t, y, found, hedge: Hedge) -> Identification:
    z, w = found["instruments"], found["instrument_conditioning"]
    cond = f" | {', '.join(w)}" if w else ""
    estimand = f"Cov({y[0]}, {z[0]}{cond}) / Cov({t[0]}, {z[0]}{cond})"
    given = f" given {_names(w)}" if w else ""
    said = (
        _COMPLETE,
        f"{_names(z)} is associated with {t[0]}{given} (relevance).",
        f"{_names(z)} affects {y[0]} only through {t[0]} and shares no unobserved cause with {y[0]}{given} "
        "(exclusion and exogeneity).",
        f"{_hedge_reason(t, y, hedge)} The instrumental ratio identifies the effect only under a further "
        f"assumption: an effect of {t[0]} on {y[0]} that is linear and the same for every unit (or, for "
        f"binary {z[0]} and {t[0]}, monotonicity, which identifies the effect among compliers, LATE). "
        f"With several instruments, two-stage least squares combines them.",
    )
    return Identification(t, y, "iv", False, estimand, **found, assumptions=said)


def _hedge_reason(t, y, hedge: Hedge) -> str:
    via = f" through the latent {', '.join(hedge.confounders)}" if hedge.confounders else ""
    return (f"P({', '.join(y)} | do({', '.join(t)})) is not identified nonparametrically: the graph has a hedge "
            f"(Shpitser & Pearl 2006), the sets {{{', '.join(sorted(hedge.f))}}} ⊇ "
            f"{{{', '.join(sorted(hedge.f_prime))}}}, each tied together by unobserved common causes{via}, "
            "so two models that agree on every observed distribution can disagree on the effect.")


def _hedge_message(scm, t, y, hedge: Hedge) -> str:
    latent = ", ".join(repr(u) for u in hedge.confounders)
    measure = (f"measure {latent}" if len(hedge.confounders) == 1 else
               f"measure one of {latent}" if hedge.confounders else "measure the latent confounders")
    return (
        f"the effect of {_names(t)} on {_names(y)} in model {scm.name!r} is not identifiable from the "
        f"observed variables. {_hedge_reason(t, y, hedge)} To identify it: {measure} "
        f"(declare it observed and collect its data), find an instrument for {_names(t)} (a variable "
        f"that affects {_names(t)} and reaches {_names(y)} only through it), or a mediator that carries "
        f"all of {_names(t)}'s effect on {_names(y)} and shares no unobserved cause with {_names(t)} "
        "(front-door)."
    )


# ====================================================================== DoWhy, for cross-checks
def dowhy_identify(scm, treatment: str | Sequence[str], outcome: str | Sequence[str]):
    """Ask DoWhy's identifier the same question (latent nodes unobserved), quietly.

    Returns DoWhy's ``IdentifiedEstimand`` (back-door, IV and front-door estimands). Its logging
    and warnings are silenced for the call. Used to cross-check :func:`identify`.
    """
    t, y = _query(scm, treatment, outcome)
    logger = logging.getLogger("dowhy")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from dowhy.causal_identifier import EstimandType, identify_effect_auto

            graph = nx.DiGraph()
            graph.add_nodes_from(scm.graph.nodes)
            graph.add_edges_from(scm.graph.edges)
            return identify_effect_auto(graph, list(t), list(y), list(scm.observed), EstimandType.NONPARAMETRIC_ATE)
    finally:
        logger.setLevel(level)
