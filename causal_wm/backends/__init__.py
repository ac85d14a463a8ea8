"""Backends compile a :class:`~causal_wm.fitting.FitPlan` into a sampler and return an
:class:`arviz.InferenceData` with the parameter names of :mod:`causal_wm.sites`.

They are imported lazily by :func:`causal_wm.fitting.backend_module`; the core never imports them.
"""
