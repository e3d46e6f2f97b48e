"""Cross-CPC: contrastive predictive coding across modalities (Uni-Code).

An LSTM per modality summarises its semantic features up to step t; a linear head predicts the
other modality's semantic feature at t+k (weight 1) and, more weakly, its own (weight 0.1). InfoNCE
scores each prediction against the targets of every batch element at the same step: the matching
element is the positive, the others the negatives. Under data parallelism (`axis_name`) the
negatives come from the global batch, so any device count gives the same loss. `dtype` is the LSTMs'
and heads' matmul dtype (the LSTM carry, the InfoNCE logits and softmax stay float32).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fmjax.losses.collectives import gather_batch, global_rows
from fmjax.losses.contrastive import global_cross_entropy
from fmjax.models import layers
from fmjax.runtime import errors

MODALITIES = ("video", "current")


class CrossCPC(nn.Module):
  """Returns (weighted InfoNCE loss, {'cpc_acc_<m>2<o>': top-1 accuracy of the k=1 cross predictions})."""
  context_dim: int = 256
  steps_ahead: tuple[int, ...] = (1,)
  cross_weight: float = 1.0
  same_weight: float = 0.1
  axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_video: jax.Array, z_current: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    dtype = layers.compute_dtype(self.dtype)
    z = {"video": z_video.astype(jnp.float32), "current": z_current.astype(jnp.float32)}
    steps = z_video.shape[1]
    if max(self.steps_ahead) >= steps:
      raise errors.ConfigError(f"cpc steps_ahead={self.steps_ahead} needs sequences longer than {steps} steps")
    context = {m: nn.RNN(nn.OptimizedLSTMCell(self.context_dim, dtype=dtype), name=f"{m}_lstm")(z[m])
               for m in MODALITIES}
    loss, accuracy = 0.0, {}
    for m in MODALITIES:
      for o in MODALITIES:
        weight = self.same_weight if m == o else self.cross_weight
        if weight == 0:
          continue
        for k in self.steps_ahead:
          prediction = nn.Dense(z[o].shape[-1], dtype=dtype, name=f"{m}_to_{o}_k{k}")(context[m][:, :-k])
          nce, acc = info_nce(prediction, z[o][:, k:], self.axis_name)
          loss = loss + weight * nce / len(self.steps_ahead)
          if k == self.steps_ahead[0] and m != o:
            accuracy[f"cpc_acc_{m[0]}2{o[0]}"] = acc
    return loss, accuracy


def info_nce(prediction: jax.Array, target: jax.Array, axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
  """(mean InfoNCE, top-1 accuracy) of (B, T, D) predictions against (B, T, D) targets, per step t
  (in float32, whatever their dtype)."""
  prediction = prediction.astype(jnp.float32)
  targets = gather_batch(target.astype(jnp.float32), axis_name)
  logits = jnp.einsum("btd,ctd->tbc", prediction, targets)  # (T, local B, global B)
  own = global_rows(prediction.shape[0], axis_name)
  return global_cross_entropy(logits, axis_name), (logits.argmax(-1) == own).mean()
