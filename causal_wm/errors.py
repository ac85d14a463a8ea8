"""The error family of causal_wm.

Every error a user can fix is a :class:`CausalWMError`, and also subclasses the matching
builtin so that ``except ValueError`` keeps working. Messages name the culprit, what was
expected and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CausalWMError(Exception):
    """Base class of every error raised by causal_wm for a problem the user can fix."""


class ModelSpecError(CausalWMError, ValueError):
    """The model specification is malformed: a cycle, unknown parent, bad family or prior."""


class DataError(CausalWMError, ValueError):
    """The data do not fit the model: missing column, NaN, wrong type, out of support."""


class QueryError(CausalWMError, ValueError):
    """A query names an unknown variable, intervenes on a non-node, or is malformed."""


class NotIdentifiable(CausalWMError, ValueError):
    """The causal graph cannot identify the query from observed data."""


class FitError(CausalWMError, RuntimeError):
    """The backend failed to fit the model (e.g. non-finite log-density at the start)."""


class FitSettingsError(FitError, QueryError):
    """A fit setting is invalid (``chains=0``, ``target_accept=1.5``, an unknown setting). A
    :class:`FitError`, as fitting problems are; also a :class:`QueryError`, as it was before."""


class StudyError(CausalWMError, ValueError):
    """A study file is malformed or its expectations failed."""


class BackendNotInstalled(CausalWMError, ImportError):
    """An optional backend is not installed; the message gives the install line."""


class IdentificationWarning(UserWarning):
    """The query is not identified by the graph: the answer rests on parametric assumptions alone."""


class DataWarning(UserWarning):
    """The data fit the model but will make some estimates rest on the prior or on a poor family
    (perfect separation, excess zeros; see :mod:`causal_wm.data_checks`); found before sampling."""


class ConvergenceWarning(UserWarning):
    """The sampler did not converge (R-hat, ESS or divergences); results are flagged."""


def suggest(name: str, candidates: Iterable[str]) -> str:
    """Return a "did you mean" hint for ``name`` among ``candidates`` (or an empty string).

    Examples
    --------
    >>> suggest("tret", ["treat", "age"])
    " Did you mean 'treat'?"
    """
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""
