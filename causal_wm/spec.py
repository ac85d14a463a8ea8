"""The structural causal model as data: nodes, their mechanisms and priors.

An :class:`SCM` is a frozen value. It is built from a YAML model file (:func:`load_model`), a
dict of the same schema (:meth:`SCM.from_dict`) or the small :class:`SCMBuilder`. Its graph is
derived from the formulas: a node's parents are the variables its formula names.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from causal_wm.errors import DataError, ModelSpecError, suggest
from causal_wm.families import FAMILIES, Family, get_family
from causal_wm.formula import NAME_RE, Formula, parse_formula
from causal_wm.priors import DISTRIBUTIONS, POSITIVE_PARAMS, Prior, default_prior

# Names a node cannot take: the units' dimension of every posterior and the words a formula reads
# as constants. ArviZ's dimensions "chain" and "draw" may name observed nodes (a restaurant chain),
# but not a latent node or a grouping factor, whose posterior values would be named after them.
RESERVED_NAMES = {"unit": "the name of the units' dimension", "True": "a constant in formulas",
                  "False": "a constant in formulas", "None": "a constant in formulas"}
ARVIZ_DIMS = ("chain", "draw")

NODE_KEYS = {"family", "formula", "latent", "priors", "levels", "description", "missing", "type", "range",
             "marginalize"}
MODEL_KEYS = {"name", "description", "data", "nodes", "sources", "assumptions"}
_POSITIVE_DISTS = sorted(d for d, (_, positive) in DISTRIBUTIONS.items() if positive)
MISSING_POLICIES = ("error", "drop", "impute")
# what a declared column type allows the mechanism to be (a linear probability model of a 0/1 column is
# allowed; a count column modelled as categories too)
TYPE_FAMILIES = {
    "real": ("normal", "student_t"),
    "positive": ("lognormal", "normal", "student_t"),
    "count": ("categorical", "negative_binomial", "normal", "poisson", "student_t"),
    "binary": ("bernoulli", "categorical", "normal", "student_t"),
    "category": ("categorical",),
}
DEFAULT_TYPE = {"normal": "real", "student_t": "real", "lognormal": "positive", "bernoulli": "binary",
                "poisson": "count", "negative_binomial": "count", "categorical": "category"}
# families whose missing values NUTS can sample; the others are imputable only as leaves (summed out)
CONTINUOUS = ("normal", "student_t", "lognormal")


@dataclass(frozen=True)
class NodeSpec:
    """One variable of the SCM and its mechanism.

    Attributes
    ----------
    name : str
        Variable name; also its data column.
    family : str
        Family name (see :mod:`causal_wm.families`).
    formula : str or None
        Right-hand side of the mechanism; ``None`` for a root.
    latent : bool
        Unobserved: gets a per-unit posterior instead of a data column.
    priors : tuple of (str, Prior)
        Prior overrides by parameter name (``b``, ``b[term]``, ``sigma``, ...).
    levels : tuple or None
        Category labels of a categorical node, in order (the first is the reference).
    description : str
        Free text for reports.
    auto : bool
        True for grouping factors added because a formula names them without declaring them.
    missing : {"error", "drop", "impute"}
        What fitting does with rows where this node's column is missing (see docs/robustness.md):
        raise a :class:`DataError` (default), leave those rows out (reported), or treat the missing
        values as unknowns with the node's own mechanism as their prior.
    type : str or None
        Declared kind of the column (``binary``, ``count``, ``real``, ``positive``, ``category``),
        checked on the data before sampling; ``None`` means the family's own (see :attr:`column_type`).
    range : tuple of (float or None, float or None) or None
        Declared allowed values ``(lo, hi)`` of the column, either end open (``None``).
    marginalize : bool
        A latent node only: whether the NumPyro backend may integrate it out while fitting, where
        it qualifies (:func:`causal_wm.design.marginal_latents`); ``False`` keeps it sampled per unit.
    """

    name: str
    family: str = "normal"
    formula: str | None = None
    latent: bool = False
    priors: tuple[tuple[str, Prior], ...] = ()
    levels: tuple | None = None
    description: str = ""
    auto: bool = False
    missing: str = "error"
    type: str | None = None
    range: tuple | None = None
    marginalize: bool = True
    parsed: Formula = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME_RE.match(self.name) or "__" in self.name:
            raise ModelSpecError(
                f"node name {self.name!r} is not allowed: use letters, digits and single "
                "underscores, starting with a letter (e.g. 're78', 'min_wage')."
            )
        if self.name in RESERVED_NAMES:
            raise ModelSpecError(
                f"node name {self.name!r} is reserved ({RESERVED_NAMES[self.name]}); rename the node and its "
                f"data column, e.g. '{self.name.lower()}_id' or 'n_{self.name.lower()}'."
            )
        fam = get_family(self.family)
        if self.latent and self.name in ARVIZ_DIMS:
            raise ModelSpecError(
                f"latent node name {self.name!r} is reserved (ArviZ's dimension of {self.name}s, which names its "
                f"posterior draws); rename it, e.g. '{self.name}_factor'."
            )
        if self.latent and fam.name != "normal":
            raise ModelSpecError(
                f"node {self.name!r}: latent nodes must have family 'normal' (a standardised "
                f"unobserved factor), got {self.family!r}."
            )
        object.__setattr__(self, "parsed", parse_formula(self.name, self.formula))
        for g in self.parsed.groups:
            if g.group in ARVIZ_DIMS:
                raise ModelSpecError(
                    f"node {self.name!r}: {g.group!r} cannot group effects ({g.label}): its group-level values "
                    f"would be indexed by a dimension named like ArviZ's {g.group!r}; rename the node and its "
                    f"data column, e.g. '{g.group}_id'."
                )
        if fam.name == "categorical" and self.formula and not self.parsed.intercept:
            raise ModelSpecError(
                f"node {self.name!r}: a categorical node always has one intercept per level (against the "
                f"first); its formula cannot remove it ('0 +' or '- 1'): write {self.formula!r} without it."
            )
        if fam.name == "categorical" and self.parsed.groups:
            raise ModelSpecError(
                f"node {self.name!r}: group terms on categorical nodes are not supported; "
                "add the grouping variable as a main effect instead."
            )
        allowed = {"intercept", "b", "sd", *fam.extra}
        for key, prior in self.priors:
            base = key.split("[", 1)[0]
            if base not in allowed:
                raise ModelSpecError(
                    f"node {self.name!r}: prior for unknown parameter {key!r}; a {fam.name} node "
                    f"has {sorted(allowed)}.{suggest(base, allowed)}"
                )
            if "[" in key and not (key.endswith("]") and key.count("[") == 1 and key.count("]") == 1):
                raise ModelSpecError(
                    f"node {self.name!r}: prior key {key!r} is malformed; write '{base}[term]', "
                    "e.g. 'b[treat]' or 'sd[1|region]'."
                )
            if base in POSITIVE_PARAMS and not prior.positive:
                raise ModelSpecError(
                    f"node {self.name!r}: prior {key!r} is {prior.dist}, but {base} is positive; use "
                    f"a distribution on the positive half-line ({', '.join(_POSITIVE_DISTS)})."
                )
            unused = (
                (base == "b" and not self.parsed.terms)
                or (base == "sd" and not self.parsed.groups)
                or (base == "intercept" and (self.latent or not (self.parsed.intercept or fam.name == "categorical")))
            )
            if unused:
                raise ModelSpecError(
                    f"node {self.name!r}: prior {key!r} would have no effect, because the node has no "
                    f"{'terms' if base == 'b' else 'group terms' if base == 'sd' else 'intercept'}"
                    f"{' (latent nodes have none)' if base == 'intercept' and self.latent else ''}; "
                    "remove it or fix the formula."
                )
            if "[" in key:
                inner = key.split("[", 1)[1].rstrip("]")
                labels = (
                    [t.label for t in self.parsed.terms]
                    if base == "b"
                    else [g.label for g in self.parsed.groups]
                )
                if inner not in labels:
                    raise ModelSpecError(
                        f"node {self.name!r}: prior {key!r} names no term of its formula; "
                        f"terms are {labels}.{suggest(inner, labels)}"
                    )
        for param, labels in (("b", [t.label for t in self.parsed.terms]),
                              ("sd", [g.label for g in self.parsed.groups])):
            # the backends batch one parameter's per-term priors into one distribution
            ps = [self.prior(param, lab) for lab in labels]
            dists = {p.dist for p in ps}
            if len(set(ps)) > 1 and dists not in ({"normal"}, {"halfnormal"}):
                raise ModelSpecError(
                    f"node {self.name!r}: per-term priors of {param!r} use {sorted(dists)}; terms of one "
                    "parameter may differ in their parameters only, so give them one distribution "
                    f"(e.g. all {'normal' if param == 'b' else 'halfnormal'})."
                )
        if self.levels is not None and fam.name != "categorical":
            raise ModelSpecError(
                f"node {self.name!r}: 'levels' is only for categorical nodes (family is {fam.name})."
            )
        self._check_column_keys()

    def _check_column_keys(self) -> None:
        """``missing``, ``type`` and ``range`` describe the data column: valid values, consistent with the family."""
        if self.missing not in MISSING_POLICIES:
            raise ModelSpecError(
                f"node {self.name!r}: 'missing' must be one of {list(MISSING_POLICIES)}, got {self.missing!r}."
                f"{suggest(str(self.missing), MISSING_POLICIES)}"
            )
        if not self.latent and not self.marginalize:
            raise ModelSpecError(
                f"node {self.name!r}: 'marginalize' applies to latent nodes only (whether the fit integrates "
                "one out); remove it, or add 'latent: true' if the node is unobserved."
            )
        if self.latent and (self.missing != "error" or self.type is not None or self.range is not None):
            raise ModelSpecError(
                f"node {self.name!r} is latent, so it has no data column: remove 'missing', 'type' and 'range'."
            )
        if self.type is not None:
            if not isinstance(self.type, str) or self.type not in TYPE_FAMILIES:
                raise ModelSpecError(
                    f"node {self.name!r}: 'type' must be one of {sorted(TYPE_FAMILIES)}, got {self.type!r}."
                    f"{suggest(str(self.type), TYPE_FAMILIES)}"
                )
            if self.family not in TYPE_FAMILIES[self.type]:
                raise ModelSpecError(
                    f"node {self.name!r}: a {self.type} column cannot come from a {self.family} mechanism; "
                    f"for type {self.type} use family {' or '.join(sorted(TYPE_FAMILIES[self.type]))}, or "
                    "change 'type'."
                )
        if self.range is not None:
            r = self.range
            ok = (isinstance(r, tuple) and len(r) == 2
                  and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == v)
                          for v in r))
            if not ok:
                raise ModelSpecError(
                    f"node {self.name!r}: 'range' must be [low, high] with numbers or null for an open end, "
                    f"got {list(r) if isinstance(r, tuple) else r!r}."
                )
            if r[0] is not None and r[1] is not None and r[0] > r[1]:
                raise ModelSpecError(f"node {self.name!r}: 'range' [{r[0]}, {r[1]}] has low > high; swap them.")
            if self.column_type == "category":
                raise ModelSpecError(
                    f"node {self.name!r}: 'range' needs numbers, but the column holds categories; remove it "
                    "(list the categories in 'levels' instead)."
                )

    @property
    def column_type(self) -> str:
        """The declared ``type`` of the column, or the one its family implies (bernoulli: binary, ...)."""
        return self.type if self.type is not None else DEFAULT_TYPE[self.family]

    @property
    def fam(self) -> Family:
        """The node's :class:`~causal_wm.families.Family`."""
        return FAMILIES[self.family]

    @property
    def parents(self) -> frozenset[str]:
        """The variables the formula names."""
        return self.parsed.variables

    def prior(self, param: str, label: str | None = None) -> Prior:
        """The prior of ``param`` (optionally for one term ``label``): override or default."""
        table = dict(self.priors)
        if label is not None and f"{param}[{label}]" in table:
            return table[f"{param}[{label}]"]
        if param in table:
            return table[param]
        return default_prior(param, self.family)

    def to_dict(self) -> dict[str, Any]:
        """The node as it is written in a model file."""
        d: dict[str, Any] = {"family": self.family}
        if self.formula:
            d["formula"] = self.formula
        if self.latent:
            d["latent"] = True
        if self.priors:
            d["priors"] = {k: p.to_dict() for k, p in self.priors}
        if self.levels is not None:
            d["levels"] = list(self.levels)
        if self.description:
            d["description"] = self.description
        if self.missing != "error":
            d["missing"] = self.missing
        if self.type is not None:
            d["type"] = self.type
        if self.range is not None:
            d["range"] = list(self.range)
        if not self.marginalize:
            d["marginalize"] = False
        return d


