"""The checkpoint layout of fmjax before `TrainState.aux` (before 2026-12-02), read and upgraded, never written.

Uni-Code's CLUB nets and their optimiser state were then `model_state['club']`. A resumed run, `init_from`
and a run reader restore such a step in its own layout and upgrade it to today's.
"""

from __future__ import annotations

from typing import Any

import flax
import jax

from fmjax.checkpoints.state import TrainState


class StateBeforeAux(flax.struct.PyTreeNode):
  """The old layout: the aux nets inside `model_state` under `LEGACY_AUX_KEY`."""
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


def is_old(saved_tree: Any, target: Any) -> bool:
  """Whether a step whose saved tree metadata is `saved_tree` was written in the old layout (no `aux`)."""
  return isinstance(target, TrainState) and isinstance(saved_tree, dict) and "aux" not in saved_tree


def split_aux(model_state: dict) -> tuple[dict, Any]:
  """(model state, aux nets) of an old-layout step's `model_state`."""
  model_state = dict(model_state or {})
  return model_state, model_state.pop(LEGACY_AUX_KEY, None)
