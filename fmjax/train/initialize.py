"""`config.init_from`: start from weights made elsewhere (a converted official model or a run)."""

import json
import os

import jax
import ml_collections
import numpy as np

from fmjax.convert import export
from fmjax.train import checkpoint, optim
from fmjax.train.state import TrainState


def _check_same_tree(loaded: dict, expected: dict, source: str) -> None:
  flat_loaded = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]:
    name = jax.tree_util.keystr(path)
    if path not in flat_loaded:
      raise checkpoint.CheckpointError(f"{source}: has no variable {name}; it was made for a different model")
    if np.shape(flat_loaded[path]) != np.shape(leaf):
      raise checkpoint.CheckpointError(f"{source}: {name} has shape {np.shape(flat_loaded[path])},"
                                       f" this model needs {np.shape(leaf)}")
  if len(flat_loaded) != len(jax.tree.leaves(expected)):
    raise checkpoint.CheckpointError(f"{source}: holds variables this model does not have; different model")


def _saved_layout(state: TrainState, directory: str) -> TrainState:
  """`state` with the optimiser state the source run used (its config.json names the optimiser),
  so that a run trained with another optimiser still restores; only its weights are kept."""
  saved = checkpoint.read_config(directory)
  if saved is None:
    return state
  saved = json.loads(saved)
  tx, _ = optim.make(ml_collections.ConfigDict(saved["optimizer"]), saved["num_train_steps"])
  return state.replace(opt_state=tx.init(state.params))


def load_into(state: TrainState, source: str) -> TrainState:
  """`state` with params and model state (and, from a run, the aux nets) from `source`; the
  optimiser starts afresh.

  `source` is a directory written by the converter CLI (model.json + variables) or a run's
  workdir (its latest checkpoint).
  """
  aux = state.aux
  if export.is_export(source):
    _, variables = export.load(source)
    variables = dict(variables)
    params, model_state = variables.pop("params"), variables
  else:
    directory = os.path.join(source, "checkpoints")
    restored = checkpoint.restore_from(directory, jax.tree.map(np.asarray, _saved_layout(state, directory)))
    params, model_state, aux = restored.params, restored.model_state, restored.aux
    _check_same_tree(aux, state.aux, source)
  _check_same_tree(params, state.params, source)
  _check_same_tree(model_state, state.model_state, source)
  cast = lambda new, old: jax.numpy.asarray(new, old.dtype)
  return state.replace(params=jax.tree.map(cast, params, state.params),
                       model_state=jax.tree.map(cast, model_state, state.model_state),
                       aux=jax.tree.map(cast, aux, state.aux))
