"""Stage 2, the model specification: one frozen :class:`~hierlmm.spec.model_spec.ModelSpec` from lme4-style or
nlme-style formulas (``model_spec``), or from a declarative TOML model file (``model_files``). A spec is syntax: it
names terms and structures and knows nothing about data.
"""
