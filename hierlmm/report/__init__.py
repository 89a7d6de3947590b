"""Stage 7, reports: printed summaries and the JSON contract (``summaries``), plots (``plots``), nlme's diagnostic
plots (``diagnostic_plots``) the semi-variogram's (``residual_plots``), the posterior checks' (``check_plots``),
effect and shrinkage plots (``interpretation_plots``), and the numbers behind the teaching app (``explorer``)."""
