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


class StateBeforeAux(flax.struct.PyTreeNode):
  """The layout of checkpoints written before `TrainState.aux` (fmjax before 2026-12-02): Uni-Code's
  CLUB nets and their optimiser state were then `model_state['club']`. Read, never written."""
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any

  @classmethod
  def layout_of(cls, state: TrainState) -> "StateBeforeAux":
    model_state = dict(state.model_state)
    if state.aux is not None:
      model_state[LEGACY_AUX_KEY] = state.aux
    return cls(step=state.step, params=state.params, model_state=model_state, opt_state=state.opt_state)

  def upgraded(self, like: TrainState) -> TrainState:
    """This old-layout state as a TrainState shaped like `like`."""
    model_state = dict(self.model_state)
    aux = model_state.pop(LEGACY_AUX_KEY, None) if like.aux is not None else None
    return like.replace(step=self.step, params=self.params, model_state=model_state, opt_state=self.opt_state,
                        aux=aux)


LEGACY_AUX_KEY = "club"
