"""Helpers shared by the 1-vs-4-device tests: train steps under each wrapper and device count."""

import functools

import jax
import numpy as np

from fmjax.train import loop, optim, parallel
from fmjax.train.parallel import REPLICATED, SHARDED
from fmjax.train.state import TrainState


def max_abs_diff(a, b) -> float:
  diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b))
  return max(diffs)


def steps_per_layout(task, config, batches: list[dict]) -> tuple[TrainState, dict]:
  """(initial host state, {(mode, devices): (host state, last metrics)}) after `loop.train_step` on
  `batches` in order, for both wrappers on 1 and on 4 devices, all from the same initial state."""
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  example = jax.tree.map(lambda x: x[:1], batches[0])
  init = jax.jit(lambda rng: TrainState.create(task.init(rng, example), tx))(jax.random.PRNGKey(config.seed))
  init = jax.tree.map(np.asarray, init)
  after = {}
  for mode in parallel.MODES:
    for devices in (1, 4):
      par = parallel.DataParallel(mode, jax.devices()[:devices])
      step = par.wrap(functools.partial(loop.train_step, task, tx, lr, config.seed), (REPLICATED, SHARDED),
                      (REPLICATED, REPLICATED), donate_argnums=(0,))
      state = par.put_state(jax.tree.map(np.copy, init))  # a copy: put_state may alias it, donation deletes it
      for batch in par.batches(batches):
        state, metrics = step(state, batch)
      after[mode, devices] = (jax.tree.map(np.asarray, par.get_state(state)), par.to_host(metrics, REPLICATED))
  return init, after
