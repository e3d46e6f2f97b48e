"""`config.init_from`: start from weights made elsewhere (a run's workdir or a converted official model)."""

import jax
import numpy as np

from fmjax.checkpoints import runs
from fmjax.checkpoints.state import TrainState
from fmjax.runtime import errors


def _check_same_tree(loaded: dict, expected: dict, source: str) -> None:
  flat_loaded = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]:
    name = jax.tree_util.keystr(path)
    if path not in flat_loaded:
      raise errors.CheckpointError(f"{source}: has no variable {name}; it was made for a different model")
    if np.shape(flat_loaded[path]) != np.shape(leaf):
      raise errors.CheckpointError(f"{source}: {name} has shape {np.shape(flat_loaded[path])},"
                                   f" this model needs {np.shape(leaf)}")
  if len(flat_loaded) != len(jax.tree.leaves(expected)):
    raise errors.CheckpointError(f"{source}: holds variables this model does not have; different model")


def load_into(state: TrainState, source: str) -> TrainState:
  """`state` with params and model state (and, from a run, the aux nets) of `source` (`runs.read`); the
  optimiser starts afresh."""
  run = runs.read(source, like=state)
  variables = dict(run.variables)
  params, model_state = variables.pop("params"), variables
  aux = state.aux if run.aux is None else run.aux  # a converted model (or a job without them) has no aux nets
  _check_same_tree(params, state.params, source)
  _check_same_tree(model_state, state.model_state, source)
  _check_same_tree(aux, state.aux, source)
  cast = lambda new, old: jax.numpy.asarray(new, old.dtype)
  return state.replace(params=jax.tree.map(cast, params, state.params),
                       model_state=jax.tree.map(cast, model_state, state.model_state),
                       aux=jax.tree.map(cast, aux, state.aux))
