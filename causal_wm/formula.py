"""Parse a node's formula (right-hand side only) into terms, with the formulae library.

A formula such as ``"treat + age*educ + (1 + x | region)"`` becomes population-level terms
(products of variables), an intercept flag and group-level terms. Only plain variables are
allowed: calls like ``log(x)`` are code, and model files are data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from causal_wm.errors import ModelSpecError

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Everything a formula may contain: names, 0/1, whitespace and the operators + - : * ( ) |.
_NOT_ALLOWED_RE = re.compile(r"[^A-Za-z0-9_\s+\-:*()|]")
_HELP = ("use variable names combined with '+', ':', '*' and group terms '(1 | g)' or '(x | g)'. "
         "For a transformed variable (a power, log, ratio ...) add a derived column to the data instead.")


@dataclass(frozen=True)
class Term:
    """A population-level term: the product of its variables (``a:b`` is ``("a", "b")``)."""

    variables: tuple[str, ...]

    @property
    def label(self) -> str:
        """The term as written in a formula, e.g. ``"a:b"``."""
        return ":".join(self.variables)


@dataclass(frozen=True)
class GroupTerm:
    """A group-level effect: an intercept (``variables == ()``) or slope varying by ``group``."""

    group: str
    variables: tuple[str, ...]

    @property
    def label(self) -> str:
        """``"1|region"`` or ``"x|region"``."""
        return f"{':'.join(self.variables) or '1'}|{self.group}"


@dataclass(frozen=True)
class Formula:
    """A parsed right-hand side.

    Examples
    --------
    >>> f = parse_formula("y", "a + b:c + (1 | g)")
    >>> [t.label for t in f.terms], f.intercept, [g.label for g in f.groups]
    (['a', 'b:c'], True, ['1|g'])
    >>> sorted(f.variables)
    ['a', 'b', 'c', 'g']
    """

    terms: tuple[Term, ...]
    groups: tuple[GroupTerm, ...]
    intercept: bool

    @property
    def variables(self) -> frozenset[str]:
        """Every variable the formula names (the node's parents), grouping factors included."""
        names: set[str] = set()
        for t in self.terms:
            names.update(t.variables)
        for g in self.groups:
            names.add(g.group)
            names.update(g.variables)
        return frozenset(names)


def _term_variables(term, node: str, formula: str) -> tuple[str, ...]:
    out = []
    for comp in term.components:
        kind = type(comp).__name__
        if kind != "Variable":
            raise ModelSpecError(
                f"node {node!r}: formula {formula!r} uses {comp!s}, but only plain variable names "
                "are allowed (model files are data, not code). Add a derived column to the data "
                "instead."
            )
        if not isinstance(comp.name, str) or not NAME_RE.match(comp.name):
            raise ModelSpecError(
                f"node {node!r}: formula {formula!r} names {comp.name!r}, which is not a variable "
                f"name (numbers other than the intercept's 0 or 1 are not allowed); {_HELP}"
            )
        out.append(comp.name)
    return tuple(out)


def _check_text(node: str, rhs: str) -> None:
    """Reject operators that formulae would silently reinterpret or drop (``x**2`` becomes ``x``)."""
    bad = "**" if "**" in rhs else next(iter(_NOT_ALLOWED_RE.findall(rhs)), None)
    if bad is not None:
        raise ModelSpecError(f"node {node!r}: formula {rhs!r} uses {bad!r}, which is not allowed; {_HELP}")
    depth = 0
    for ch in rhs:
        depth += (ch == "(") - (ch == ")")
        if ch == "|" and depth == 0:
            raise ModelSpecError(
                f"node {node!r}: formula {rhs!r} has '|' outside parentheses; write group terms as "
                "'(1 | g)' or '(x | g)'."
            )


def parse_formula(node: str, rhs: str | None) -> Formula:
    """Parse the right-hand side ``rhs`` of node ``node``'s formula.

    An empty or missing formula means an intercept-only (root) mechanism.
    """
    if rhs is None or str(rhs).strip() == "":
        return Formula((), (), True)
    if not isinstance(rhs, str):
        raise ModelSpecError(
            f"node {node!r}: formula must be a string like 'a + b', got {type(rhs).__name__}."
        )
    if "~" in rhs:
        raise ModelSpecError(
            f"node {node!r}: write only the right-hand side of the formula (no '~'): "
            f"the node itself is the response. Got {rhs!r}."
        )
    _check_text(node, rhs)
    from formulae import model_description

    try:
        desc = model_description(f"{node} ~ {rhs}")
    except Exception as exc:  # formulae raises several parse error types
        raise ModelSpecError(
            f"node {node!r}: cannot parse formula {rhs!r}: {exc}. Use terms like 'a + b', "
            "'a:b', 'a*b', '(1 | g)' or '(x | g)'."
        ) from None
    terms: list[Term] = []
    groups: list[GroupTerm] = []
    intercept = False
    for t in desc.terms:
        kind = type(t).__name__
        if kind == "Intercept":
            intercept = True
        elif kind == "Term":
            vs = _term_variables(t, node, rhs)
            if len(set(vs)) != len(vs):
                raise ModelSpecError(f"node {node!r}: term {':'.join(vs)!r} repeats a variable.")
            terms.append(Term(vs))
        elif kind == "GroupSpecificTerm":
            gvars = _term_variables(t.factor, node, rhs)
            if len(gvars) != 1:
                raise ModelSpecError(
                    f"node {node!r}: group term with factor {':'.join(gvars)!r}; "
                    "only a single grouping variable is supported, e.g. '(1 | region)'."
                )
            expr = () if type(t.expr).__name__ == "Intercept" else _term_variables(t.expr, node, rhs)
            groups.append(GroupTerm(gvars[0], expr))
        else:
            raise ModelSpecError(
                f"node {node!r}: formula {rhs!r} has an unsupported term {t!s}; "
                "use main effects, interactions and group terms only."
            )
    for name in Formula(tuple(terms), tuple(groups), intercept).variables:
        if name == node:
            raise ModelSpecError(
                f"node {node!r} names itself in its formula {rhs!r}; a node cannot cause itself."
            )
    return Formula(tuple(terms), tuple(groups), intercept)
