"""The train state: what a checkpoint holds and the jitted step updates (donated)."""

from typing import Any

import flax
import jax
import optax


class TrainState(flax.struct.PyTreeNode):
  """`model_state` holds the non-parameter collections (e.g. BatchNorm `batch_stats`)."""
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any

  @classmethod
  def create(cls, variables: dict, tx: optax.GradientTransformation) -> "TrainState":
    variables = dict(variables)
    params = variables.pop("params")
    return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params, model_state=variables,
               opt_state=tx.init(params))

  def variables(self) -> dict:
    return {"params": self.params, **self.model_state}
