"""Stage 7, reports: printed summaries and the JSON contract (``summaries``), plots (``plots``) and the numbers behind
the teaching app (``explorer``)."""
