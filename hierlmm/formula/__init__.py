"""Stage 1, the formula language: R expressions and formulas, parsed safely (nothing is evaluated as Python).

``expression`` (tokenizer, parser, deparser of R expressions) -> ``terms`` (R's formula algebra: terms and
random-effects bars) -> ``evaluation`` (variables on data, whitelisted functions) with ``transforms`` (``ns``,
``bs``, ``poly``) -> ``model_matrix`` (R's ``model.matrix`` and contrasts).
"""
