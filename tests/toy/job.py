"""A toy job: tell which of two noisy current levels a sample has. Model, loss terms, task, evaluator."""

import functools

import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from fmjax.evals.base import Evaluation
from fmjax.runtime import registry
from fmjax.train import objective, task


class Model(nn.Module):
  """A linear classifier of the mean current; takes inputs by name, needs `current`."""
  num_classes: int = 2
  inputs = ("current",)

  @nn.compact
  def __call__(self, video=None, current=None, train: bool = False):
    return nn.Dense(self.num_classes)(current.mean(axis=1))


def cross_entropy(outputs: dict, batch: dict):
  return optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], batch["label"]).mean()


def logit_l2(outputs: dict, batch: dict):
  """A new loss term: keeps the logits small; its accuracy beside it."""
  return jnp.mean(outputs["logits"] ** 2), {"accuracy": jnp.mean(outputs["logits"].argmax(-1) == batch["label"])}


LOSS_TERMS = {"cross_entropy": cross_entropy, "logit_l2": logit_l2}


def toy_batch(size: int, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  label = rng.integers(0, 2, size).astype(np.int32)
  current = (label[:, None, None] * 2.0 - 1.0 + rng.normal(size=(size, 8, 3))).astype(np.float32)
  return {"current": current, "label": label}


class Task(task.Task):
  curve_keys = ("loss", "logit_l2", "accuracy")
  inputs = {}  # its samples are made up, not cut from data

  def __init__(self, config, data):
    objective.check(config.loss, LOSS_TERMS, config.job)
    self.config, self.data = config, data
    self.model = registry.find(config.model_name, "Model")(**config.model)

  @classmethod
  def prepare(cls, config):
    return cls(config, None)  # no data to prepare

  def init(self, rng):
    return self.model.init(rng, current=jnp.zeros((1, 8, 3)))

  def init_aux(self, rng):
    return None

  def predict_fns(self):
    return {"logits": lambda variables, batch: self.model.apply(variables, current=batch["current"])}

  def loss(self, params, model_state, aux, batch, rng):
    logits = self.model.apply({"params": params}, current=batch["current"])
    total, logged = objective.weighted_sum(LOSS_TERMS, self.config.loss, {"logits": logits}, batch)
    return total, (logged, model_state, aux)

  def train_batches(self, host_batch, seed, start_step):
    step = start_step
    while True:
      yield toy_batch(host_batch, seed * 100_000 + step)
      step += 1


class Evaluator:
  """Accuracy on `samples` fresh samples, and a report section saying so."""
  predict_fns = ("logits",)

  def __init__(self, context, *, samples: int = 256):
    self.logits, self.samples = context.predict_fns["logits"], samples

  def run(self, par, variables, shared) -> Evaluation:
    batch = toy_batch(self.samples, seed=-1 % 2 ** 32)
    logits = self.logits(par.get_state(variables), batch)
    accuracy = float(np.mean(np.asarray(logits).argmax(-1) == batch["label"]))
    return Evaluation({"toy_accuracy": accuracy}, functools.partial(_section, accuracy))


def _section(accuracy: float, page) -> None:
  page.add_text("Toy evaluation", f"accuracy {accuracy:.3f} on fresh samples")


