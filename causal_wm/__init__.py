"""causal_wm: a probabilistic causal world-model inference engine.

Write a structural causal model (SCM) of a system, fit it to data with NumPyro (default) or
PyMC, and ask intervention and counterfactual questions with posterior uncertainty.

Examples
--------
>>> import causal_wm as cw
>>> scm = cw.load_model("job_training")
>>> scm.parents("treat")
()
"""

from causal_wm.errors import (
    BackendNotInstalled,
    CausalWMError,
    ConvergenceWarning,
    DataError,
    DataWarning,
    FitError,
    FitSettingsError,
    IdentificationWarning,
    ModelSpecError,
    NotIdentifiable,
    QueryError,
    StudyError,
)
from causal_wm.interventions import bernoulli, normal, scale, shift, uniform
from causal_wm.library import list_library, load_model
from causal_wm.spec import SCM, NodeSpec, SCMBuilder

__version__ = "0.1.0"

__all__ = [
    "SCM",
    "BackendNotInstalled",
    "CausalWMError",
    "ConvergenceWarning",
    "DataError",
    "DataWarning",
    "FitError",
    "FitSettingsError",
    "IdentificationWarning",
    "ModelSpecError",
    "NodeSpec",
    "NotIdentifiable",
    "QueryError",
    "SCMBuilder",
    "Study",
    "StudyError",
    "__version__",
    "bernoulli",
    "list_library",
    "load_model",
    "normal",
    "report",
    "scale",
    "shift",
    "uniform",
]


def __getattr__(name):
    # the study runner and the report pull in more (arviz I/O, jinja2, matplotlib): load them on first use
    if name == "Study":
        from causal_wm.study import Study

        return Study
    if name == "report":
        from causal_wm.reporting import render_report

        return render_report
    raise AttributeError(f"module 'causal_wm' has no attribute {name!r}")
