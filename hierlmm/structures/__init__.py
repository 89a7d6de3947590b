"""The covariance structures a model is built from, each one class that both engines read.

- ``random_effects``: nlme's pd* classes for each block's ``D`` (pdSymm, pdDiag, pdIdent, pdCompSymm, pdBlocked):
  their parameters ``theta``, the factor ``L`` and its Jacobian;
- ``serial_correlation``: cor* structures for ``R_i`` (corExp, corGaus, corAR1, corCAR1, corCompSymm, nuggets);
- ``variance_functions``: var* functions for ``S_i`` (varIdent, varPower, varExp);
- ``error_parameters``: the within-subject error covariance ``sigma^2 S_i R_i S_i`` from their parameters.

Structures know no data set: a spec names them, a design binds them to rows.
"""
