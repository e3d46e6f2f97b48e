"""The train state: what a checkpoint holds and the jitted step updates (donated)."""

from typing import Any

import flax
import jax
import optax


class TrainState(flax.struct.PyTreeNode):
  """`model_state` holds the non-parameter collections (e.g. BatchNorm `batch_stats`, a codebook's
  EMA); `aux` the nets a task's loss fits with an optimiser of its own, with that optimiser's state
  (e.g. Uni-Code's CLUB nets: {'params': ..., 'opt_state': ...}), or None."""
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  aux: Any = None

  @classmethod
  def create(cls, variables: dict, tx: optax.GradientTransformation, aux: Any = None) -> "TrainState":
    variables = dict(variables)
    params = variables.pop("params")
    return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params, model_state=variables,
               opt_state=tx.init(params), aux=aux)

  def variables(self) -> dict:
    return {"params": self.params, **self.model_state}
