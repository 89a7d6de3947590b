"""Stage 5, the engines: ``reml`` (ML/REML estimation, nlme's and lme4's numbers) and ``bayes`` (NUTS on PyMC
models). Each holds, per kind of model, the likelihood or model, the fitting driver and the result type; every
result offers the one interface of :mod:`hierlmm.engines.fit_result`. ``bayes`` may use ``reml`` (to start its
chains), never the reverse.
"""
