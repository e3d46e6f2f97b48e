"""Helpers shared by the 1-vs-4-device tests: the loop's own train step under each wrapper and device count."""

import jax
import numpy as np

from fmjax.runtime import parallel
from fmjax.train import optim, step


def max_abs_diff(a, b) -> float:
  diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b))
  return max(diffs)


def steps_per_layout(task, config, batches: list[dict]) -> tuple:
  """(initial host state, {(mode, devices): (host state, last metrics)}) after `step.make_train_step`
  (what `loop.train_and_evaluate` runs) on `batches` in order, for both wrappers on 1 and on 4
  devices, all from the same initial state (`step.create_train_state`)."""
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  init = jax.tree.map(np.asarray, step.create_train_state(task, tx, jax.random.PRNGKey(config.seed)))
  after = {}
  for mode in parallel.MODES:
    for devices in (1, 4):
      par = parallel.DataParallel(mode, jax.devices()[:devices])
      train_step = step.make_train_step(task, tx, lr, config.seed, par)
      state = par.put_state(jax.tree.map(np.copy, init))  # a copy: put_state may alias it, donation deletes it
      for batch in par.batches(batches):
        state, metrics = train_step(state, batch)
      after[mode, devices] = (jax.tree.map(np.asarray, par.get_state(state)), par.to_host(metrics, parallel.REPLICATED))
  return init, after
