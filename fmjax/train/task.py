"""What the trainer asks of a job: the `Task` protocol, the `Evaluator` protocol, and lookup by name.

A job is a module with a `Task` class (the config names it: `config.job`); an evaluator is a module
with an `Evaluator` class (`config.evals.<name>.type`); a model is a module with a `Model` callable
(`config.model_name`, built with `Model(**config.model)`). A bare name is looked up in fmjax's own
package for that kind (`fmjax.train.tasks`, `fmjax.evals`, `fmjax.models`); a dotted name is a module
path of its own, so a job, evaluator or model outside fmjax needs no edit to fmjax.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax

from fmjax.runtime import errors

Batch = dict[str, Any]
LossOutput = tuple[jax.Array, tuple[dict, dict, Any]]   # (loss, (metrics, model_state, aux))


@runtime_checkable
class Task(Protocol):
  """A job's model, data and objective; the trainer owns devices, optimiser, checkpoints and writers.

  `init` gives the model's variables (`params` plus any other collections, e.g. BatchNorm
  statistics or a codebook's EMA state); `init_aux` the state of nets the loss fits with an
  optimiser of its own (None where there are none). `loss` runs on one device's shard, with
  collectives over `fmjax.runtime.parallel.AXIS`, and returns the new collections and aux state.
  """
  config: Any
  curve_keys: tuple[str, ...]   # the metrics report.md plots

  def init(self, rng: jax.Array, batch: Batch) -> dict: ...

  def init_aux(self, rng: jax.Array, batch: Batch) -> Any: ...

  def loss(self, params: Any, model_state: dict, aux: Any, batch: Batch, rng: jax.Array) -> LossOutput: ...

  def train_batches(self, host_batch: int, seed: int, start_step: int) -> Iterator[Batch]: ...


class Evaluation(NamedTuple):
  """What an evaluator gives: summary entries (scalars go to summary.json and the writers) and a
  function that adds its sections to report.md (or None)."""
  summary: dict[str, Any]
  report: Callable[[Any], None] | None = None


@runtime_checkable
class Evaluator(Protocol):
  """Built as `Evaluator(task, **settings)` from one entry of `config.evals`; `run` evaluates the
  (device-layout) train state."""

  def run(self, par: Any, state: Any) -> Evaluation: ...


PACKAGES = {"Task": "fmjax.train.tasks", "Evaluator": "fmjax.evals", "Model": "fmjax.models"}


def find(name: str, attribute: str) -> Any:
  """`attribute` ('Task', 'Evaluator' or 'Model') of module `name`: `fmjax.<kind package>.<name>`
  for a bare name, else the module path `name` itself."""
  module_name = name if "." in name else f"{PACKAGES[attribute]}.{name}"
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as error:
    if error.name is None or not module_name.startswith(error.name):
      raise  # a module that exists but imports something missing: a real error
    raise errors.ConfigError(f"{name!r}: no module {module_name} to take a {attribute} from") from None
  if not hasattr(module, attribute):
    raise errors.ConfigError(f"{module_name} has no {attribute}: it is not a {attribute.lower()} module")
  return getattr(module, attribute)