def _number_text(v: Any) -> Any:
    """A number written as text (``'1e6'``) as a float; anything else unchanged (validated later)."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _node_from_dict(name: str, d: Any) -> NodeSpec:
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise ModelSpecError(
            f"node {name!r}: expected a mapping like {{family: normal, formula: 'a + b'}}, "
            f"got {type(d).__name__} {d!r}."
        )
    unknown = set(d) - NODE_KEYS
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise ModelSpecError(
            f"node {name!r}: unknown key {key!r}; allowed keys are {sorted(NODE_KEYS)}."
            f"{suggest(key, NODE_KEYS)}"
        )
    priors = d.get("priors") or {}
    if not isinstance(priors, Mapping):
        raise ModelSpecError(f"node {name!r}: 'priors' must be a mapping of parameter -> prior.")
    latent = d.get("latent", False)
    if not isinstance(latent, bool):
        raise ModelSpecError(f"node {name!r}: 'latent' must be true or false, got {latent!r}.")
    marginalize = d.get("marginalize", True)
    if not isinstance(marginalize, bool):
        raise ModelSpecError(f"node {name!r}: 'marginalize' must be true or false, got {marginalize!r}.")
    levels = d.get("levels")
    if levels is not None:
        if not isinstance(levels, (list, tuple)) or not all(isinstance(v, (str, int, float, bool)) for v in levels):
            raise ModelSpecError(
                f"node {name!r}: 'levels' must be a list of category labels (strings or numbers), "
                f"got {levels!r}."
            )
        if len(levels) < 2 or len(set(levels)) != len(levels):
            raise ModelSpecError(
                f"node {name!r}: 'levels' must be a list of at least two distinct categories."
            )
        levels = tuple(levels)
    family = d.get("family", "normal")
    if not isinstance(family, str):
        raise ModelSpecError(f"node {name!r}: 'family' must be a string, got {family!r}.")
    rng = d.get("range")
    if rng is not None and (not isinstance(rng, (list, tuple)) or len(rng) != 2):
        raise ModelSpecError(
            f"node {name!r}: 'range' must be [low, high] (null for an open end), got {rng!r}."
        )
    if rng is not None:  # PyYAML reads 1e6 (no sign in the exponent) as the string '1e6'
        rng = tuple(_number_text(v) for v in rng)
    return NodeSpec(
        name=name,
        family=family,
        formula=d.get("formula"),
        latent=latent,
        priors=tuple((str(k), Prior.from_dict(v, where=f"{name}.{k}")) for k, v in priors.items()),
        levels=levels,
        description=str(d.get("description", "") or ""),
        missing=d.get("missing", "error"),
        type=d.get("type"),
        range=None if rng is None else tuple(rng),
        marginalize=marginalize,
    )


def check_folder_name(name, what: str, error) -> None:
    """Raise ``error`` unless ``name`` can name a results folder: text without slashes, not ``.``
    or ``..``, printable, at most 100 characters. Results go to ``out/<name>/``, replacing an older
    folder of that name, so a name like ``../x`` must not reach outside ``out``.

    Examples
    --------
    >>> check_folder_name("job_training", "model name", ModelSpecError)
    >>> check_folder_name("../home", "model name", ModelSpecError)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    causal_wm.errors.ModelSpecError: model name '../home' cannot name a results folder: ...
    """
    ok = (isinstance(name, str) and 0 < len(name) <= 100 and name not in (".", "..")
          and "/" not in name and "\\" not in name and name.isprintable())
    if not ok:
        raise error(f"{what} {name!r} cannot name a results folder: use letters, digits, '_', '-' and '.' "
                    "(no slashes, not '.' or '..', at most 100 characters).")


@dataclass(frozen=True)
class SCM:
    """A structural causal model: named nodes, each a mechanism of its parents plus noise.

    Build one with :func:`load_model`, :meth:`from_dict` or :class:`SCMBuilder`.

    Examples
    --------
    >>> scm = SCM.from_dict({"name": "toy", "nodes": {
    ...     "x": {"family": "normal"},
    ...     "t": {"family": "bernoulli", "formula": "x"},
    ...     "y": {"family": "normal", "formula": "t + x"}}})
    >>> scm.order
    ('x', 't', 'y')
    >>> sorted(scm.graph.predecessors("y"))
    ['t', 'x']
    """

    name: str
    nodes: tuple[NodeSpec, ...]
    description: str = ""
    data: tuple[tuple[str, Any], ...] = ()
    source: str | None = None

    def __post_init__(self):
        if not self.nodes:
            raise ModelSpecError(f"model {self.name!r} has no nodes; declare at least one under 'nodes:'.")
        names = [n.name for n in self.nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ModelSpecError(f"model {self.name!r}: node {dupes[0]!r} is declared twice.")
        declared = set(names)
        extra: list[NodeSpec] = []
        for n in self.nodes:
            group_vars = {g.group for g in n.parsed.groups}
            for p in sorted(n.parents):
                if p in declared:
                    continue
                if p in group_vars and p not in {e.name for e in extra}:
                    extra.append(NodeSpec(p, "categorical", auto=True,
                                          description="grouping factor (added automatically)"))
                elif p not in group_vars:
                    raise ModelSpecError(
                        f"model {self.name!r}: node {n.name!r} names parent {p!r}, which is not a "
                        f"node.{suggest(p, declared)} Declare it under 'nodes:' (use "
                        "'latent: true' if it is unobserved)."
                    )
        for n in self.nodes:
            for g in n.parsed.groups:
                grp = next(m for m in (*self.nodes, *extra) if m.name == g.group)
                if grp.family != "categorical":
                    raise ModelSpecError(
                        f"node {n.name!r}: grouping variable {g.group!r} must be categorical, "
                        f"but it is declared with family {grp.family!r}."
                    )
        if extra:
            object.__setattr__(self, "nodes", tuple(extra) + tuple(self.nodes))
        self.graph  # noqa: B018 - builds the graph now so that a cycle fails at construction
        for n in self.nodes:
            kids = sorted(self.graph.successors(n.name))
            if n.missing == "impute" and n.family not in CONTINUOUS and kids:
                raise ModelSpecError(
                    f"model {self.name!r}: node {n.name!r} is {n.family} with 'missing: impute' and has children "
                    f"{kids}. NUTS cannot sample discrete missing values, and summing them out is done only for "
                    "a node without children; use 'missing: drop' for this node (or make it a leaf)."
                )

    # ------------------------------------------------------------------ structure
    @functools.cached_property
    def graph(self) -> nx.DiGraph:
        """The causal graph: an edge ``parent -> child`` for every variable a formula names."""
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.name, family=n.family, latent=n.latent)
        for n in self.nodes:
            for p in n.parents:
                g.add_edge(p, n.name)
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            path = " -> ".join([e[0] for e in cycle] + [cycle[0][0]])
            raise ModelSpecError(
                f"model {self.name!r} has a cycle: {path}. An SCM must be acyclic; remove one "
                "of these edges from the formulas (or model the feedback over time with lagged "
                "variables)."
            )
        return g

    @functools.cached_property
    def order(self) -> tuple[str, ...]:
        """Node names in a topological order (stable: ties keep declaration order)."""
        pos = {n.name: i for i, n in enumerate(self.nodes)}
        return tuple(nx.lexicographical_topological_sort(self.graph, key=lambda v: pos[v]))

    @property
    def names(self) -> tuple[str, ...]:
        """Node names in declaration order."""
        return tuple(n.name for n in self.nodes)

    def node(self, name: str) -> NodeSpec:
        """The :class:`NodeSpec` called ``name``; :class:`ModelSpecError` if there is none."""
        for n in self.nodes:
            if n.name == name:
                return n
        from causal_wm.errors import QueryError

        raise QueryError(
            f"{name!r} is not a node of model {self.name!r}.{suggest(name, self.names)} "
            f"Nodes are {list(self.names)}."
        )

    def parents(self, name: str) -> tuple[str, ...]:
        """The parents of ``name`` in topological order."""
        self.node(name)
        ps = set(self.graph.predecessors(name))
        return tuple(v for v in self.order if v in ps)

    def descendants(self, names) -> frozenset[str]:
        """Every node downstream of any of ``names`` (excluding the names themselves)."""
        out: set[str] = set()
        for n in names:
            self.node(n)  # an unknown name is a QueryError with a suggestion, not a networkx error
            out |= nx.descendants(self.graph, n)
        return frozenset(out)

    def identify(self, treatment, outcome):
        """Identify ``P(outcome | do(treatment))`` from the observed nodes (latent nodes are unobserved).

        Tries back-door adjustment, front-door adjustment, then the ID algorithm on the graph's
        latent projection; where none applies, instrumental variables (identified only under
        further assumptions). See :mod:`causal_wm.identify`.

        Parameters
        ----------
        treatment : str or list of str
            The intervened node(s); observed.
        outcome : str or list of str
            The outcome node(s); observed, disjoint from ``treatment``.

        Returns
        -------
        causal_wm.identify.Identification
            ``kind``, ``is_identified``, ``estimand``, ``adjustment_set``, ``frontdoor_set``,
            ``instruments`` and ``assumptions``.

        Raises
        ------
        QueryError
            An unknown or latent node, or an empty or overlapping query.
        NotIdentifiable
            The graph has a hedge for the query and offers no instrument.

        Examples
        --------
        >>> scm = SCM.from_dict({"name": "toy", "nodes": {
        ...     "c": {}, "t": {"formula": "c"}, "y": {"formula": "t + c"}}})
        >>> scm.identify(treatment="t", outcome="y").estimand
        'sum_{c} P(y | t, c) P(c)'
        """
        from causal_wm.identify import identify

        return identify(self, treatment, outcome)

    @property
    def observed(self) -> tuple[str, ...]:
        """Names of nodes that must be data columns (topological order)."""
        return tuple(v for v in self.order if not self.node(v).latent)

    @property
    def latent(self) -> tuple[str, ...]:
        """Names of latent nodes (topological order)."""
        return tuple(v for v in self.order if self.node(v).latent)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: Mapping, source: str | None = None, lines: Mapping | None = None) -> SCM:
        """Build an SCM from a mapping with the model-file schema.

        ``lines`` maps node names to line numbers in ``source`` for error messages.
        """
        where = f" (file {source})" if source else ""
        if not isinstance(d, Mapping):
            raise ModelSpecError(f"a model must be a mapping with 'name' and 'nodes'{where}.")
        unknown = set(d) - MODEL_KEYS
        if unknown:
            key = sorted(map(str, unknown))[0]
            line = (lines or {}).get(key)
            loc = f" [{source}, line {line}]" if source and line else where
            raise ModelSpecError(
                f"unknown top-level key {key!r}{loc}; allowed keys are {sorted(MODEL_KEYS)}."
                f"{suggest(key, MODEL_KEYS)}"
            )
        nodes_d = d.get("nodes")
        if not isinstance(nodes_d, Mapping) or not nodes_d:
            raise ModelSpecError(
                f"model{where} needs 'nodes:', a mapping of node name -> "
                "{family: ..., formula: ...}."
            )
        nodes = []
        for name, nd in nodes_d.items():
            if not isinstance(name, str):  # e.g. `on:` or `no:` read by YAML as a boolean, `null:` as None
                raise ModelSpecError(
                    f"node name {name!r}{where} is not text: YAML reads unquoted yes/no/on/off/true/false as "
                    "booleans, null or ~ as nothing and digits as numbers. Quote the name (e.g. 'on': {...}) "
                    "or rename the node."
                )
            try:
                nodes.append(_node_from_dict(str(name), nd))
            except ModelSpecError as exc:
                line = (lines or {}).get(str(name))
                loc = f" [{source}, line {line}]" if source and line else where
                raise ModelSpecError(f"{exc}{loc}") from None
        name = d.get("name") or (Path(source).stem if source else "model")
        if isinstance(name, (int, float, datetime.date)) and not isinstance(name, bool):
            name = str(name)  # `name: 2024` reads as a number
        check_folder_name(name, f"model name{where}", ModelSpecError)
        data = d.get("data") or {}
        if not isinstance(data, Mapping):
            raise ModelSpecError(
                f"'data'{where} must be a mapping like {{path: data.csv}} or "
                "{package: causaldata, table: nsw_mixtape}."
            )
        try:
            return cls(
                name=str(name),
                nodes=tuple(nodes),
                description=str(d.get("description", "") or ""),
                data=tuple(data.items()),
                source=source,
            )
        except ModelSpecError as exc:
            raise ModelSpecError(f"{exc}{where}") from None

    def to_dict(self) -> dict[str, Any]:
        """The model as a mapping with the model-file schema (round-trips through from_dict)."""
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        if self.data:
            d["data"] = dict(self.data)
        d["nodes"] = {n.name: n.to_dict() for n in self.nodes if not n.auto}
        return d

    # ------------------------------------------------------------------ fitting
    def fit(self, data, backend: str = "numpyro", **kwargs):
        """Fit the model to a DataFrame and return a :class:`~causal_wm.posterior.Posterior`.

        Parameters
        ----------
        data : pandas.DataFrame
            One row per unit, one column per observed node (grouping factors included).
        backend : {"numpyro", "pymc"}
            Which probabilistic programming backend samples the posterior.
        **kwargs
            NUTS: ``chains``, ``draws``, ``warmup``, ``target_accept``, ``dense_mass``, ``seed``,
            ``progress``, ``sampler`` (PyMC: "default", "pymc", "nutpie", "numpyro", "blackjax"). ``method="svi"``
            (NumPyro) fits a variational approximation instead: ``guide`` ("lowrank", "normal" or
            "mvn"), ``steps`` (5,000), ``learning_rate`` (Adam, 0.05), and ``draws`` x ``chains`` draws
            from it. See docs/fitting.md, and :class:`causal_wm.fitting.FitSettings` for every setting.
        """
        from causal_wm.fitting import fit

        return fit(self, data, backend=backend, **kwargs)

    def to_pymc(self, data):
        """The :class:`pymc.Model` this SCM compiles to for ``data`` (for PyMC power users).

        It has the same parameter names and dims as the NumPyro backend; ``pm.do`` and
        ``pm.observe`` work on it as on any PyMC model. Its variables are on the internal scale
        (docs/models.md, "The internal scale"): a continuous node is observed standardised, as
        ``(y - center) / scale`` with ``post.plan.scales[name]`` (``log y`` for lognormal), so an effect
        computed on it with ``pm.do`` is in units of the outcome's SD, and intervention values must be
        standardised the same way; ``post.effect`` does both for you. ``pm.sample_posterior_predictive``
        redraws every observed variable that the posterior group lacks, roots included: to average
        over the data's own units, as ``post.effect`` does, fix the roots too (``pm.do(model, {"t": ...,
        "c": standardised observed c})``); otherwise the predictive is over a fresh population.
        """
        from causal_wm.fitting import backend_module, make_plan

        return backend_module("pymc").make_model(make_plan(self, data))

    def load_data(self, base: str | Path | None = None):
        """Load the model's declared data (``data:`` in the file: one source, or several stacked or
        joined, with filters and derived columns; see :mod:`causal_wm.integration`) as a DataFrame."""
        from causal_wm.integration import load_data

        if not self.data:
            raise ModelSpecError(f"model {self.name!r} declares no 'data:' source.")
        base = base if base is not None else (Path(self.source).parent if self.source else None)
        try:
            return load_data(dict(self.data), base=base).frame
        except DataError as exc:
            if not self.source:
                raise
            raise DataError(f"{str(exc).rstrip('.')} (the 'data:' of model file {self.source}).") from None


class SCMBuilder:
    """A small programmatic builder of :class:`SCM` values.

    Examples
    --------
    >>> scm = (SCMBuilder("toy").node("x").node("y", "normal", "x").build())
    >>> scm.parents("y")
    ('x',)
    """

    def __init__(self, name: str, description: str = ""):
        self._name = name
        self._description = description
        self._nodes: dict[str, dict] = {}

    def node(self, name: str, family: str = "normal", formula: str | None = None, **options) -> SCMBuilder:
        """Add node ``name`` with ``family`` and ``formula`` (and any model-file node keys)."""
        if name in self._nodes:
            raise ModelSpecError(f"node {name!r} was added twice; give each node once (change it by building "
                                 "again, or edit the dict of SCM.to_dict() and use SCM.from_dict).")
        self._nodes[name] = {"family": family, "formula": formula, **options}
        return self

    def build(self) -> SCM:
        """Validate and return the :class:`SCM`."""
        return SCM.from_dict({"name": self._name, "description": self._description, "nodes": self._nodes})
