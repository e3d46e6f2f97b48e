"""Evaluators: one module per evaluation, each with an `Evaluator(context, **settings)` class (`fmjax.evals.base`)."""
