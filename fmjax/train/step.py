"""The trainer's public pieces (flax-examples style): `create_train_state` and `make_train_step`.

The loop, the multi-device tests and the benchmarks all build their state and step with these, so
what they test and time is what the loop runs.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fmjax.checkpoints.state import TrainState
from fmjax.runtime import parallel
from fmjax.runtime.parallel import AXIS, REPLICATED, SHARDED
from fmjax.train.task import Batch, Task


def create_train_state(task: Task, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  """The task's variables and aux state, and the optimiser's state, initialised in one compiled call
  from the inputs' shapes (no batch is read)."""
  def create(rng):
    return TrainState.create(task.init(rng), tx, task.init_aux(rng))
  return jax.jit(create)(rng)


def _mean_floats(tree: Any) -> Any:
  """pmean over AXIS of the floating-point leaves; integer leaves (counters) are equal everywhere already."""
  return jax.tree.map(lambda x: jax.lax.pmean(x, AXIS) if jnp.issubdtype(x.dtype, jnp.inexact) else x, tree)


def train_step(task: Task, tx: optax.GradientTransformation, lr: optax.Schedule, seed: int, state: TrainState,
               batch: Batch) -> tuple[TrainState, dict]:
  """One device's step: gradients, metrics and model state averaged over AXIS (the aux state is the
  task's to keep in step: it is equal on every device already). The task's loss gets a key that depends
  on the seed and step only, the same on every device.

  `finite` in the metrics says whether the loss and the gradient norm were finite. The step does not
  select between the old and the new state on it (a select over every leaf, optimiser moments
  included, costs a measurable share of a step: bench/RESULTS.md): the loop reads `finite` of every
  step before it saves a checkpoint or logs, and stops at the first non-finite one, so a state after
  such a step is never saved, evaluated or returned (`fmjax.train.loop`)."""
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)
  (_, (metrics, model_state, aux)), grads = grad_fn(state.params, state.model_state, state.aux, batch, rng)
  grads, metrics, model_state = _mean_floats((grads, metrics, model_state))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                      opt_state=opt_state, model_state=model_state, aux=aux)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  return new, {**metrics, "grad_norm": grad_norm, "lr": lr(state.step), "finite": finite}


def make_train_step(task: Task, tx: optax.GradientTransformation, lr: optax.Schedule, seed: int,
                    par: parallel.DataParallel):
  """`step(state, batch) -> (state, metrics)`, compiled data-parallel over `par`'s devices; `state`
  is donated. State and metrics are replicated, the batch is split along its first axis."""
  return par.wrap(functools.partial(train_step, task, tx, lr, seed), (REPLICATED, SHARDED), (REPLICATED, REPLICATED),
                  donate_argnums=(0,))
