"""Reading a finished run: `read(source)` gives its config and weights, for every reader of another run
(the trainer's `init_from`, the transfer job, the warning evaluator's `fmformer_from`, notebooks)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import optax

from fmjax.runtime import registry
from fmjax.train import checkpoint, initialize
from fmjax.train.state import TrainState


JOB_NAMES = {"fmformer": ("FmFormer", "an"), "pretrain": ("pretrain", "a"), "align": ("align", "an")}  # in errors


class Run(NamedTuple):
  """A finished run: its saved config and its variables (`params` and the model's other collections)."""
  config: ml_collections.ConfigDict
  variables: dict
  aux: Any = None


def read(workdir: str, job: str | None = None) -> Run:
  """The run in `workdir`: its config and the weights of its newest intact checkpoint. With `job`, a
  run of another job is a CheckpointError."""
  name, article = JOB_NAMES.get(job, (job, "a"))
  config = checkpoint.run_config(workdir, job, name, article)
  model = model_of(config)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **_example(model)))
  state = TrainState.create(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), variables), optax.identity())
  state = initialize.load_into(state, workdir)
  return Run(config, jax.device_get(state.variables()))


def model_of(config: ml_collections.ConfigDict) -> Any:
  """`Model(**config.model)` of the run's `model_name`."""
  return registry.find(config.get("model_name", config.job), "Model")(**config.model)


def _example(model) -> dict:
  return {name: np.zeros((1,) + model.example_shape(name), np.float32) for name in model.inputs}
