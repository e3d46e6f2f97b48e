"""Evaluators: one module per evaluation, each with an `Evaluator(task, **settings)` class (fmjax.train.task)."""
