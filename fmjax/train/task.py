"""What the trainer asks of a job: the `Task` protocol.

A job is a module with a `Task` class (the config names it: `config.job`, found by
`fmjax.runtime.registry.find`). The trainer prepares the job's data first (`prepare_data`: all the
I/O), then builds `Task(config, data)`, which does none. A model is a module with a `Model` callable
(`config.model_name`, built with `Model(**config.model)`); evaluators (`fmjax.evals.base`) get the
job's named pure functions (`predict_fns`), the data and the job's sample geometry (`inputs`), never
the task itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import jax
import ml_collections

from fmjax.data import downsampled, tfds_fmf

Batch = dict[str, Any]
LossOutput = tuple[jax.Array, tuple[dict, dict, Any]]   # (loss, (metrics, model_state, aux))


@runtime_checkable
class Task(Protocol):
  """A job's model, data and objective; the trainer owns devices, optimiser, checkpoints and writers.

  `init` gives the model's variables (`params` plus any other collections, e.g. BatchNorm
  statistics or a codebook's EMA state) from the inputs' shapes alone; `init_aux` the state of nets
  the loss fits with an optimiser of its own (None where there are none). `loss` runs on one device's
  shard, with collectives over `fmjax.runtime.parallel.AXIS`, and returns the new collections and aux
  state. `predict_fns` are the pure functions evaluators may use, by name; `inputs` says how the job
  cuts its samples from the data (`fmjax.evals.base.Context`).
  """
  config: Any                   # the job's config (its `seed` seeds the evaluators too)
  data: Any                     # the prepared data it was built on (None for a job without)
  curve_keys: tuple[str, ...]   # the metrics report.md plots
  inputs: dict[str, Any]

  def init(self, rng: jax.Array) -> dict: ...

  def init_aux(self, rng: jax.Array) -> Any: ...

  def loss(self, params: Any, model_state: dict, aux: Any, batch: Batch, rng: jax.Array) -> LossOutput: ...

  def train_batches(self, host_batch: int, seed: int, start_step: int) -> Iterator[Batch]: ...

  def predict_fns(self) -> dict[str, Callable]: ...

  @classmethod
  def prepare(cls, config: ml_collections.ConfigDict) -> "Task":
    """The job built on its prepared data: every piece of I/O the job needs (here `prepare_data`),
    then the constructor, which does none. A job that needs other I/O (another run's config, a
    file of its own) overrides this."""
    return cls(config, prepare_data(config))


def prepare_data(config: ml_collections.ConfigDict) -> tfds_fmf.PreparedFmf:
  """The prepared dataset of `config.data` (generated, prepared as TFDS records on first use), with its
  frames reduced by `config.input.downsample` where the job reads reduced frames: all the data I/O of
  a job, done before the job is built."""
  data = tfds_fmf.load_from_config(config.data)
  if "downsample" in config.input:
    downsampled.ensure(data, config.input.downsample)
  return data
