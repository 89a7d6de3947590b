"""Time-varying covariates (the chapter's 3.8): a long covariate table turned into a column at the outcome's visits.

Three association structures, each a function of the outcome table ``data`` (one row per visit) and the covariate
table (one row per measurement, possibly ``data`` itself), returning a :class:`pandas.Series` aligned with ``data``::

    import hierlmm
    pbc2 = hierlmm.datasets.load("pbc2")
    pbc2["cumPro"] = hierlmm.tvc.cumulative(pbc2, pbc2, id="id", time="year", value="prothrombin")
    fit = hierlmm.fit("log(serBilir) ~ ns(year, 2) + sex + age + cumPro", pbc2,
                      random={"id": hierlmm.pdDiag("~ ns(year, 2)")})

- :func:`current`: ``x_i(t_ij)``, the covariate at the visit (interpolated, ``how="linear"``, or carried forward,
  ``how="locf"``, when it was not measured then);
- :func:`lagged`: ``x_i(t_ij - lag)``, with a stated rule (``before=``) at the start of follow-up;
- :func:`cumulative`: ``integral_{t_i1}^{t_ij} x_i(s) ds``, the area since the first visit (``average=True``
  divides by the elapsed time; ``upto="last"`` integrates to the subject's last visit: a subject-level summary that
  uses later measurements, not a time-varying effect).

Only an exogenous covariate belongs in a mixed model this way; an endogenous one (affected by the outcome process)
needs a joint model. The definitions, rules and the chapter's PBC models are in ``docs/time_varying_covariates.md``;
the implementation is :mod:`hierlmm.design.time_varying`.
"""

from hierlmm.design.time_varying import cumulative, current, lagged

__all__ = ["current", "cumulative", "lagged"]
