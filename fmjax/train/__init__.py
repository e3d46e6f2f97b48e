"""The trainer: one `loop.train_and_evaluate(config, workdir)` for every job.

A job is found by name (`fmjax.runtime.registry`): the config names a task module (`config.job`, with a
`Task` following the `task.Task` protocol), a model module (`config.model_name`, with
`Model(**config.model)`), and evaluator modules (`config.evals.<name>.type`, each built from the job's
predict functions, data and sample geometry: `fmjax.evals.base`). A loss is a table of named terms summed
with the weights of `config.loss` (`objective`). `step.create_train_state` and `step.make_train_step` are
the state and compiled step the loop runs, public for tests, benchmarks and notebooks.
"""
