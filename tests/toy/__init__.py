"""A job, model, loss term and evaluator defined outside fmjax (docs/extending.md, "Adding a model, a loss
term, a job or an evaluator", followed once by tests/test_extending.py)."""
