"""Stage 3, the design: a spec evaluated on data (lme4's ``lFormula``).

- ``design``: :class:`~hierlmm.design.design.Design`, the response ``y``, the fixed-effects matrix ``X`` and one
  :class:`~hierlmm.design.design.RandomEffectsBlock` per grouping factor (lme4's ``reTrms``, MixedModels.jl's
  ``ReMat``), with missing values reported;
- ``sufficient_stats``: per-subject cross products (``Z_i'Z_i``, ``Z_i'X_i``, ...) of nested designs;
- ``cross_products``: whole-design cross products of crossed designs;
- ``subject_batches``: subjects grouped by size, with the distances between their times, for dense ``V_i``;
- ``time_varying``: a long covariate table turned into columns at the outcome's times (current, lagged,
  cumulative; public as :mod:`hierlmm.tvc`).
"""
